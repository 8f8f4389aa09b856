"""A verified token is remembered until it expires, and never beyond: the cache changes the cost of a request,
never its answer."""

from __future__ import annotations

import time

import pytest

from fhir_dmp.errors import FhirError
from fhir_dmp.services import identity
from fhir_dmp.services.identity import TokenKeys, caller_from_header, mint_token

SECRET = "identity-cache-secret-at-least-thirty-two-bytes"
DOCTOR = {"actor": "professional", "sub": "810001234567", "profession": "10", "specialty": "SM26"}


def test_the_same_token_gives_the_same_caller_without_verifying_again(monkeypatch):  # type: ignore[no-untyped-def]
    keys = TokenKeys(SECRET, None)
    header = f"Bearer {mint_token(DOCTOR, secret=SECRET)}"
    first = caller_from_header(header, keys)
    calls = []
    monkeypatch.setattr(identity, "_verify", lambda *a: calls.append(a) or pytest.fail("verified again"))
    assert caller_from_header(header, keys) == first
    assert calls == []


def test_a_remembered_token_is_verified_again_once_it_expires(monkeypatch):  # type: ignore[no-untyped-def]
    keys = TokenKeys(SECRET, None)
    token = mint_token(DOCTOR, secret=SECRET)
    caller = caller_from_header(f"Bearer {token}", keys)
    keys.verified.put(token, (caller, time.time() - 1))  # its `exp` has passed
    refusal = FhirError.of(401, "login", "The bearer token has expired")

    def expired(*_args):  # type: ignore[no-untyped-def]
        raise refusal
    monkeypatch.setattr(identity, "_verify", expired)
    with pytest.raises(FhirError) as refused:
        caller_from_header(f"Bearer {token}", keys)
    assert refused.value is refusal


def test_another_key_set_verifies_afresh():  # type: ignore[no-untyped-def]
    """The remembered tokens belong to their key set: a token verified by one is verified afresh by another
    (one made right after the first is freed, at the same address, included)."""
    header = f"Bearer {mint_token(DOCTOR, secret=SECRET)}"
    for _ in range(3):
        caller_from_header(header, TokenKeys(SECRET, None))
        with pytest.raises(FhirError) as refused:
            caller_from_header(header, TokenKeys("another-secret-at-least-thirty-two-bytes-long", None))
        assert refused.value.status == 401
