"""What the command line's commands share."""

from __future__ import annotations

import click

from fhir_dmp.config import Settings

DEV_SECRET = "fhir-dmp-development-secret-change-me"
# Exit statuses of `serve` and `doctor` besides 0 and click's 2 (usage), from BSD's sysexits.h.
EX_UNAVAILABLE = 69  # the port is taken, the database does not answer
EX_CONFIG = 78  # no token key, or a setting that cannot be read
DATABASE_URL = click.option("--database-url", envvar="FHIR_DMP_DATABASE_URL", default=Settings.database_url,
                            show_default=True, help="SQLAlchemy URL (env FHIR_DMP_DATABASE_URL)")
