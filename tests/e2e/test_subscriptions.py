"""End to end: the real `fhir-dmp serve` (2 processes, each with its delivery worker) and a `fhir-dmp worker`
racing them, notifying a real HTTP receiver started by the test.

Runs on SQLite, and on PostgreSQL (schema `e2e_subscriptions`) when FHIR_DMP_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fhir_dmp.policy.consents import authorisation
from fhir_dmp.services.identity import mint_token
from fhir_dmp.storage.db import Database
from tests.conftest import PG_URL, SECRET
from tests.fhirclient import DOCTOR, document, patient
from tests.receiver import Receiver, status_of
from tests.services.subscribing import masked, subscription
from tests.serving import checkout_env, free_port, serve_command, served, stop

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "e2e_subscriptions"
SETTINGS = {"FHIR_DMP_SUBSCRIPTION_ENDPOINTS": "http://127.0.0.1", "FHIR_DMP_SUBSCRIPTION_RETRY_BASE": "0.2",
            "FHIR_DMP_SUBSCRIPTION_MAX_FAILURES": "20"}


@dataclass
class Server:
    base: str
    database_url: str
    env: dict[str, str]

    def call(self, method: str, path: str, body: dict | None = None, claims: dict | None = None) -> requests.Response:
        token = mint_token(claims or {"actor": "system", "sub": "e2e"}, secret=SECRET)
        return requests.request(method, f"{self.base}/{path}", json=body, timeout=20,
                                headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json",
                                         "Content-Type": "application/fhir+json"})

    def created(self, path: str, body: dict, claims: dict | None = None) -> str:
        response = self.call("POST", path, body, claims)
        assert response.status_code == 201, response.text
        return response.json()["id"]


def _postgres_url() -> str:
    assert PG_URL
    bootstrap = Database(PG_URL)
    try:
        with bootstrap.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    finally:
        bootstrap.dispose()
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={SCHEMA}"}).render_as_string(hide_password=False)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("FHIR_DMP_TEST_POSTGRES_URL is not set")
    tmp = tmp_path_factory.mktemp(f"subscriptions-{request.param}")
    database_url = f"sqlite:///{tmp / 'e2e.db'}" if request.param == "sqlite" else _postgres_url()
    port = free_port()
    env = checkout_env(SECRET, **SETTINGS)
    log = tmp / "server.log"
    base = f"http://127.0.0.1:{port}/fhir"
    with served(serve_command(port, database_url, "--workers", "2"), cwd=ROOT, env=env, log=log,
                ready_url=f"{base}/metadata", seconds=30):
        yield Server(base, database_url, env)
    assert "Traceback" not in log.read_text(), log.read_text()


def _dmp(server: Server) -> str:
    ins = "2" + str(time.time_ns())[-12:]
    pid = server.created("Patient", patient(ins))
    server.created("Consent", authorisation(pid, DOCTOR["sub"]))
    return pid


def test_a_subscriber_is_notified_within_a_second_of_a_visible_document_only(server: Server):
    pid = _dmp(server)
    with Receiver() as receiver:
        sid = server.created("Subscription", subscription(receiver.url, f"DocumentReference?patient=Patient/{pid}"),
                             DOCTOR)
        receiver.wait_for(lambda: receiver.of_type("handshake"))
        deadline = time.monotonic() + 10
        while server.call("GET", f"Subscription/{sid}", claims=DOCTOR).json()["status"] != "active":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.created("DocumentReference", document(pid, **masked()))  # hidden from them: never notified
        started = time.monotonic()
        doc = server.created("DocumentReference", document(pid))
        receiver.wait_for(lambda: receiver.events())
        assert time.monotonic() - started < 1.5
        assert receiver.events() == [(1, f"{server.base}/DocumentReference/{doc}")]


def test_workers_racing_with_a_receiver_down_then_up_deliver_each_number_once_in_order(server: Server):
    pid = _dmp(server)
    receiver = Receiver().up()
    sid = server.created("Subscription", subscription(receiver.url, f"DocumentReference?patient=Patient/{pid}"),
                         DOCTOR)
    receiver.wait_for(lambda: receiver.of_type("handshake"))
    worker = subprocess.Popen([sys.executable, "-m", "fhir_dmp.cli", "worker", "--poll", "0.05", "--database-url",
                               server.database_url], cwd=ROOT, env=server.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        docs = [server.created("DocumentReference", document(pid)) for _ in range(4)]
        receiver.wait_for(lambda: len(receiver.events()) >= 4)
        receiver.down()
        started = time.monotonic()
        docs += [server.created("DocumentReference", document(pid)) for _ in range(6)]
        assert time.monotonic() - started < 10  # a receiver that is down slows no write
        time.sleep(1)
        receiver.up()
        receiver.wait_for(lambda: len(receiver.events()) >= 10, 30)
        time.sleep(1)  # anything delivered twice would arrive now
    finally:
        receiver.down()
        stop(worker)
    numbers = [n for n, _ in receiver.events()]
    assert numbers == list(range(1, 11))
    assert [f.rsplit("/", 1)[1] for _, f in receiver.events()] == docs
    final = server.call("GET", f"Subscription/{sid}/$status", claims=DOCTOR).json()
    assert status_of(final)["events-since-subscription-start"] == "10"
