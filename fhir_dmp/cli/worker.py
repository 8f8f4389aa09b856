"""`fhir-dmp worker`: deliver subscription notifications (services/delivery.py) without serving the API, and the
hook by which `serve` runs a delivery worker in each of its processes."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import click

from fhir_dmp.cli.common import DATABASE_URL
from fhir_dmp.config import Settings
from fhir_dmp.services import delivery, wakeup
from fhir_dmp.services.admin import open_database
from fhir_dmp.services.runtime import Runtime


@click.command("worker")
@DATABASE_URL
@click.option("--poll", default=0.5, show_default=True, type=float, help="seconds between looks for work when idle")
def worker_command(database_url: str, poll: float) -> None:
    """Deliver subscription notifications until SIGTERM/SIGINT. Several workers (and serving processes) may run
    at once on PostgreSQL: each subscription is delivered by one of them at a time, in order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env(database_url=database_url)
    db = open_database(settings.database_url)
    stop = threading.Event()

    def stopping(_signum: int, _frame: object) -> None:
        stop.set()
        wakeup.wake()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    click.echo("fhir-dmp worker delivering subscription notifications", err=True)
    delivery.Worker(Runtime.load(db, settings), poll=poll).run(stop)
    db.dispose()


def with_delivery(app_factory: Callable[[], Any]) -> Callable[[], Any]:
    """`app_factory` that also starts a delivery worker thread beside the app it makes (each serving process),
    unless FHIR_DMP_SUBSCRIPTION_DELIVERY is off."""
    def factory() -> Any:
        app = app_factory()
        state = app.extensions["fhir_dmp"]
        if state["settings"].subscription_delivery:
            delivery.start(state["pipeline"].rt)
        return app
    return factory
