"""Concurrent writers through the real service and database: no lost update, one winner per If-Match,
one resource per conditional create.

PostgreSQL (READ COMMITTED, optimistic versions + advisory locks) runs when FHIR_DMP_TEST_POSTGRES_URL
is set and is skipped otherwise; SQLite runs on a file database, where `BEGIN IMMEDIATE` serialises the
writers: these tests assert correctness, never speed.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from tests.conftest import SECRET, _empty
from tests.fhirclient import FhirTestClient, document, json_of, patient
from tests.parallel import THREADS, TIMEOUT, in_parallel

UPDATES_PER_THREAD = 10
INS = "urn:oid:1.2.250.1.213.1.4.10"


@pytest.fixture(params=["postgres", "sqlite"])
def concurrent_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_database")  # skips when FHIR_DMP_TEST_POSTGRES_URL is unset
        _empty(db)
        yield db
        return
    db = Database(f"sqlite:///{tmp_path / 'concurrency.db'}")
    upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def app(concurrent_db: Database):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=concurrent_db.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024)
    return create_app(settings, database=concurrent_db)


def new_client(app) -> FhirTestClient:  # type: ignore[no-untyped-def]
    """Each thread gets its own test client (and so its own pooled connection per request)."""
    return FhirTestClient(app.test_client(), SECRET)


def history_of(client: FhirTestClient, path: str) -> list[dict]:
    response = client.get(f"{path}/_history?_count=1000")
    assert response.status_code == 200, response.data
    return [e["resource"] for e in json_of(response).get("entry", []) if "resource" in e]


def create(client: FhirTestClient, resource: dict) -> dict:
    response = client.post(resource["resourceType"], resource)
    assert response.status_code == 201, response.data
    return json_of(response)


# -- (a) no lost update ---------------------------------------------------------------------------------
def test_concurrent_read_modify_write_updates_lose_nothing(app):
    pid = create(new_client(app), patient())["id"]

    def writer(t: int) -> list[tuple[str, int]]:
        client = new_client(app)
        outcomes = []
        for k in range(UPDATES_PER_THREAD):
            current = json_of(client.get(f"Patient/{pid}"))
            current.pop("meta")
            current["name"] = [{"family": "MARTIN", "given": ["Claire"], "text": f"t{t}-u{k}"}]
            response = client.put(f"Patient/{pid}", current)
            outcomes.append((f"t{t}-u{k}", response.status_code))
        return outcomes

    results = [o for per_thread in in_parallel(writer) for o in per_thread]
    assert Counter(status for _, status in results) == Counter({200: THREADS * UPDATES_PER_THREAD})

    client = new_client(app)
    final = client.get(f"Patient/{pid}")
    assert final.headers["ETag"] == f'W/"{1 + THREADS * UPDATES_PER_THREAD}"'
    versions = history_of(client, f"Patient/{pid}")
    assert sorted(int(v["meta"]["versionId"]) for v in versions) == list(
        range(1, 2 + THREADS * UPDATES_PER_THREAD))
    written = [v["name"][0].get("text") for v in versions if v["meta"]["versionId"] != "1"]
    assert sorted(written) == sorted(marker for marker, _ in results)  # every update is one version
    # each thread's own updates are in its order in the history (a version never goes back in time)
    by_version = sorted(versions, key=lambda v: int(v["meta"]["versionId"]))
    for t in range(THREADS):
        mine = [v["name"][0]["text"] for v in by_version if v["name"][0].get("text", "").startswith(f"t{t}-")]
        assert mine == [f"t{t}-u{k}" for k in range(UPDATES_PER_THREAD)]


def test_concurrent_patches_lose_nothing(app):
    """JSON Patch `add` to an array is a server-side read-modify-write: every element must survive."""
    pid = create(new_client(app), patient())["id"]

    def writer(t: int) -> list[int]:
        client = new_client(app)
        ops = [[{"op": "add", "path": "/name/0/given/-", "value": f"t{t}u{k}"}] for k in range(UPDATES_PER_THREAD)]
        return [client.patch(f"Patient/{pid}", op).status_code for op in ops]

    statuses = [s for per_thread in in_parallel(writer) for s in per_thread]
    assert Counter(statuses) == Counter({200: THREADS * UPDATES_PER_THREAD})
    final = json_of(new_client(app).get(f"Patient/{pid}"))
    assert final["meta"]["versionId"] == str(1 + THREADS * UPDATES_PER_THREAD)
    given = final["name"][0]["given"]
    assert given[0] == "Claire"
    assert sorted(given[1:]) == sorted(f"t{t}u{k}" for t in range(THREADS) for k in range(UPDATES_PER_THREAD))


# -- (b) If-Match: one winner --------------------------------------------------------------------------
def test_concurrent_if_match_updates_from_the_same_version_have_exactly_one_winner(app):
    created = create(new_client(app), patient())
    pid = created["id"]
    body = {k: v for k, v in created.items() if k != "meta"}

    def writer(t: int) -> tuple[int, dict]:
        changed = {**body, "name": [{"family": "MARTIN", "given": ["Claire"], "text": f"writer {t}"}]}
        response = new_client(app).put(f"Patient/{pid}", changed, headers={"If-Match": 'W/"1"'})
        return response.status_code, json_of(response)

    results = in_parallel(writer)
    assert Counter(status for status, _ in results) == Counter({200: 1, 412: THREADS - 1})
    winner = next(b for status, b in results if status == 200)
    for status, outcome in results:
        if status == 412:
            assert outcome["resourceType"] == "OperationOutcome"
    client = new_client(app)
    final = json_of(client.get(f"Patient/{pid}"))
    assert final["meta"]["versionId"] == "2"
    assert final["name"][0]["text"] == winner["name"][0]["text"]
    assert len(history_of(client, f"Patient/{pid}")) == 2


def test_concurrent_if_match_deletes_and_updates_have_exactly_one_winner(app):
    created = create(new_client(app), patient())
    pid = created["id"]
    body = {k: v for k, v in created.items() if k != "meta"}

    def writer(t: int) -> tuple[str, int]:
        client = new_client(app)
        if t % 2:
            return "DELETE", client.delete(f"Patient/{pid}", headers={"If-Match": 'W/"1"'}).status_code
        changed = body | {"gender": "male"}
        return "PUT", client.put(f"Patient/{pid}", changed, headers={"If-Match": 'W/"1"'}).status_code

    results = in_parallel(writer)
    puts = [status for method, status in results if method == "PUT"]
    deletes = [status for method, status in results if method == "DELETE"]
    # exactly one write happened, whoever won
    versions = json_of(new_client(app).get(f"Patient/{pid}/_history"))
    assert versions["total"] == 2
    if versions["entry"][0]["request"]["method"] == "PUT":
        assert sorted(puts) == [200] + [412] * (len(puts) - 1)
        assert set(deletes) == {412}
        assert new_client(app).get(f"Patient/{pid}").headers["ETag"] == 'W/"2"'
    else:
        assert set(puts) == {412}
        # RFC 9110 13.1.1: a DELETE that finds its change already applied may answer 2xx instead of 412
        assert deletes.count(204) >= 1 and set(deletes) <= {204, 412}
        assert new_client(app).get(f"Patient/{pid}").status_code == 410


# -- (c) conditional create: one resource ----------------------------------------------------------------
def test_concurrent_conditional_creates_make_exactly_one_resource(app):
    value = str(uuid.uuid4().int)[:13]

    def creator(_: int) -> tuple[int, str]:
        response = new_client(app).post("Patient", patient(value),
                                        headers={"If-None-Exist": f"identifier={INS}|{value}"})
        return response.status_code, json_of(response)["id"]

    results = in_parallel(creator)
    assert Counter(status for status, _ in results) == Counter({201: 1, 200: THREADS - 1})
    ids = {rid for _, rid in results}
    assert len(ids) == 1
    found = json_of(new_client(app).get(f"Patient?identifier={INS}|{value}"))
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["id"] == ids.pop()
    assert json_of(new_client(app).get("Patient"))["total"] == 1


def test_concurrent_conditional_creates_of_different_resources_all_succeed(app):
    def creator(t: int) -> tuple[int, str]:
        value = f"18001751234{t:02d}"
        response = new_client(app).post("Patient", patient(value),
                                        headers={"If-None-Exist": f"identifier={INS}|{value}"})
        return response.status_code, json_of(response)["id"]

    results = in_parallel(creator)
    assert [status for status, _ in results] == [201] * THREADS
    assert len({rid for _, rid in results}) == THREADS
    assert json_of(new_client(app).get("Patient"))["total"] == THREADS


# -- (d) transactions with ifNoneExist ----------------------------------------------------------------------
def test_concurrent_transactions_with_if_none_exist_share_one_resource(app):
    value = str(uuid.uuid4().int)[:13]

    def submitter(t: int) -> tuple[int, dict]:
        p_url = f"urn:uuid:{uuid.uuid4()}"
        doc = document("placeholder", subject={"reference": p_url}, description=f"from {t}")
        body = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": p_url, "resource": patient(value),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={INS}|{value}"}},
            {"resource": doc, "request": {"method": "POST", "url": "DocumentReference"}},
        ]}
        response = new_client(app).post("/fhir", body)
        return response.status_code, json_of(response)

    results = in_parallel(submitter)
    assert [status for status, _ in results] == [200] * THREADS, [b for _, b in results]
    patient_statuses = Counter(b["entry"][0]["response"]["status"][:3] for _, b in results)
    assert patient_statuses == Counter({"201": 1, "200": THREADS - 1})
    pids = {b["entry"][0]["resource"]["id"] for _, b in results}
    assert len(pids) == 1
    pid = pids.pop()
    assert {b["entry"][1]["resource"]["subject"]["reference"] for _, b in results} == {f"Patient/{pid}"}

    client = new_client(app)
    assert json_of(client.get(f"Patient?identifier={INS}|{value}"))["total"] == 1
    docs = json_of(client.get(f"DocumentReference?patient={pid}&_count=100"))
    assert docs["total"] == THREADS
    assert sorted(e["resource"]["description"] for e in docs["entry"]) == sorted(
        f"from {t}" for t in range(THREADS))


def test_concurrent_transactions_updating_one_resource_lose_nothing(app):
    """Whole transactions racing on the same Patient: each one is applied once, none is lost."""
    created = create(new_client(app), patient())
    pid = created["id"]
    body = {k: v for k, v in created.items() if k != "meta"}
    rounds = 3

    def submitter(t: int) -> list[int]:
        client = new_client(app)
        statuses = []
        for k in range(rounds):
            changed = body | {"name": [{"family": "MARTIN", "given": ["Claire"], "text": f"t{t}-r{k}"}]}
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": changed, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
                {"resource": document(pid), "request": {"method": "POST", "url": "DocumentReference"}},
            ]}
            statuses.append(client.post("/fhir", bundle).status_code)
        return statuses

    statuses = [s for per_thread in in_parallel(submitter) for s in per_thread]
    assert statuses == [200] * (THREADS * rounds)
    client = new_client(app)
    versions = history_of(client, f"Patient/{pid}")
    assert len(versions) == 1 + THREADS * rounds
    assert sorted(v["name"][0].get("text", "") for v in versions if v["meta"]["versionId"] != "1") == sorted(
        f"t{t}-r{k}" for t in range(THREADS) for k in range(rounds))
    assert json_of(client.get(f"DocumentReference?patient={pid}"))["total"] == THREADS * rounds


def test_concurrent_transactions_updating_two_resources_in_opposite_orders_all_succeed(app):
    """Writers of A-then-B racing writers of B-then-A must not fail (no deadlock reaches the client)."""
    client = new_client(app)
    a, b = create(client, patient("1800175123401")), create(client, patient("1800175123402"))
    bodies = {r["id"]: {k: v for k, v in r.items() if k != "meta"} for r in (a, b)}
    rounds = 3

    def submitter(t: int) -> list[int]:
        client = new_client(app)
        order = [a["id"], b["id"]] if t % 2 else [b["id"], a["id"]]
        statuses = []
        for k in range(rounds):
            name = [{"family": "MARTIN", "given": ["Claire"], "text": f"t{t}-r{k}"}]
            entries = [{"resource": bodies[rid] | {"name": name},
                        "request": {"method": "PUT", "url": f"Patient/{rid}"}} for rid in order]
            statuses.append(client.post("/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                  "entry": entries}).status_code)
        return statuses

    statuses = [s for per_thread in in_parallel(submitter) for s in per_thread]
    assert statuses == [200] * (THREADS * rounds)
    for rid in (a["id"], b["id"]):
        versions = history_of(new_client(app), f"Patient/{rid}")
        assert len(versions) == 1 + THREADS * rounds


def test_concurrent_transactions_with_conditional_updates_in_opposite_orders_all_succeed(app):
    """Each conditional update locks its condition: opposite entry orders must not deadlock (or fail)."""
    client = new_client(app)
    values = ["1800175123411", "1800175123412"]
    ids = [create(client, patient(v))["id"] for v in values]
    rounds = 2
    workers = 4

    def submitter(t: int) -> list[int]:
        client = new_client(app)
        order = values if t % 2 else values[::-1]
        statuses = []
        for k in range(rounds):
            entries = [{"resource": patient(v, name=[{"family": "MARTIN", "given": ["Claire"], "text": f"t{t}-r{k}"}]),
                        "request": {"method": "PUT", "url": f"Patient?identifier={INS}|{v}"}} for v in order]
            statuses.append(client.post("/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                  "entry": entries}).status_code)
        return statuses

    statuses = [s for per_thread in in_parallel(submitter, workers) for s in per_thread]
    assert statuses == [200] * (workers * rounds)
    for rid in ids:
        assert len(history_of(new_client(app), f"Patient/{rid}")) == 1 + workers * rounds


def test_concurrent_transactions_with_if_none_exist_in_opposite_orders_all_succeed(app):
    values = ["1800175123421", "1800175123422"]

    def submitter(t: int) -> dict:
        order = values if t % 2 else values[::-1]
        entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": patient(v),
                    "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={INS}|{v}"}}
                   for v in order]
        response = new_client(app).post("/fhir", {"resourceType": "Bundle", "type": "transaction",
                                                  "entry": entries})
        assert response.status_code == 200, response.data
        return {e["resource"]["identifier"][0]["value"]: e["resource"]["id"] for e in json_of(response)["entry"]}

    results = in_parallel(submitter)
    for v in values:
        assert len({r[v] for r in results}) == 1
    assert json_of(new_client(app).get("Patient"))["total"] == 2


def test_a_deadlock_is_reported_as_a_transient_conflict_and_rolled_back(postgres_database):
    """The storage contract the retry loops rely on (PostgreSQL; SQLite writers cannot deadlock): the
    deadlock victim surfaces as TransientConflict with nothing of its unit of work kept, the other commits."""
    concurrent_db = postgres_database
    _empty(concurrent_db)
    from sqlalchemy import insert, select

    from fhir_dmp.storage.db import TransientConflict
    from fhir_dmp.storage.tables import resource_version

    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def worker(k: int) -> str:
        first, second = ("A", "B") if k == 0 else ("B", "A")
        try:
            with concurrent_db.transaction(write=True) as conn:
                conn.execute(insert(resource_version), {
                    "resource_type": "Patient", "id": f"deadlock-{k}", "version_id": 1, "patient_key": "",
                    "last_updated": datetime(2026, 1, 1), "method": "POST", "deleted": False, "content": "{}"})
                concurrent_db.lock(conn, first)
                barrier.wait()
                concurrent_db.lock(conn, second)
            return "committed"
        except TransientConflict:
            return "victim"

    outcomes = in_parallel(worker, 2)
    assert sorted(outcomes) == ["committed", "victim"]
    with concurrent_db.transaction() as conn:
        kept = conn.execute(select(resource_version.c.id).where(resource_version.c.id.like("deadlock-%"))).all()
    assert [row.id for row in kept] == [f"deadlock-{outcomes.index('committed')}"]
