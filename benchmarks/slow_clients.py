"""Slow clients against `fhir-dmp serve` (not a test): can 100 slow heads and 100 slow bodies stall the API?

    python benchmarks/slow_clients.py [--fronts waitress,gunicorn] [--slow 100] [--seconds 30] \
        [--workers 2] [--threads 4] [--database-url URL]

For each front, in one run: (1) `fhir-dmp serve --front F` on a fresh SQLite file (or the given database) on a
free loopback port; (2) a médecin creates a DMP and files a DocumentReference (tests/fhirclient.py's builders);
(3) --slow connections send a request head one byte every --interval seconds, and --slow more send a full head
announcing a 100 KB body and then the body one byte every --interval seconds; a connection the server closes
is opened again (an attacker does), for --seconds in all; (4) meanwhile a probe reads /fhir/metadata and the
DocumentReference (with its token) once a second, each on a new connection with a 5 s timeout, and every
probe's latency is kept; (5) the server stops. Loopback only, every loop bounded in count and time.

The target: every probe answered (200) within 1 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

from fhir_dmp.services.identity import mint_token  # noqa: E402
from tests.fhirclient import DOCTOR, document, patient  # noqa: E402

SECRET = "slow-clients-benchmark-secret-at-least-thirty-two-bytes"
HOST = "127.0.0.1"  # loopback only
FHIR = "application/fhir+json"


@dataclass
class Probe:
    at: float  # seconds since the attack started
    path: str
    status: int | None  # None: no answer (timeout or connection error)
    seconds: float


@dataclass
class Attack:
    connections: int = 0  # opened, reopenings included
    closed_by_server: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # status line the server sent before closing -> count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def start(front: str, port: int, database_url: str, workers: int, threads: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_DMP_")}
    env.update(FHIR_DMP_JWT_SECRET=SECRET, FHIR_DMP_HOME=str(ROOT),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fhir_dmp.cli", "serve", "--front", front, "--host", HOST, "--port", str(port),
             "--workers", str(workers), "--threads", str(threads), "--database-url", database_url],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{front}: fhir-dmp serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if call(port, "GET", "/fhir/metadata", timeout=5)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"{front}: fhir-dmp serve did not answer in 60 s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def seed(port: int, token: str) -> str:
    """A DMP and one DocumentReference in it, filed by the médecin: the DocumentReference's path."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR, "Accept": FHIR}
    status, head, body = call(port, "POST", "/fhir/Patient", json.dumps(patient("1800175123456")).encode(), headers)
    assert status in (200, 201), body[:500]
    pid = head["Location"].split("/fhir/", 1)[1].split("/")[1]
    status, head, body = call(port, "POST", "/fhir/DocumentReference", json.dumps(document(pid)).encode(), headers)
    assert status == 201, body[:500]
    return "/fhir/DocumentReference/" + head["Location"].split("/DocumentReference/", 1)[1].split("/")[0]


SLOW_HEAD = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 4000
SLOW_BODY_HEAD = (b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
                  b"Content-Length: 100000\r\n\r\n")


def attack(port: int, slow: int, interval: float, until: float, result: Attack) -> None:
    """2 x `slow` connections, each sending one byte every `interval` s until `until`; reopened when closed."""
    kinds = ["head"] * slow + ["body"] * slow
    socks: list[socket.socket | None] = [None] * len(kinds)
    sent = [0] * len(kinds)

    def open_one(i: int) -> None:
        try:
            sock = socket.create_connection((HOST, port), timeout=2)
            sock.setblocking(False)
            if kinds[i] == "body":
                sock.sendall(SLOW_BODY_HEAD)
            socks[i], sent[i] = sock, 0
            result.connections += 1
        except OSError:
            socks[i] = None

    def closed(i: int) -> None:
        sock = socks[i]
        socks[i] = None
        if sock is None:
            return
        result.closed_by_server += 1
        try:
            sock.setblocking(True)
            sock.settimeout(0.2)
            first = sock.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            first = ""
        key = first or "(closed, no answer)"
        result.answers[key] = result.answers.get(key, 0) + 1
        sock.close()

    for i in range(len(kinds)):
        if time.monotonic() >= until:
            break
        open_one(i)
    while time.monotonic() < until:
        tick = time.monotonic()
        for i in range(len(kinds)):
            if socks[i] is None:
                open_one(i)
                continue
            sock = socks[i]
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":  # the server closed it
                    closed(i)
                    continue
                closed(i)  # the server answered something (a 408): read it, count it, reopen next time
                continue
            except BlockingIOError:
                pass
            except OSError:
                closed(i)
                continue
            payload = SLOW_HEAD if kinds[i] == "head" else b" " * 100000
            try:
                sock.send(payload[sent[i] % len(payload):][:1])
                sent[i] += 1
            except OSError:
                closed(i)
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    for sock in socks:
        if sock is not None:
            sock.close()


def probe(port: int, doc_path: str, token: str, started: float, until: float, probes: list[Probe]) -> None:
    while time.monotonic() < until:
        tick = time.monotonic()
        for path, headers in (("/fhir/metadata", {}), (doc_path, {"Authorization": f"Bearer {token}"})):
            t0 = time.monotonic()
            try:
                status = call(port, "GET", path, headers={"Accept": FHIR, **headers}, timeout=5)[0]
            except OSError:
                status = None
            probes.append(Probe(round(t0 - started, 1), path, status, time.monotonic() - t0))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def run_front(front: str, args: argparse.Namespace, tmp: Path) -> dict:
    port = free_port()
    database_url = args.database_url or f"sqlite:///{tmp / f'{front}.db'}"
    proc = start(front, port, database_url, args.workers, args.threads, tmp / f"{front}.log")
    try:
        token = mint_token(DOCTOR, secret=SECRET)
        doc_path = seed(port, token)
        started = time.monotonic()
        until = started + args.seconds
        result, probes = Attack(), []
        attacker = threading.Thread(target=attack, args=(port, args.slow, args.interval, until, result), daemon=True)
        attacker.start()
        time.sleep(1.0)  # the slow connections are open
        probe(port, doc_path, token, started, until, probes)
        attacker.join(timeout=args.interval + 10)
    finally:
        stop(proc)
    answered = [p for p in probes if p.status == 200]
    latencies = sorted(p.seconds for p in answered)
    return {
        "front": front, "workers": args.workers, "threads": args.threads, "slow_heads": args.slow,
        "slow_bodies": args.slow, "seconds": args.seconds,
        "probes": len(probes), "answered_200": len(answered),
        "within_1s": sum(1 for p in answered if p.seconds <= 1.0),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "max_ms": round(max(p.seconds for p in probes) * 1000, 1) if probes else None,
        "attack": {"connections": result.connections, "closed_by_server": result.closed_by_server,
                   "answers": result.answers},
        "each_probe": [(p.at, "metadata" if p.path.endswith("metadata") else "DocumentReference", p.status,
                        round(p.seconds * 1000, 1)) for p in probes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fronts", default="waitress,gunicorn")
    parser.add_argument("--slow", type=int, default=100, help="slow-head connections, and as many slow-body ones")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two bytes of a slow client")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the attack (bounded to 120)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--database-url", help="default: a fresh SQLite file per front")
    parser.add_argument("--json", action="store_true", help="print every probe as JSON")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 120.0)
    args.slow = min(args.slow, 500)
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as tmp:
        reports = [run_front(front.strip(), args, Path(tmp)) for front in args.fronts.split(",") if front.strip()]
    if args.json:
        print(json.dumps(reports, indent=1))
        return
    for report in reports:
        print(f"\n{report['front']} ({report['workers']} processes x {report['threads']} threads), "
              f"{report['slow_heads']} slow heads + {report['slow_bodies']} slow bodies for {report['seconds']:g} s")
        print(f"  probes {report['probes']}, answered 200: {report['answered_200']}, within 1 s: "
              f"{report['within_1s']}, p50 {report['p50_ms']} ms, max {report['max_ms']} ms")
        print(f"  slow connections opened {report['attack']['connections']}, closed by the server "
              f"{report['attack']['closed_by_server']}: {report['attack']['answers']}")
        print("  each probe (s, what, status, ms): " + ", ".join(
            f"{at:g} {what[:4]} {status} {ms:g}" for at, what, status, ms in report["each_probe"]))


if __name__ == "__main__":
    main()
