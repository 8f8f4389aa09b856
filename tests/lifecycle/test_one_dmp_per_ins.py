"""Creating a DMP (dmp-reference.md 4): one DMP per INS, whatever the client sends (plain create, conditional
create, a transaction, an update of the INS), race-safe on both stores."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from tests.conftest import SECRET, _empty
from tests.fhirclient import FhirTestClient, json_of, patient, written
from tests.lifecycle.helpers import new_ins, outcome
from tests.parallel import THREADS, in_parallel

NIR_TEST, NIA = "urn:oid:1.2.250.1.213.1.4.10", "urn:oid:1.2.250.1.213.1.4.9"


def _patients(client: FhirTestClient, ins: str) -> list[dict]:
    found = json_of(client.get(f"Patient?identifier={ins}&_count=100"))
    return [e["resource"] for e in found.get("entry", []) if e["search"]["mode"] == "match"]


def test_a_plain_create_of_an_ins_that_has_a_dmp_is_a_409_naming_it(client):
    ins = new_ins()
    first = client.post("Patient", patient(ins))
    assert first.status_code == 201, first.data
    pid = json_of(first)["id"]
    before = written(client)
    issue = outcome(client.post("Patient", patient(ins, gender="male")), 409)["issue"][0]
    assert issue["code"] == "duplicate" and f"Patient/{pid}" in issue["diagnostics"]
    # the same INS value under another INS system is the same person's
    other_system = patient(ins)
    other_system["identifier"] = [{"system": NIA, "value": ins}]
    outcome(client.post("Patient", other_system), 409)
    # a professional and the patient get the same answer (the existence check is open to them anyway)
    pro = client.as_(actor="professional", sub="810000000301", profession="10")
    outcome(pro.post("Patient", patient(ins)), 409)
    outcome(client.as_(actor="patient", sub=ins, patient=ins).post("Patient", patient(ins)), 409)
    assert written(client) == before
    # the conditional create answers the existing DMP
    again = client.post("Patient", patient(ins), headers={"If-None-Exist": f"identifier={NIR_TEST}|{ins}"})
    assert again.status_code == 200 and json_of(again)["id"] == pid
    assert [p["id"] for p in _patients(client, ins)] == [pid]


def test_a_conditional_create_on_another_element_does_not_open_a_second_dmp(client):
    ins = new_ins()
    assert client.post("Patient", patient(ins)).status_code == 201
    outcome(client.post("Patient", patient(ins), headers={"If-None-Exist": "family=NOBODY"}), 409)


def test_a_transaction_opening_one_ins_twice_is_refused_whole(client):
    ins = new_ins()
    before = written(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{k}", "resource": patient(ins),
         "request": {"method": "POST", "url": "Patient"}} for k in (1, 2)]}
    outcome(client.post("", bundle), 409)
    assert written(client) == before and _patients(client, ins) == []
    # and a transaction's create of an INS stored already
    assert client.post("Patient", patient(ins)).status_code == 201
    outcome(client.post("", {**bundle, "entry": bundle["entry"][:1]}), 409)
    assert len(_patients(client, ins)) == 1


def test_an_update_may_not_take_another_dmps_ins(client):
    ins, other = new_ins(), new_ins()
    assert client.post("Patient", patient(ins)).status_code == 201
    second = json_of(client.post("Patient", patient(other)))
    before = written(client)
    outcome(client.put(f"Patient/{second['id']}", {**second, "identifier": [{"system": NIR_TEST, "value": ins}]}),
            409)
    assert written(client) == before
    # its own INS unchanged, or corrected to one no DMP has, is fine
    assert client.put(f"Patient/{second['id']}", {**second, "gender": "male"}).status_code == 200
    fixed = {**second, "identifier": [{"system": NIR_TEST, "value": new_ins()}]}
    assert client.put(f"Patient/{second['id']}", fixed).status_code == 200


# -- races ------------------------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def racing_app(request: pytest.FixtureRequest, tmp_path) -> Iterator:  # type: ignore[no-untyped-def]
    """A file database (SQLite) or the PostgreSQL test schema, served to several threads at once."""
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_database")  # skipped when FHIR_DMP_TEST_POSTGRES_URL is unset
        _empty(db)
    else:
        db = Database(f"sqlite:///{tmp_path / 'race.db'}")
        upgrade(db)
    settings = Settings(database_url=db.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024)
    yield create_app(settings, database=db)
    if request.param == "sqlite":
        db.dispose()


def test_concurrent_creates_of_one_ins_open_one_dmp(racing_app):
    """Plain creates, conditional creates written two ways and transactions, released together: one 201, the
    conditional ones that came later 200 with that DMP, the plain ones 409, and one Patient stored."""
    ins = new_ins()
    conditions = [f"identifier={NIR_TEST}|{ins}", f"identifier={ins}"]

    def create(k: int) -> tuple[int, str | None]:
        client = FhirTestClient(racing_app.test_client(), SECRET)
        if k % 4 == 0:
            response = client.post("Patient", patient(ins))
        elif k % 4 == 3:
            response = client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": patient(ins), "request": {"method": "POST", "url": "Patient",
                                                       "ifNoneExist": conditions[0]}}]})
            body = json_of(response)
            if response.status_code == 200:
                entry = body["entry"][0]
                return int(entry["response"]["status"].split()[0]), entry["resource"]["id"]
            return response.status_code, None
        else:
            response = client.post("Patient", patient(ins), headers={"If-None-Exist": conditions[k % 2]})
        body = json_of(response)
        return response.status_code, body.get("id") if body["resourceType"] == "Patient" else None

    results = in_parallel(create, THREADS)
    statuses = Counter(status for status, _ in results)
    assert statuses[201] == 1, results
    assert set(statuses) <= {200, 201, 409}, results
    ids = {pid for _, pid in results if pid}
    assert len(ids) == 1, results
    client = FhirTestClient(racing_app.test_client(), SECRET)
    assert [p["id"] for p in _patients(client, ins)] == list(ids)


def test_concurrent_plain_creates_of_one_ins_open_one_dmp(racing_app):
    ins = new_ins()

    def create(_: int) -> int:
        return FhirTestClient(racing_app.test_client(), SECRET).post("Patient", patient(ins)).status_code

    assert Counter(in_parallel(create, THREADS)) == Counter({201: 1, 409: THREADS - 1})
    assert len(_patients(FhirTestClient(racing_app.test_client(), SECRET), ins)) == 1
