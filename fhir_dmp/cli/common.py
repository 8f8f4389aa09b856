"""What the command line's commands share."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from fhir_dmp.config import Settings

DEV_SECRET = "fhir-dmp-development-secret-change-me"
# Exit statuses of `serve` and `doctor` besides 0 and click's 2 (usage), from BSD's sysexits.h.
EX_UNAVAILABLE = 69  # the port is taken, the database does not answer
EX_CONFIG = 78  # no token key, or a setting that cannot be read
DATABASE_URL = click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url,
                            show_default=True, help="SQLAlchemy URL (env FHIR_DMP_DATABASE_URL)")


@contextmanager
def progress(total: int, label: str) -> Iterator[click.progressbar]:  # type: ignore[type-arg]
    """A progress bar on stderr with the count, the rate and the ETA (only the label when not a terminal)."""
    started = time.monotonic()
    holder: list = []

    def rate(_item: object) -> str | None:
        done = holder[0].pos if holder else 0
        return f"{done / max(time.monotonic() - started, 1e-6):.1f}/s" if done else None

    with click.progressbar(length=max(total, 0), label=label, file=sys.stderr, show_eta=True,
                           show_pos=True, item_show_func=rate) as bar:
        holder.append(bar)
        yield bar
