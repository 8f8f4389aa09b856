"""The store as the command line and the HTTP app start it: open by URL, migrate, say which schema it has.
(Layers above the services never import storage; this is their one door to it.)"""

from __future__ import annotations

from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import current_revision, upgrade
from fhir_dmp.storage.statements import counting, watch

__all__ = ["Database", "counting", "current_revision", "open_database", "upgrade", "watch"]


def open_database(url: str) -> Database:
    """A database at `url`, its schema brought up to date (safe from every process at start)."""
    db = Database(url)
    upgrade(db)
    return db
