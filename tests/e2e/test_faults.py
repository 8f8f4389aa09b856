"""Faults: PostgreSQL stops under a write load (fast, then immediate shutdown) and comes back.

Its own PostgreSQL cluster (initdb in a temporary directory, a free port; run as the `postgres` OS user when we
are root) and the real `fhir-dmp serve` (gunicorn, 2 workers) against it. Writers create Patients and
DocumentReferences from a few threads, each noting what the server acknowledged (201 + id). While PostgreSQL is
away every answer is 2xx or 503 with Retry-After and an OperationOutcome (never 500, never HTML); afterwards
every acknowledged write is there, none is there twice, and the server serves again without a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from fhir_dmp.services.identity import mint_token
from tests.conftest import SECRET
from tests.fhirclient import document
from tests.serving import checkout_env, free_port, serve_command, served

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("FHIR_DMP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"
WRITERS = 4
STEP_SECONDS = 60  # any one subprocess step (initdb, pg_ctl, the server's start)



class Cluster:
    """A throwaway PostgreSQL cluster; initdb refuses root, so as root it runs as the `postgres` user."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres" if _has_user("postgres") else "nobody"
            shutil.chown(directory, self.user)

    def _run(self, *args: str) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, timeout=STEP_SECONDS, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")

    def start(self) -> None:
        # fsync off: the faults here kill processes, not the machine; what a backend wrote survives them
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "postgres.log"), "-w",
                  "-t", "30", "-o", options, "start")

    def stop(self, mode: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-t", "30", "-m", mode, "stop")

    def running(self) -> bool:
        return (self.dir / "data" / "postmaster.pid").exists()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN}")
    directory = Path(tempfile.mkdtemp(prefix="fhir-dmp-faults-"))
    pg = Cluster(directory)
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        if pg.running():
            with contextlib.suppress(subprocess.SubprocessError):
                pg.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Server:
    base: str
    log: Path
    token: str = field(default_factory=lambda: mint_token({"actor": "system", "sub": "faults"}, secret=SECRET))

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json",
                "Content-Type": "application/fhir+json", **extra}


@pytest.fixture(scope="module")
def server(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("faults")
    port = free_port()
    env = checkout_env(SECRET)
    log = tmp / "server.log"
    base = f"http://127.0.0.1:{port}/fhir"
    command = serve_command(port, cluster.url, "--workers", "2", "--threads", "4")
    with served(command, cwd=ROOT, env=env, log=log, ready_url=f"{base}/metadata", seconds=STEP_SECONDS):
        yield Server(base, log)


@dataclass
class Answer:
    kind: str  # Patient | DocumentReference
    key: str  # the INS, or the document's masterIdentifier
    status: int  # 0: no HTTP answer at all
    when: float
    id: str | None = None
    problem: str | None = None  # what is wrong with this answer, if anything


def _judge(response: requests.Response) -> str | None:
    """None when the answer is one a client can rely on: 2xx, or 503 + Retry-After + an OperationOutcome."""
    if 200 <= response.status_code < 300:
        return None
    if response.status_code != 503:
        return f"{response.status_code}: {response.text[:300]}"
    if not response.headers.get("Retry-After"):
        return "503 without Retry-After"
    if "fhir+json" not in response.headers.get("Content-Type", ""):
        return f"503 as {response.headers.get('Content-Type')}: {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return f"503 whose body is not JSON: {response.text[:200]}"
    if body.get("resourceType") != "OperationOutcome":
        return f"503 whose body is a {body.get('resourceType')}"
    return None


def _patient(ins: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": INS_SYSTEM, "value": ins}],
            "name": [{"family": "PANNE", "given": ["Claire"]}], "gender": "female", "birthDate": "1980-01-17"}


def _ins() -> str:
    return "2" + str(uuid.uuid4().int)[:12]


def _create(session: requests.Session, server: Server, kind: str, body: dict, key: str) -> Answer:
    now = time.monotonic()
    try:
        response = session.post(f"{server.base}/{kind}", json=body, headers=server.headers(), timeout=20)
    except requests.RequestException as exc:  # the server itself must never drop a request
        return Answer(kind, key, 0, now, problem=f"no answer: {exc}")
    answer = Answer(kind, key, response.status_code, now, problem=_judge(response))
    if response.status_code == 201:
        answer.id = response.json().get("id")
        if not answer.id or f"/{kind}/{answer.id}/" not in response.headers.get("Location", ""):
            answer.problem = f"201 without an id or its Location: {response.headers.get('Location')}"
    return answer


def _writer(server: Server, patient_id: str, stop: threading.Event, out: list[Answer]) -> None:
    session = requests.Session()
    turn = 0
    while not stop.is_set() and len(out) < 5000:  # bounded either way
        turn += 1
        if turn % 2:
            ins = _ins()
            out.append(_create(session, server, "Patient", _patient(ins), ins))
        else:
            doc = document(patient_id, text=f"Compte rendu {uuid.uuid4()}".encode())
            out.append(_create(session, server, "DocumentReference", doc, doc["masterIdentifier"]["value"]))
        if out[-1].status != 201:
            time.sleep(0.05)  # a client backing off a little (not the 2 s it is told: we want many tries)


def _reader(server: Server, patient_id: str, stop: threading.Event, out: list[Answer]) -> None:
    """Reads and searches, judged like the writes (a read is a unit of work too: it writes its trace)."""
    session = requests.Session()
    urls = [f"{server.base}/Patient/{patient_id}", f"{server.base}/DocumentReference?patient=Patient/{patient_id}"
            "&_count=5", f"{server.base}/Patient?identifier={INS_SYSTEM}|{_ins()}"]
    turn = 0
    while not stop.is_set() and len(out) < 5000:
        turn += 1
        now = time.monotonic()
        try:
            response = session.get(urls[turn % len(urls)], headers=server.headers(), timeout=20)
        except requests.RequestException as exc:
            out.append(Answer("read", "", 0, now, problem=f"no answer: {exc}"))
            continue
        out.append(Answer("read", "", response.status_code, now, problem=_judge(response)))
        if response.status_code != 200:
            time.sleep(0.05)


def _wait_until_serving(server: Server, seconds: float) -> float:
    """Seconds until a create succeeds again."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            response = requests.post(f"{server.base}/Patient", json=_patient(_ins()), headers=server.headers(),
                                     timeout=10)
            if response.status_code == 201:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server did not serve again within {seconds} s of PostgreSQL's return")


def test_postgres_restarts_under_write_load(cluster: Cluster, server: Server) -> None:
    started = time.monotonic()
    response = requests.post(f"{server.base}/Patient", json=_patient(_ins()), headers=server.headers(), timeout=20)
    assert response.status_code == 201, response.text
    patient_id = response.json()["id"]

    stop = threading.Event()
    answers: list[list[Answer]] = [[] for _ in range(WRITERS + 1)]
    threads = [threading.Thread(target=_writer if i < WRITERS else _reader,
                                args=(server, patient_id, stop, answers[i]), daemon=True) for i in range(WRITERS + 1)]
    outages = []
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        for mode, away in (("fast", 2.0), ("immediate", 1.5)):
            down = time.monotonic()
            cluster.stop(mode)
            time.sleep(away)
            cluster.start()
            outages.append((mode, time.monotonic() - down, _wait_until_serving(server, 20)))
            time.sleep(1.5)  # load again on a recovered pool
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)

    everything = [a for per_thread in answers for a in per_thread]
    problems = [a for a in everything if a.problem]
    statuses: dict[int, int] = {}
    for a in everything:
        statuses[a.status] = statuses.get(a.status, 0) + 1
    summary = f"{len(everything)} writes, statuses {statuses}, outages {outages}"
    assert not problems, f"{summary}; first problems: {[(a.kind, a.status, a.problem) for a in problems[:5]]}"
    assert statuses.get(503), f"PostgreSQL's outages were never seen ({summary})"
    acknowledged = [a for a in everything if a.status == 201]
    assert any(a.kind == "read" and a.status == 200 for a in everything), summary
    assert len(acknowledged) > 20, summary

    # Every acknowledged write is there, once.
    session = requests.Session()
    for a in acknowledged:
        if a.kind == "Patient":
            found = session.get(f"{server.base}/Patient", params={"identifier": f"{INS_SYSTEM}|{a.key}"},
                                headers=server.headers(), timeout=20)
        else:
            found = session.get(f"{server.base}/DocumentReference",
                                params={"patient": f"Patient/{patient_id}", "identifier": a.key},
                                headers=server.headers(), timeout=20)
        assert found.status_code == 200, found.text
        ids = [e["resource"]["id"] for e in found.json().get("entry", [])
               if e.get("search", {}).get("mode") != "outcome"]
        assert ids == [a.id], f"{a.kind} {a.key}: acknowledged as {a.id}, stored as {ids} ({summary})"

    # No write refused with 503 was stored twice either (a retried commit whose outcome was unknown).
    for a in everything:
        if a.kind == "DocumentReference" and a.status == 503:
            found = session.get(f"{server.base}/DocumentReference",
                                params={"patient": f"Patient/{patient_id}", "identifier": a.key},
                                headers=server.headers(), timeout=20)
            assert found.status_code == 200 and len(found.json().get("entry", [])) <= 1, found.text

    log = server.log.read_text(errors="replace")
    assert "Unexpected error" not in log and "Traceback" not in log, log[-5000:]
    assert time.monotonic() - started < 90, summary
