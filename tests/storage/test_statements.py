"""The SQL statement and transaction counter (storage/statements.py) and the X-Debug-SQL debug header."""

from __future__ import annotations

import re
import threading

from sqlalchemy import text

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.statements import counting, note_statement, watch
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR, FhirTestClient, document, json_of, patient


def two_selects(db: Database) -> None:
    with db.transaction() as conn:
        conn.execute(text("SELECT 1"))
        conn.execute(text("SELECT 2"))


def test_counts_the_statements_and_transactions_of_the_block(database):
    watch(database.engine)
    watch(database.engine)  # a second call installs nothing more
    with counting() as counts:
        two_selects(database)
        with database.transaction(write=True) as conn:  # SQLite's BEGIN IMMEDIATE is a transaction, not a statement
            conn.execute(text("SELECT 3"))
        with database.snapshot() as conn:
            conn.execute(text("SELECT 4"))
        note_statement()  # what bulk_insert's COPY adds
    assert (counts.statements, counts.transactions) == (5, 3)
    assert counts.header() == "statements=5; transactions=3"


def test_nothing_is_counted_outside_a_block(database):
    watch(database.engine)
    two_selects(database)
    note_statement()
    with counting() as counts:
        pass
    two_selects(database)
    assert (counts.statements, counts.transactions) == (0, 0)


def test_concurrent_threads_never_mix_their_counts(database):
    watch(database.engine)
    results: dict[int, tuple[int, int]] = {}

    def work(n: int) -> None:
        with counting() as counts:
            for _ in range(n):
                two_selects(database)
        results[n] = (counts.statements, counts.transactions)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3, 4)]
    with counting() as outer:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {n: (2 * n, n) for n in (1, 2, 3, 4)}
    assert (outer.statements, outer.transactions) == (0, 0)


def debug_client(database: Database, debug_sql: bool = True) -> FhirTestClient:
    settings = Settings(database_url=database.url, jwt_secret=SECRET, debug_sql=debug_sql)
    return FhirTestClient(create_app(settings, database=database).test_client(), SECRET, DOCTOR)


def counted(response) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    match = re.fullmatch(r"statements=(\d+); transactions=(\d+)", response.headers["X-Debug-SQL"])
    assert match, response.headers["X-Debug-SQL"]
    return int(match[1]), int(match[2])


def test_the_debug_header_counts_each_request(database):
    client = debug_client(database)
    assert client.get("metadata", auth=False).headers["X-Debug-SQL"] == "statements=0; transactions=0"
    created = client.post("Patient", patient())  # the médecin who creates the DMP is authorised
    assert created.status_code == 201, created.data
    pid = json_of(created)["id"]
    doc = client.post("DocumentReference", document(pid))
    assert doc.status_code == 201, doc.data
    create_statements, create_transactions = counted(doc)
    assert create_statements > 0 and create_transactions > 0
    read = client.get(f"DocumentReference/{json_of(doc)['id']}")
    assert read.status_code == 200
    statements, transactions = counted(read)
    assert statements > 0 and transactions > 0
    refused = client.get("DocumentReference/unknown")  # an error response is counted too
    assert refused.status_code == 404 and counted(refused)[0] > 0


def test_no_debug_header_unless_asked(database):
    assert "X-Debug-SQL" not in debug_client(database, debug_sql=False).get("metadata", auth=False).headers


def test_the_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("FHIR_DMP_DEBUG_SQL", "1")
    assert Settings.from_env().debug_sql is True
    monkeypatch.setenv("FHIR_DMP_DEBUG_SQL", "0")
    assert Settings.from_env().debug_sql is False
