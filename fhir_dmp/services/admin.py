"""The store as the command line and the HTTP app start it: open by URL, migrate, say which schema it has,
whether it answers. (Layers above the services never import storage; this is their one door to it.)"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from fhir_dmp.storage import resources
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import alembic_config, current_revision, upgrade
from fhir_dmp.storage.statements import counting, watch

__all__ = ["Database", "count_current", "counting", "current_revision", "head_revision", "open_database", "ping",
           "upgrade", "watch"]


def open_database(url: str) -> Database:
    """A database at `url`, its schema brought up to date (safe from every process at start)."""
    db = Database(url)
    upgrade(db)
    return db


def head_revision() -> str | None:
    """The newest schema revision this release ships (what `upgrade` brings a database to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def count_current(db: Database, resource_type: str | None = None) -> int:
    """How many current resources there are (of `resource_type`): what a reindex walks."""
    with db.transaction() as conn:
        return resources.count_current(conn, resource_type)


_pings: dict[int, Future] = {}
_pings_lock = threading.Lock()


def ping(db: Database, timeout: float = 3.0) -> str | None:
    """None when the database answers `SELECT 1` within `timeout` seconds, else why not (one sentence).

    The query runs in a daemon thread, so a database that never answers costs the caller `timeout` and not a
    thread stuck forever; while one ping of `db` is unanswered, later calls wait for it instead of adding more."""
    with _pings_lock:
        future = _pings.get(id(db))
        if future is None or future.done():
            future = Future()
            _pings[id(db)] = future
            threading.Thread(target=_select_one, args=(db, future), name="fhir-dmp-ping", daemon=True).start()
    try:
        future.result(timeout=timeout)
    except FutureTimeout:
        return f"the database did not answer within {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"{type(exc).__name__}: {reason[0] if reason else 'no detail'}"
    return None


def _select_one(db: Database, future: Future) -> None:
    started = time.monotonic()
    try:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
        future.set_exception(exc)
    else:
        future.set_result(time.monotonic() - started)
