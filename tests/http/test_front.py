"""The production front (fhir_dmp/http/front.py) over real sockets: `fhir-dmp serve` in a subprocess.

The limits, the deadlines and the errors the front answers itself (each an OperationOutcome), slow clients
that must not stall anybody, /healthz and /readyz. The server runs with a 2 s head deadline to keep this short.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fhir_dmp.services.identity import mint_token
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR
from tests.serving import checkout_env, free_port, serve_command, served

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
HEAD_TIMEOUT = 2



@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("front")
    port = free_port()
    env = checkout_env(SECRET, FHIR_DMP_HEADER_TIMEOUT=str(HEAD_TIMEOUT), FHIR_DMP_MAX_BODY_BYTES="1000000")
    log = tmp / "server.log"
    command = serve_command(port, f"sqlite:///{tmp / 'front.db'}", "--workers", "1", "--threads", "2", host=HOST)
    with served(command, cwd=ROOT, env=env, log=log, ready_url=f"http://{HOST}:{port}/healthz", seconds=30):
        yield port


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read until the server closes (or `timeout`): (status, headers, body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse(b"".join(chunks))


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def outcome(headers: dict[str, str], body: bytes) -> dict:
    assert headers["content-type"].startswith("application/fhir+json"), headers
    resource = json.loads(body)
    assert resource["resourceType"] == "OperationOutcome", resource
    return resource["issue"][0]


def get(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {HOST}", "Connection: close", *extra, "", ""]
    return "\r\n".join(lines).encode()


def iti67(codes: int) -> str:
    types = "&".join(f"type=http://loinc.org%7C{11000 + i}-{i % 10}" for i in range(codes))
    return f"/fhir/DocumentReference?patient.identifier=urn:oid:1.2.250.1.213.1.4.10%7C280017512345678&{types}"


pytestmark = pytest.mark.e2e


def test_a_20_kb_request_line_is_served(port: int):
    target = iti67(650)
    assert 20_000 < len(target) < 32_000
    token = mint_token(DOCTOR, secret=SECRET)
    status, headers, body = exchange(port, get(target, f"Authorization: Bearer {token}"))
    assert status == 200, body[:500]
    assert json.loads(body)["resourceType"] == "Bundle"
    padded = "/fhir/metadata?_pretty=false&" + "x=" + "a" * 20_000
    status, headers, body = exchange(port, get(padded))
    assert status == 200 and json.loads(body)["resourceType"] == "CapabilityStatement"


def test_a_request_line_over_the_limit_is_414(port: int):
    status, headers, body = exchange(port, get(iti67(1800)))
    assert status == 414
    issue = outcome(headers, body)
    assert issue["code"] == "too-long" and "POST [type]/_search" in issue["diagnostics"]
    assert headers["connection"] == "close"


def test_the_front_answers_xml_when_asked(port: int):
    status, headers, body = exchange(port, get(iti67(1800), "Accept: application/fhir+xml"))
    assert status == 414 and headers["content-type"].startswith("application/fhir+xml")
    assert b"<OperationOutcome" in body and b'value="too-long"' in body


def test_header_fields_over_the_limit_are_431(port: int):
    status, headers, body = exchange(port, get("/fhir/metadata", "X-Padding: " + "p" * 70_000))
    assert status == 431 and outcome(headers, body)["code"] == "too-long"
    # many headers, each small, count together
    status, headers, body = exchange(port, get("/fhir/metadata", *[f"X-P{i}: {'p' * 1000}" for i in range(70)]))
    assert status == 431 and outcome(headers, body)["code"] == "too-long"


@pytest.mark.parametrize("raw", [
    b"THIS IS NOT HTTP\r\n\r\n",
    b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nContent-Length: 13\r\n\r\n{}",
])
def test_a_malformed_request_is_400(port: int, raw: bytes):
    status, headers, body = exchange(port, raw)
    assert status == 400 and outcome(headers, body)["code"] == "structure"


def test_a_body_over_the_limit_is_413(port: int):
    raw = (b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
           b"Content-Length: 2000000\r\n\r\n")
    status, headers, body = exchange(port, raw)
    assert status == 413 and outcome(headers, body)["code"] == "too-costly"


def test_a_head_that_does_not_arrive_in_time_is_408(port: int):
    started = time.monotonic()
    status, headers, body = exchange(port, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n", timeout=HEAD_TIMEOUT + 5)
    assert status == 408 and outcome(headers, body)["code"] == "timeout"
    assert HEAD_TIMEOUT <= time.monotonic() - started < HEAD_TIMEOUT + 3


def test_slow_heads_do_not_stall_a_probe(port: int):
    """20 connections sending their heads a byte every 0.3 s (more than 2 threads): /fhir/metadata answers."""
    stop = threading.Event()
    socks = [socket.create_connection((HOST, port), timeout=5) for _ in range(20)]

    def trickle() -> None:
        payload = b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
        for i in range(len(payload)):
            if stop.wait(0.3):
                return
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(payload[i:i + 1])

    worker = threading.Thread(target=trickle, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            response = requests.get(f"http://{HOST}:{port}/fhir/metadata", timeout=5)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(0.2)
        assert max(latencies) < 1.0, latencies
    finally:
        stop.set()
        worker.join(timeout=5)
        for sock in socks:
            sock.close()


def test_healthz_and_readyz(port: int):
    alive = requests.get(f"http://{HOST}:{port}/healthz", timeout=5)
    assert alive.status_code == 200 and alive.json()["issue"][0]["diagnostics"] == "alive"
    ready = requests.get(f"http://{HOST}:{port}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.headers["Cache-Control"] == "no-store"
    assert requests.head(f"http://{HOST}:{port}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("target", ["/fhir/metadata", "/healthz", "/readyz"])
def test_head_announces_gets_length_and_sends_no_body(port: int, target: str):
    """RFC 9110 8.6 and 9.3.2: a HEAD answer's Content-Length, if sent, is the one GET's would carry, and no body
    follows (it was 0 while GET's body was not)."""
    status, headers, body = exchange(port, get(target))
    assert status == 200 and body
    head_status, head_headers, head_body = exchange(port, get(target).replace(b"GET ", b"HEAD ", 1))
    assert head_status == 200 and head_body == b""
    assert head_headers["content-length"] == headers["content-length"] == str(len(body)), (head_headers, headers)
