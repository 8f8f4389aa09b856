"""An issuer's endpoints misbehaving (services/jwks.py, services/oidc.py), against a real HTTP server on a local
port: a JWKS endpoint that hangs, trickles, answers megabytes or fails must cost one bounded fetch per cooldown,
never one blocked request per token (each waiting its timeout), and a remembered token must get a 503 (the token
may be good) rather than a 401 while the issuer cannot be asked. Also: a JWKS on another host, and duplicate kids."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.services import jwks, oidc
from fhir_dmp.services.identity import TokenKeys, caller_from_header, load_keys
from tests.services.test_oidc_keys import AUDIENCE, CLAIMS, EC_KEY, RSA_KEY, Memory, jwk

TIMEOUT = 0.5
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Endpoint:
    """What the provider's JWKS endpoint does now: ok, hang, trickle, huge, fail, redirect."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0
        self.release = threading.Event()
        self.document = {"keys": [jwk(RSA_KEY.public_key(), "k1")]}


@pytest.fixture
def provider() -> Iterator[tuple[str, Endpoint]]:
    endpoint = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/.well-known/openid-configuration":
                return self._send(json.dumps({"issuer": base, "jwks_uri": f"{base}/jwks"}).encode())
            endpoint.hits += 1
            mode = endpoint.mode
            if mode == "hang":
                endpoint.release.wait(10)
                return None
            if mode == "fail":
                return self._send(b"{}", 500)
            if mode == "redirect":
                self.send_response(302)
                self.send_header("Location", "https://evil.example/jwks")
                self.end_headers()
                return None
            if mode == "huge":
                return self._send(b'{"keys": [' + b" " * (jwks.MAX_BYTES + 10) + b"]}")
            if mode == "trickle":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(200):
                    if endpoint.release.wait(0.05):
                        return None
                    self.wfile.write(b" ")
                    self.wfile.flush()
                return None
            return self._send(json.dumps(endpoint.document).encode())

        def _send(self, body: bytes, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", endpoint
    finally:
        endpoint.release.set()
        server.shutdown()
        server.server_close()


def issuer_keys(url: str, lifespan: float = 300, cooldown: float = 30) -> TokenKeys:
    keys = load_keys(Settings(oidc_issuers=(url,), oidc_audiences=(AUDIENCE,), oidc_jwks_lifespan=lifespan,
                              oidc_refresh_cooldown=cooldown))
    keys.issuers[url].timeout = TIMEOUT
    return keys


def token(url: str, kid: str = "k1", key=RSA_KEY, alg: str = "RS256") -> str:  # type: ignore[no-untyped-def]
    now = int(time.time())
    return jwt.encode({**CLAIMS, "iss": url, "aud": AUDIENCE, "iat": now, "exp": now + 300}, key, algorithm=alg,
                      headers={"kid": kid})


def answer(keys: TokenKeys, tok: str) -> int:
    try:
        caller_from_header(f"Bearer {tok}", keys)
        return 200
    except FhirError as error:
        return error.status


@pytest.mark.parametrize("mode", ["hang", "trickle", "huge", "fail", "redirect"])
def test_a_bad_jwks_endpoint_costs_one_bounded_fetch_per_cooldown(provider, mode):
    url, endpoint = provider
    endpoint.mode = mode
    keys = issuer_keys(url)
    started = time.monotonic()
    statuses = [answer(keys, token(url, kid=f"invented-{i}")) for i in range(20)]
    elapsed = time.monotonic() - started
    assert statuses == [503] * 20
    assert endpoint.hits == 1, endpoint.hits  # the first fetch only: the failure starts the cooldown
    assert elapsed < 3 * TIMEOUT + 1, elapsed  # one bounded fetch, not twenty (10 s each when hanging)


def test_concurrent_requests_wait_for_one_fetch_not_one_each(provider):
    url, endpoint = provider
    endpoint.mode = "hang"
    keys = issuer_keys(url)
    keys.issuers[url].discovery()
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: answer(keys, token(url, kid=f"k{i}")), range(8)))
    assert statuses == [503] * 8 and endpoint.hits == 1
    assert time.monotonic() - started < 3 * TIMEOUT + 1


def test_a_remembered_token_gets_a_503_while_the_issuer_cannot_be_asked_then_works_again(provider):
    url, endpoint = provider
    keys = issuer_keys(url, lifespan=0.3, cooldown=0)
    good = token(url)
    assert answer(keys, good) == 200 and endpoint.hits == 1
    endpoint.mode = "fail"
    time.sleep(0.4)  # the JWKS the server kept has expired: it must ask again, and cannot
    assert [answer(keys, good) for _ in range(10)] == [503] * 10  # not 401: the token may be good
    assert endpoint.hits == 2  # one attempt, then the retry delay
    endpoint.mode = "ok"
    time.sleep(jwks.MIN_RETRY + 0.1)
    assert answer(keys, good) == 200


def test_a_jwks_on_another_host_is_fetched_but_never_in_clear_for_an_https_issuer(provider, monkeypatch):
    url, endpoint = provider
    keys = issuer_keys(url)
    issuer = keys.issuers[url]
    other = url.replace("127.0.0.1", "localhost")  # another origin, the same test server
    issuer._discovery = None
    monkeypatch.setattr(oidc, "fetch_json", lambda *a, **k: {"issuer": url, "jwks_uri": f"{other}/jwks"})
    assert answer(keys, token(url)) == 200 and endpoint.hits == 1
    secure = "https://idp.example"
    keys = issuer_keys(secure)
    for jwks_uri in ("http://idp.example/jwks", "file:///etc/passwd", "ftp://idp.example/jwks"):
        keys.issuers[secure]._discovery, keys.issuers[secure]._tried = None, -1e9
        monkeypatch.setattr(oidc, "fetch_json", lambda *a, u=jwks_uri, **k: {"issuer": secure, "jwks_uri": u})
        with pytest.raises(FhirError) as unusable:
            keys.issuers[secure].discovery()
        assert unusable.value.status == 503 and "https" in unusable.value.issues[0].diagnostics


def memory_keys(document: dict) -> TokenKeys:
    Memory.document = document
    keys = load_keys(Settings(oidc_issuers=("https://idp.example",), oidc_audiences=(AUDIENCE,)))
    issuer = keys.issuers["https://idp.example"]
    issuer._discovery = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
    issuer._jwks = Memory(f"{issuer.url}/jwks", lifespan=300, cooldown_duration=30)
    return keys


def test_keys_sharing_a_kid():
    """RFC 7517 4.5: keys of different types may share a kid; the one of the token's algorithm is taken. Two keys
    of one type under one kid: which one signs is not said, refused. A JWKS without a usable key: 503 (the
    issuer's JWKS is broken, not the token), never a 500."""
    url = "https://idp.example"
    keys = memory_keys({"keys": [jwk(RSA_KEY.public_key(), "common"), jwk(EC_KEY.public_key(), "common")]})
    assert answer(keys, token(url, "common")) == 200
    assert answer(keys, token(url, "common", EC_KEY, "ES256")) == 200
    twice = memory_keys({"keys": [jwk(RSA_KEY.public_key(), "twice"), jwk(OTHER_RSA.public_key(), "twice")]})
    assert answer(twice, token(url, "twice")) == 401
    for broken in ({"keys": []}, {"keys": "x"}, {"keys": [{"kty": "RSA", "kid": "k", "n": "zz", "e": "AQAB"}]},
                   {"no": "keys"}):
        assert answer(memory_keys(broken), token(url, "k")) == 503


def test_a_jwks_without_a_usable_key_is_a_failed_fetch(provider):
    url, endpoint = provider
    endpoint.document = {"keys": []}
    keys = issuer_keys(url)
    assert [answer(keys, token(url)) for _ in range(5)] == [503] * 5 and endpoint.hits == 1
