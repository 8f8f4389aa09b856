"""Fetching an issuer's documents (its OpenID configuration, its JWKS) without letting the issuer's endpoint hold
the server: each fetch is bounded in time (in all, not per read: an endpoint that answers a byte at a time gets
no longer) and in size, asks for no compression (no decompression bomb), and a failed JWKS fetch is not tried
again before the cooldown, so that while an issuer is down or hangs, its tokens get a 503 at once instead of one
blocked thread per request (PyJWKClient itself starts its cooldown only after a successful fetch).
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import requests

MAX_BYTES = 1024 * 1024  # a JWKS of a few keys is a few kB; a discovery document some
MIN_RETRY = 1.0  # seconds between two failed fetches, even with a cooldown of 0 (tests, fast rotation)


class Unfetchable(Exception):
    """The document could not be fetched, or is not a JSON document of a sensible size."""


def fetch_json(url: str, timeout: float, *, redirects: bool) -> Any:
    """GET `url` as JSON: within `timeout` seconds in all (each read waits at most `timeout` too), at most
    MAX_BYTES, uncompressed; `redirects`: whether to follow them (never for a JWKS, as PyJWKClient)."""
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, timeout=timeout, stream=True, allow_redirects=redirects,
                          headers={"Accept": "application/json", "Accept-Encoding": "identity"}) as answer:
            if answer.is_redirect or answer.status_code != 200:
                raise Unfetchable(f"{url} answered {answer.status_code}")
            body = bytearray()
            while chunk := answer.raw.read1(64 * 1024, decode_content=False):
                body += chunk
                if len(body) > MAX_BYTES:
                    raise Unfetchable(f"{url} answered more than {MAX_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise Unfetchable(f"{url} did not answer in full within {timeout:g} s")
    except requests.RequestException as exc:
        raise Unfetchable(f"{url}: {exc}") from None
    try:
        return json.loads(bytes(body))
    except ValueError:
        raise Unfetchable(f"{url} did not answer JSON") from None


class KeySet(jwt.PyJWKClient):
    """PyJWKClient (its cache and lifespan; the refresh an unknown `kid` forces is `Issuer._refreshed`'s, whose
    cooldown counts from the last forced refresh only), fetching through `fetch_json`, one fetch at a time (the
    others then find its answer in the cache), and after a failed fetch not again before the cooldown (at least
    MIN_RETRY)."""

    def __init__(self, uri: str, *, lifespan: float, cooldown: float, timeout: float) -> None:
        super().__init__(uri, cache_jwk_set=True, lifespan=lifespan, cooldown_duration=cooldown, timeout=timeout)
        self.failed_at: float | None = None

    def fetch_data(self) -> Any:
        with self._client_lock:
            wait = max(self.cooldown_duration, MIN_RETRY)
            if self.failed_at is not None and time.monotonic() - self.failed_at < wait:
                raise jwt.PyJWKClientConnectionError(f"{self.uri} failed less than {wait:g} s ago")
            try:
                data = self._as_jwk_set_payload(fetch_json(self.uri, self.timeout, redirects=False))
                jwt.PyJWKSet.from_dict(data)  # a set without a usable key is a failed fetch too
            except (Unfetchable, jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
                self.failed_at = time.monotonic()
                raise jwt.PyJWKClientConnectionError(str(exc)) from None
            self.failed_at = None
            if self.jwk_set_cache is not None:
                self.jwk_set_cache.put(data)
            self._last_successful_fetch = time.monotonic()
            return data

    def get_jwk_set(self, refresh: bool = False) -> jwt.PyJWKSet:
        with self._client_lock:
            return super().get_jwk_set(refresh)
