"""End to end: the real `fhir-dmp serve` (gunicorn, 2 workers) driven by real FHIR client libraries.

Runs on SQLite, and on PostgreSQL (schema `e2e_schema`) when FHIR_DMP_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import AuthorizationError, ForbiddenError, OperationOutcome, ResourceNotFound
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fhir_dmp.services.identity import mint_token
from fhir_dmp.storage.db import Database
from tests.conftest import PG_URL, SECRET
from tests.fhirclient import document as dmp_document
from tests.serving import checkout_env, free_port, serve_command, served

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
E2E_SCHEMA = "e2e_schema"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"
STARTUP_SECONDS = 30


@dataclass
class Server:
    base: str
    backend: str
    log: Path

    def token(self, **claims: str) -> str:
        return mint_token({"actor": "system", "sub": "e2e-suite", **claims}, secret=SECRET)

    def fhirpy(self, **claims: str) -> SyncFHIRClient:
        return SyncFHIRClient(self.base, authorization=f"Bearer {self.token(**claims)}",
                              requests_config={"timeout": 20})

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}", "Accept": "application/fhir+json", **extra}



def _postgres_e2e_url() -> str:
    """The test database pinned to a schema of its own, recreated empty."""
    assert PG_URL
    bootstrap = Database(PG_URL)
    try:
        with bootstrap.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {E2E_SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {E2E_SCHEMA}"))
    finally:
        bootstrap.dispose()
    url = make_url(PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={E2E_SCHEMA}"}).render_as_string(hide_password=False)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("FHIR_DMP_TEST_POSTGRES_URL is not set")
    tmp = tmp_path_factory.mktemp(f"e2e-{request.param}")
    database_url = f"sqlite:///{tmp / 'e2e.db'}" if request.param == "sqlite" else _postgres_e2e_url()
    port = free_port()
    env = checkout_env(SECRET)
    log = tmp / "server.log"
    base = f"http://127.0.0.1:{port}/fhir"
    command = serve_command(port, database_url, "--workers", "2")
    with served(command, cwd=ROOT, env=env, log=log, ready_url=f"{base}/metadata", seconds=STARTUP_SECONDS):
        yield Server(base, request.param, log)
    assert "Traceback" not in log.read_text(), log.read_text()


def _ins() -> str:
    """A fresh 13-digit INS-like value, so tests sharing a server never collide."""
    return "2" + str(uuid.uuid4().int)[:12]


def _patient(ins: str, family: str = "MARTIN") -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": ins}],
            "name": [{"family": family, "given": ["Claire"]}], "gender": "female", "birthDate": "1980-01-17"}


# -- fhirpy -----------------------------------------------------------------------------------


def test_metadata_without_token(server):
    response = requests.get(f"{server.base}/metadata", timeout=10)
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"


def test_fhirpy_create_read_update_history_search_delete(server):
    client = server.fhirpy()
    ins = _ins()
    patient = client.resource("Patient", **_patient(ins))
    patient.save()  # POST, Content-Type: application/json
    pid = patient.id
    assert pid and patient.meta.versionId == "1"

    read = client.reference("Patient", pid).to_resource()
    assert read.identifier[0].value == ins and read.gender == "female"

    read["gender"] = "other"
    read.save()  # PUT Patient/<id>
    assert read.meta.versionId == "2"
    assert client.get("Patient", pid).gender == "other"

    history = client.execute(f"Patient/{pid}/_history", method="get")
    assert history.type == "history" and history.total == 2
    assert [e.resource.meta.versionId for e in history.entry] == ["2", "1"]

    found = client.resources("Patient").search(identifier=f"{INS_SYSTEM}|{ins}").fetch()
    assert [p.id for p in found] == [pid]
    assert client.resources("Patient").search(identifier=ins).get().id == pid
    # fhirpy counts with _count=0&_totalMethod=count; the unknown _totalMethod is ignored (lenient)
    assert client.resources("Patient").search(identifier=f"{INS_SYSTEM}|{ins}").count() == 1

    read.delete()
    with pytest.raises(ResourceNotFound):  # 410 Gone
        client.get("Patient", pid)
    assert client.resources("Patient").search(identifier=ins).fetch() == []
    history = client.execute(f"Patient/{pid}/_history", method="get")
    assert history.total == 3 and history.entry[0].request.method == "DELETE"


@pytest.mark.parametrize("patient_first", [True, False], ids=["patient-first", "document-first"])
def test_fhirpy_transaction_with_urn_uuid_references(server, patient_first):
    """Patient + DocumentReference linked by urn:uuid; R4: the order of the entries does not matter."""
    client = server.fhirpy()
    ins = _ins()
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    patient_entry = {"fullUrl": patient_urn, "resource": _patient(ins),
                     "request": {"method": "POST", "url": "Patient",
                                 "ifNoneExist": f"identifier={INS_SYSTEM}|{ins}"}}
    document_entry = {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": dmp_document("placeholder", subject={"reference": patient_urn}),
        "request": {"method": "POST", "url": "DocumentReference"}}
    entries = [patient_entry, document_entry] if patient_first else [document_entry, patient_entry]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = client.execute("", method="post", data=bundle)  # POST [base]/
    assert response.resourceType == "Bundle" and response.type == "transaction-response"
    assert [e.response.status for e in response.entry] == ["201 Created", "201 Created"]
    by_type = {e.resource.resourceType: e for e in response.entry}
    assert [e.resource.resourceType for e in response.entry] == [e["resource"]["resourceType"] for e in entries]
    pid = by_type["Patient"].resource.id
    doc_id = by_type["DocumentReference"].resource.id
    assert by_type["Patient"].response.location.startswith(f"{server.base}/Patient/{pid}/_history/1")
    document = client.get("DocumentReference", doc_id)
    assert document.subject.reference == f"Patient/{pid}"
    docs = client.resources("DocumentReference").search(patient=pid).fetch()
    assert [d.id for d in docs] == [doc_id]

    # the same Patient again: ifNoneExist finds it, no duplicate
    again = client.execute("", method="post", data={**bundle, "entry": [patient_entry]})
    assert again.entry[0].response.status == "200 OK" and again.entry[0].resource.id == pid
    assert client.resources("Patient").search(identifier=ins).count() == 1


def test_fhirpy_failed_transaction_writes_nothing(server):
    client = server.fhirpy()
    ins = _ins()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _patient(ins), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": "robot"}, "request": {"method": "POST", "url": "Patient"}},
    ]}
    with pytest.raises(OperationOutcome):
        client.execute("", method="post", data=bundle)
    assert client.resources("Patient").search(identifier=ins).count() == 0


def test_fhirpy_conditional_update_and_delete(server):
    client = server.fhirpy()
    ins = _ins()
    created, _ = client.resources("Patient").search(identifier=f"{INS_SYSTEM}|{ins}").update(
        client.resource("Patient", **_patient(ins)))  # PUT Patient?identifier=... with no match: creates
    updated, _ = client.resources("Patient").search(identifier=f"{INS_SYSTEM}|{ins}").update(
        client.resource("Patient", **_patient(ins, family="DURAND")))
    assert updated.id == created.id and updated.meta.versionId == "2" and updated.name[0].family == "DURAND"
    client.resources("Patient").search(identifier=f"{INS_SYSTEM}|{ins}").delete()
    assert client.resources("Patient").search(identifier=ins).count() == 0


def test_fhirpy_paging_follows_next_links(server):
    client = server.fhirpy()
    family = f"PAGE{uuid.uuid4().hex[:8].upper()}"
    ids = set()
    for _ in range(5):
        p = client.resource("Patient", **_patient(_ins(), family=family))
        p.save()
        ids.add(p.id)
    seen = {p.id for p in client.resources("Patient").search(_id=",".join(sorted(ids))).limit(2)}
    assert seen == ids


def test_fhirpy_get_or_create_never_duplicates(server):
    """fhirpy does a conditional create as `POST /Patient?identifier=...`: the server honours it as a condition."""
    client = server.fhirpy()
    ins = _ins()
    search = client.resources("Patient").search(identifier=f"{INS_SYSTEM}|{ins}")
    first, created = search.get_or_create(client.resource("Patient", **_patient(ins)))
    assert created
    second, created_again = search.get_or_create(client.resource("Patient", **_patient(ins)))
    assert not created_again and second.id == first.id
    assert client.resources("Patient").search(identifier=ins).count() == 1


def test_fhirpy_patch_is_a_merge_patch(server):
    """fhirpy's patch() sends a partial resource as application/json: a JSON merge patch, through the rules of an
    update (a change the DMP profile refuses is a 422, nothing written)."""
    client = server.fhirpy()
    p = client.resource("Patient", **_patient(_ins()))
    p.save()
    patched = client.patch("Patient", p.id, gender="male")
    assert patched["gender"] == "male" and patched["meta"]["versionId"] == "2"
    p.patch(gender="other")  # the resource's own patch(): its changed fields only
    assert p.gender == "other" and client.get("Patient", p.id).meta.versionId == "3"
    with pytest.raises(OperationOutcome):
        client.patch("Patient", p.id, birthDate=None)  # the DMP profile requires it
    assert client.get("Patient", p.id).meta.versionId == "3"


def test_json_patch_through_fhirpy_transport(server):
    client = server.fhirpy()
    p = client.resource("Patient", **_patient(_ins()))
    p.save()
    patched = client._do_request("patch", f"Patient/{p.id}",
                                 data=[{"op": "replace", "path": "/gender", "value": "male"}],  # type: ignore[arg-type]
                                 extra_headers={"Content-Type": "application/json-patch+json"})
    assert patched["gender"] == "male" and patched["meta"]["versionId"] == "2"


def test_fhirpy_auth_errors(server):
    anonymous = SyncFHIRClient(server.base, requests_config={"timeout": 10})
    with pytest.raises(AuthorizationError):
        anonymous.resources("Patient").fetch()
    with pytest.raises(ForbiddenError):
        server.fhirpy(actor="insurer").resources("Patient").fetch()
    expired = mint_token({"actor": "system", "sub": "e2e"}, secret=SECRET, ttl_seconds=-120)
    with pytest.raises(AuthorizationError):
        SyncFHIRClient(server.base, authorization=f"Bearer {expired}").resources("Patient").fetch()
    response = requests.get(f"{server.base}/Patient", timeout=10)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer ")


# -- concurrency across the 2 gunicorn workers ------------------------------------------------


def test_concurrent_conditional_creates_make_one_patient(server):
    ins = _ins()
    headers = server.headers(**{"Content-Type": "application/fhir+json",
                                "If-None-Exist": f"identifier={INS_SYSTEM}|{ins}"})

    def create(_: int) -> int:
        return requests.post(f"{server.base}/Patient", json=_patient(ins), headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(8)))
    assert sorted(statuses) == [200] * 7 + [201], statuses
    found = requests.get(f"{server.base}/Patient", params={"identifier": ins}, headers=server.headers(), timeout=10)
    assert found.json()["total"] == 1


def test_concurrent_updates_lose_nothing(server):
    client = server.fhirpy()
    p = client.resource("Patient", **_patient(_ins()))
    p.save()

    def add_name(i: int) -> int:
        ops = [{"op": "add", "path": "/name/-", "value": {"family": f"N{i}"}}]
        return requests.patch(f"{server.base}/Patient/{p.id}", json=ops, timeout=30,
                              headers=server.headers(**{"Content-Type": "application/json-patch+json"})).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(add_name, range(6)))
    ok = statuses.count(200)
    assert all(s in (200, 409) for s in statuses), statuses
    final = client.get("Patient", p.id)
    assert int(final.meta.versionId) == 1 + ok
    assert len(final.name) == 1 + ok


# -- fhirclient (SMART on FHIR) ---------------------------------------------------------------


def test_fhirclient_reads_and_searches(server):
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRServer

    fhir = FHIRServer(None, base_uri=server.base)
    fhir.session.headers["Authorization"] = f"Bearer {server.token()}"
    ins = _ins()
    created = Patient(_patient(ins)).create(fhir)
    assert created["resourceType"] == "Patient"
    pid = created["id"]

    patient = Patient.read(pid, fhir)
    assert patient.id == pid and patient.identifier[0].value == ins and patient.birthDate.isostring == "1980-01-17"
    found = list(Patient.where(struct={"identifier": f"{INS_SYSTEM}|{ins}"}).perform_resources_iter(fhir))
    assert [p.id for p in found] == [pid]
    capability = fhir.capabilityStatement  # parsed by fhirclient's strict R4 models
    assert capability.fhirVersion == "4.0.1"
