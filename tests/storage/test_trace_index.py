"""Traces indexed when a search needs them (storage/trace_index.py, services/trace_index.py).

A trace is stored with a pending row and no index rows; a search that can read traces' index rows first indexes the
pending traces its caller's scope can reach, once, in its own transaction; the answers are those of a store that
indexed every trace at once (tests/policy/test_traces.py checks who sees which traces)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from fhir_dmp import fhirjson
from fhir_dmp.policy.access import scope_many
from fhir_dmp.policy.caller import Caller
from fhir_dmp.search.extract import index_rows
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.records import SYSTEM_SCOPE
from fhir_dmp.storage.tables import INDEX_TABLES, index_pending, resource, resource_version
from fhir_dmp.storage.trace_index import reach
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR, FhirTestClient, json_of
from tests.parallel import in_parallel
from tests.policy.test_traces import GP, PATIENT_A, World, _app, build_world, concurrent_db  # noqa: F401 (fixture)

TRACE = "AuditEvent"


# -- reach: the part of `index_pending` a scope can see --------------------------------------------------------
def test_reach_keeps_the_dmp_and_owner_tests_and_widens_the_rest() -> None:
    scope = c.AnyOf((
        c.AllOf((c.PatientIs(""), c.AnyOf((c.TypeIs(("Organization",)), c.OwnerIs("me"))))),
        c.AllOf((c.TypeIs((TRACE,)), c.OwnerIs("me"))),
        c.AllOf((c.PatientIs("p1"), c.AnyOf((c.TypeIs(("DocumentReference",)),
                                             c.AllOf((c.TypeIs((TRACE,)), c.LabelsClear(4)))))))))
    assert reach(scope) == c.AnyOf((c.AllOf((c.PatientIs(""), c.OwnerIs("me"))), c.OwnerIs("me"), c.PatientIs("p1")))


@pytest.mark.parametrize(("scope", "expected"), [
    (SYSTEM_SCOPE, SYSTEM_SCOPE),  # everything
    (c.TypeIs(("Patient",)), c.AnyOf(())),  # no trace reachable: nothing to index
    (c.Not(c.OwnerIs("me")), SYSTEM_SCOPE),  # a negation widens to everything, never narrows
    (c.AllOf((c.PatientIs("p1"), c.Token("type", None, "x"))), c.PatientIs("p1")),
])
def test_reach_never_narrows_what_a_scope_may_see(scope: c.Criterion, expected: c.Criterion) -> None:
    assert reach(scope) == expected


def test_reach_of_real_policy_scopes_is_bounded_by_dmp_or_owner() -> None:
    """The scopes the policy gives a professional with no DMP named: only their own traces are reached."""
    caller = Caller(actor="professional", sub="810000000001", profession="10")
    reached = reach(scope_many(caller, [], None, None))  # type: ignore[arg-type]
    assert all(isinstance(p, c.OwnerIs | c.AllOf) for p in reached.parts)  # type: ignore[union-attr]


# -- the store ------------------------------------------------------------------------------------------------
def _pending(db: Database, key: str | None = None) -> int:
    query = select(func.count()).select_from(index_pending)
    if key is not None:
        query = query.where(index_pending.c.patient_key == key)
    with db.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _trace_index_rows(db: Database) -> Counter:
    """(resource pk, table, param) -> rows, for every trace's index rows."""
    counts: Counter = Counter()
    with db.engine.connect() as conn:
        for kind, table in INDEX_TABLES.items():
            for pk, param in conn.execute(select(table.c.resource_pk, table.c.param)
                                          .where(table.c.resource_type == TRACE)):
                counts[(pk, kind, param)] += 1
    return counts


def _traces(db: Database) -> set[int]:
    with db.engine.connect() as conn:
        return set(conn.execute(select(resource.c.pk).where(resource.c.resource_type == TRACE)).scalars())


@pytest.fixture
def world(client: FhirTestClient) -> World:
    return build_world(client)


def test_a_trace_waits_for_a_search_and_is_indexed_once(client, database, world) -> None:
    assert client.as_(**DOCTOR).get(f"DocumentReference/{world.doc}").status_code == 200
    assert _pending(database, world.pid) > 0
    indexed_before = {pk for pk, _, _ in _trace_index_rows(database)}
    assert _traces(database) - indexed_before, "the read's trace has no index rows yet"

    patient = client.as_(**PATIENT_A)
    found = json_of(patient.get(f"AuditEvent?patient={world.pid}&subtype=read&action=R&_count=1000"))
    assert found["entry"], "the médecin's read is found by a search on the trace's own index"
    assert _pending(database, world.pid) == 1  # the search's own trace
    rows = _trace_index_rows(database)
    again = json_of(patient.get(f"AuditEvent?patient={world.pid}&_count=1000"))
    assert {e["resource"]["id"] for e in found["entry"]} <= {e["resource"]["id"] for e in again["entry"]}
    after = _trace_index_rows(database)
    assert all(after[k] == n for k, n in rows.items()), "a second search indexes nothing twice"


def test_a_search_indexes_only_what_its_scope_reaches(client, database, world) -> None:
    client.as_(**DOCTOR).get(f"DocumentReference/{world.doc}")
    client.as_(**DOCTOR).get(f"Patient/{world.qid}")  # B's DMP: a refusal, traced in B's chain
    pending_b = _pending(database, world.qid)
    assert pending_b > 0
    json_of(client.as_(**PATIENT_A).get(f"AuditEvent?patient={world.pid}"))
    assert _pending(database, world.pid) == 1  # the search's own trace
    assert _pending(database, world.qid) == pending_b  # A's patient reaches nothing of B's DMP


def test_a_search_not_reaching_traces_indexes_none(client, database, world) -> None:
    client.as_(**DOCTOR).get(f"DocumentReference/{world.doc}")
    before = _pending(database)
    json_of(client.as_(**DOCTOR).get(f"DocumentReference?patient={world.pid}"))
    assert _pending(database) == before + 1  # only the search's own trace added


def test_a_revinclude_of_traces_finds_the_read_just_made(client, database, world) -> None:
    client.as_(**GP).get(f"DocumentReference/{world.doc}")
    bundle = json_of(client.as_(**GP).get(
        f"DocumentReference?_id={world.doc}&patient={world.pid}&_revinclude=AuditEvent:entity"))
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert any(r["resourceType"] == TRACE and r["action"] == "R" for r in included)


def _expected_rows(db: Database, pks: set[int]) -> Counter:
    """What indexing each of these traces once gives, (resource pk, table, param) -> rows."""
    counts: Counter = Counter()
    with db.engine.connect() as conn:
        for pk, content in conn.execute(select(resource.c.pk, resource_version.c.content)
                                        .join(resource_version, resource_version.c.pk == resource.c.version_pk)
                                        .where(resource.c.pk.in_(sorted(pks)))):
            for kind, rows in index_rows(TRACE, fhirjson.loads(content), "http://localhost/fhir").items():
                for row in rows:
                    counts[(pk, kind, row["param"])] += 1
    return counts


def test_concurrent_searches_index_each_trace_once(concurrent_db) -> None:  # noqa: F811
    """8 médecins traitants' clients read a document and search the DMP's traces at once, three times each: every
    search sees the reads made before it, and every trace ends with its index rows exactly once."""
    db = concurrent_db
    app = _app(db)
    world = build_world(FhirTestClient(app.test_client(), SECRET))

    def work(t: int) -> list[bool]:
        gp = FhirTestClient(app.test_client(), SECRET).as_(**GP)
        saw_own_read = []
        for _ in range(3):
            assert gp.get(f"DocumentReference/{world.doc}").status_code == 200
            bundle = json_of(gp.get(f"AuditEvent?patient={world.pid}&subtype=read&action=R&_count=1000"))
            saw_own_read.append(bool(bundle.get("entry")))
        return saw_own_read

    assert all(all(seen) for seen in in_parallel(work))
    json_of(FhirTestClient(app.test_client(), SECRET).as_(**GP).get(f"AuditEvent?patient={world.pid}"))
    assert _pending(db, world.pid) == 1  # the last search's own trace
    indexed = _traces(db) - _pending_pks(db)
    actual = _trace_index_rows(db)
    assert {pk for pk, _, _ in actual} <= indexed
    assert actual == _expected_rows(db, indexed)


def _pending_pks(db: Database) -> set[int]:
    with db.engine.connect() as conn:
        return set(conn.execute(select(index_pending.c.resource_pk)).scalars())


def test_audit_index_drains_the_backlog_in_batches(client, database, world) -> None:
    from click.testing import CliRunner

    from fhir_dmp.cli import main

    doctor = client.as_(**DOCTOR)
    for _ in range(5):
        assert doctor.get(f"DocumentReference/{world.doc}").status_code == 200
    pending = _pending(database)
    assert pending >= 5
    result = CliRunner().invoke(main, ["audit", "index", "--database-url", database.url, "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert json_of_line(result.stdout) == {"indexed": pending}
    assert _pending(database) == 0
    indexed = _traces(database)
    assert _trace_index_rows(database) == _expected_rows(database, indexed)
    again = CliRunner().invoke(main, ["audit", "index", "--database-url", database.url])
    assert again.exit_code == 0 and json_of_line(again.stdout) == {"indexed": 0}


def json_of_line(output: str) -> dict:
    import json

    return json.loads(output.strip().splitlines()[-1])
