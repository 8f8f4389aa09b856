"""Building blocks of the storage unit tests: a migrated SQLite file, and rows stored the way the write
pipeline stores them (the resource's own index rows from `search.extract`, plus any the test adds)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fhir_dmp.search.extract import index_rows
from fhir_dmp.storage.criteria import NO_FACTS, AccessFacts
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from fhir_dmp.storage.records import NewResource


def sqlite_database(directory: Path) -> Database:
    """A real, migrated database: the SQL under test runs as the server runs it (no mock)."""
    db = Database(f"sqlite:///{directory / 'unit.db'}")
    upgrade(db)
    return db


def new(resource: dict[str, Any], *, patient_key: str = "", last_updated: datetime = datetime(2024, 1, 1),
        facts: AccessFacts = NO_FACTS, extra: dict[str, list[dict[str, Any]]] | None = None) -> NewResource:
    """A resource to insert with its extracted index rows (and `extra` rows for kinds no served type has)."""
    rtype = resource["resourceType"]
    rows = {kind: list(items) for kind, items in index_rows(rtype, resource).items()}
    for kind, items in (extra or {}).items():
        rows.setdefault(kind, []).extend(items)
    return NewResource(rtype, resource["id"], patient_key, json.dumps(resource), last_updated, rows, facts=facts)
