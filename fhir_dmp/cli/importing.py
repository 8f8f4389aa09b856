"""`fhir-dmp import`: NDJSON files into a serving store, through the API's validation and policy
(`services/importing.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fhir_dmp.cli.common import DATABASE_URL, progress
from fhir_dmp.config import Settings
from fhir_dmp.services.admin import Database, upgrade


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@DATABASE_URL
@click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 5000),
              help="resources per unit of work (one transaction each)")
@click.option("--base-url", envvar="FHIR_DMP_BASE_URL", default="http://localhost:8080/fhir", show_default=True,
              help="the public base URL, to recognise absolute references to this server")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="processes: more than 1 imports the Patients first, then the other resources in parallel, then "
                   "the Bundles (services/parallel_import.py)")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="also write the JSON report to this file")
def import_command(files: tuple[Path, ...], database_url: str, batch: int, base_url: str, workers: int,
                   report_path: Path | None) -> None:
    """Import FILES (NDJSON, one resource a line, .gz or not; a transaction Bundle line runs as a transaction)
    as the system caller, with the API's validation and policy, BATCH resources per transaction.

    Run it again after a crash: what is stored is skipped (same content, or a business identifier already held).
    Prints a JSON report (read, created, skipped, refused with each line's number and first issue); exit 1 when
    a line was refused."""
    from fhir_dmp.services import parallel_import
    from fhir_dmp.services.importing import Importer, count_lines

    settings = Settings.from_env(database_url=database_url)
    db = Database(settings.database_url)
    upgrade(db)
    paths = list(files)
    try:
        with progress(count_lines(paths), "importing") as bar:
            if workers > 1:
                report = parallel_import.run(db, settings, base_url, batch, paths, workers, bar.update)
            else:
                report = Importer(db, settings, base_url, batch).run(paths, bar.update)
        out = report.as_json()
        if out["created"]:  # a bulk load leaves the planner's statistics behind (autovacuum may be off)
            db.analyze()
            out["analyzed"] = True
    finally:
        db.dispose()
    text = json.dumps(out, ensure_ascii=False)
    if report_path is not None:
        report_path.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    if out["refused"]:
        sys.exit(1)
