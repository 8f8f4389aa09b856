"""End to end: `fhir-dmp serve` (a separate process) trusting an issuer whose JWKS endpoint hangs. The first token
waits for one fetch (bounded by the server's timeout); every later one, and every request arriving meanwhile, gets
a 503 with Retry-After at once: no request per token waits out a timeout of its own, and the public endpoints stay
quick. The issuer here is a small HTTP server of the test process (discovery answers, the JWKS never does)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import SECRET
from tests.serving import checkout_env, free_port, serve_command, served

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SERVER_TIMEOUT = 5.0  # services/oidc.py Issuer.timeout: one fetch waits at most about this long


@pytest.fixture(scope="module")
def hanging_issuer() -> Iterator[tuple[str, list[float]]]:
    release, hits = threading.Event(), []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/.well-known/openid-configuration":
                body = json.dumps({"issuer": base, "jwks_uri": f"{base}/jwks"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            hits.append(time.monotonic())
            release.wait(60)  # the JWKS never answers

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_a_hanging_jwks_costs_one_bounded_wait_not_one_per_request(hanging_issuer, tmp_path) -> None:
    issuer, hits = hanging_issuer
    port = free_port()
    fhir = f"http://127.0.0.1:{port}/fhir"
    env = checkout_env(SECRET, FHIR_DMP_OIDC_ISSUER=issuer, FHIR_DMP_OIDC_AUDIENCE="fhir-dmp",
                       FHIR_DMP_OIDC_REFRESH_COOLDOWN="30")
    now = int(time.time())

    def call(i: int) -> tuple[int, float, str]:
        token = jwt.encode({"iss": issuer, "aud": "fhir-dmp", "sub": "x", "actor": "system", "iat": now,
                            "exp": now + 600}, KEY, algorithm="RS256", headers={"kid": f"kid-{i}"})
        started = time.monotonic()
        answer = requests.get(f"{fhir}/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        return answer.status_code, time.monotonic() - started, answer.headers.get("Retry-After", "")

    with served(serve_command(port, f"sqlite:///{tmp_path / 'fhir.db'}", "--workers", "1", "--threads", "4"),
                cwd=ROOT, env=env, log=tmp_path / "serve.log", ready_url=f"{fhir}/metadata", seconds=60):
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # 8 tokens at once, each with a kid never seen
            first = list(pool.map(call, range(8)))
        assert [status for status, _, _ in first] == [503] * 8, first
        assert all(retry for _, _, retry in first)
        assert time.monotonic() - started < 2 * SERVER_TIMEOUT + 3, first  # one bounded fetch, not 8 in a row
        later = [call(100 + i) for i in range(10)]
        assert [status for status, _, _ in later] == [503] * 10
        assert max(seconds for _, seconds, _ in later) < 1.0, later  # no network: the failure is remembered
        assert len(hits) == 1, hits  # the JWKS was asked once
        quick = time.monotonic()
        assert requests.get(f"{fhir}/metadata", timeout=10).status_code == 200
        assert time.monotonic() - quick < 2.0
