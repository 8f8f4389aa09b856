"""`fhir-dmp reindex` rebuilds index rows that an older release wrote differently (or not at all)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import delete, func, select

from fhir_dmp.cli import main
from fhir_dmp.services.reindex import reindex
from fhir_dmp.storage.tables import INDEX_TABLES
from tests.fhirclient import document, json_of, patient


def _index_rows(database) -> int:  # type: ignore[no-untyped-def]
    """Index rows of everything but the traces (each request adds one)."""
    with database.engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t).where(t.c.resource_type != "AuditEvent"))
                   .scalar_one() for t in INDEX_TABLES.values())


def _drop_index(database) -> None:  # type: ignore[no-untyped-def]
    with database.engine.begin() as conn:
        for table in INDEX_TABLES.values():
            conn.execute(delete(table))


def test_reindex_restores_what_searches_need(client, database):
    pid = json_of(client.post("Patient", patient()))["id"]
    for _ in range(3):
        assert client.post("DocumentReference", document(pid)).status_code == 201
    deleted = json_of(client.post("DocumentReference", document(pid)))["id"]
    assert client.delete(f"DocumentReference/{deleted}").status_code == 204
    before = _index_rows(database)
    _drop_index(database)  # as if written by a release that indexed nothing
    assert json_of(client.get("DocumentReference?type=http://loinc.org|11488-4"))["total"] == 0

    traces = json_of(client.get("AuditEvent?_summary=count"))["total"] + 1  # + the trace of that count
    counts = list(reindex(database, "http://localhost/fhir", batch=2))
    # the Patient, the three current documents and the traces; the deleted one stays out
    assert counts[-1] == 4 + traces
    assert counts == sorted(counts) and len(counts) == (4 + traces + 1) // 2
    assert _index_rows(database) == before
    assert json_of(client.get("DocumentReference?type=http://loinc.org|11488-4"))["total"] == 3
    assert json_of(client.get("DocumentReference?patient.identifier=1800175123456"))["total"] == 3
    assert json_of(client.get(f"Patient/{pid}/_history"))["total"] == 1  # no new version was written


def test_reindex_one_type_and_command_line(client, database):
    pid = json_of(client.post("Patient", patient()))["id"]
    assert client.post("DocumentReference", document(pid)).status_code == 201
    _drop_index(database)
    result = CliRunner().invoke(main, ["reindex", "--database-url", database.url, "--resource-type", "Patient"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"reindexed": 1}
    assert json_of(client.get("Patient?identifier=1800175123456"))["total"] == 1
    assert json_of(client.get("DocumentReference?type=11488-4"))["total"] == 0  # other types untouched
