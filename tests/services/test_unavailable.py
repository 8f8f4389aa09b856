"""The database away: 503 with Retry-After and an OperationOutcome, never 500; a dead pooled connection retried
once on a fresh one; a connection lost during COMMIT never retried (it could store the write twice).

tests/e2e/test_faults.py restarts a real PostgreSQL under load; these are the same faults, in process.
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, document, json_of, patient, written


def _lose_the_connection_after_the_next_commit(database: Database, monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The next COMMIT reaches PostgreSQL and its answer does not: the connection closes as if the server left.
    Only that one: later commits (the refusal's trace) go through normally. Returns the record of the loss
    (non-empty once it happened)."""
    dialect = database.engine.dialect
    real_commit = dialect.do_commit
    lost: list[int] = []

    def commit_then_lose_the_connection(dbapi_connection):  # type: ignore[no-untyped-def]
        real_commit(dbapi_connection)
        if not lost:
            lost.append(1)
            dbapi_connection.driver_connection.close()  # the psycopg connection, as if the server left
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(dialect, "do_commit", commit_then_lose_the_connection)
    return lost


def _postgres_only(database: Database) -> None:
    if database.is_sqlite:
        pytest.skip("PostgreSQL's connections")


@pytest.mark.parametrize("accept", ["application/fhir+json", "application/fhir+xml"])
def test_unreachable_database_is_503_with_retry_after(settings, accept):
    """Every connection refused at pool checkout: the request and its refusal trace both fail to connect."""
    away = Database("postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    client = FhirTestClient(create_app(settings, database=away).test_client(), SECRET)
    for response in (client.post("Patient", patient(), headers={"Accept": accept}),
                     client.get("Patient?identifier=1800175123456", headers={"Accept": accept}),
                     client.get("Patient/abc", headers={"Accept": accept})):
        assert response.status_code == 503, response.data
        assert response.headers["Retry-After"] == "2"
        assert response.content_type.startswith(accept)
        assert b"OperationOutcome" in response.data and b"transient" in response.data
    away.dispose()


def test_dead_pooled_connection_is_retried_on_a_fresh_one(client, database):
    _postgres_only(database)
    assert client.post("Patient", patient()).status_code == 201  # a connection now waits in the pool
    before = written(database)
    with database.engine.connect() as conn:  # that one (the pool hands out its idle connection)
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = Database(database.url)  # a connection of another pool, to kill that one
    with killer.engine.begin() as other:
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    killer.dispose()
    response = client.post("Patient", patient("2800175123457"))
    assert response.status_code == 201, response.data
    assert written(database) == before + 1


def test_connection_lost_during_commit_is_not_retried(client, database, monkeypatch):
    """The COMMIT reached PostgreSQL, its answer did not: 503, and the document is stored once, not twice."""
    _postgres_only(database)
    pid = json_of(client.post("Patient", patient()))["id"]
    _lose_the_connection_after_the_next_commit(database, monkeypatch)
    doc = document(pid)
    response = client.post("DocumentReference", doc)
    assert response.status_code == 503, response.data
    assert response.headers["Retry-After"] == "2"
    assert b"may or may not have been stored" in response.data
    found = json_of(client.get(f"DocumentReference?patient=Patient/{pid}"))
    assert [e["resource"]["masterIdentifier"]["value"] for e in found.get("entry", [])] == [
        doc["masterIdentifier"]["value"]]


def test_read_whose_commit_is_lost_is_retried(client, database, monkeypatch):
    _postgres_only(database)
    pid = json_of(client.post("Patient", patient()))["id"]
    lost = _lose_the_connection_after_the_next_commit(database, monkeypatch)
    assert client.get(f"Patient/{pid}").status_code == 200
    assert lost


def test_concurrent_writers_winning_every_attempt_is_503_with_retry_after(client, monkeypatch):
    """A unit of work aborted by the database for concurrent writers is run again from scratch; when every attempt
    loses, the answer is a transient 503 the client retries, and nothing of the attempts is kept."""
    from fhir_dmp.services import pipeline, routes
    from fhir_dmp.storage.db import TransientConflict

    pid = json_of(client.post("Patient", patient()))["id"]
    attempts = []

    def always_aborted(u, req):  # type: ignore[no-untyped-def]
        attempts.append(req)
        raise TransientConflict("deadlock detected")
    monkeypatch.setitem(routes.INTERACTIONS, "update", always_aborted)
    before = written(client)
    response = client.put(f"Patient/{pid}", {**patient(), "id": pid})
    assert response.status_code == 503, response.data
    assert response.headers["Retry-After"] == str(pipeline.RETRY_AFTER)
    assert json_of(response)["issue"][0]["code"] == "transient"
    assert len(attempts) == pipeline.RETRIES
    assert written(client) == before
