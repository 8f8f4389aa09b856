"""Several issuers side by side (services/identity.py `load_keys`, policy/mappings.py): what one issuer vouches for
never counts for another. A client id is unique only at its issuer, so a system client registered for one issuer
is not a system caller when another issuer's token names a client of the same id; the short registry form, which
names no issuer, is refused when several issuers take system clients."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.services.identity import caller_from_header, load_keys
from tests.services.test_oidc_keys import RSA_KEY, Memory, jwk

FEEDERS, PATIENTS, AUDIENCE = "https://feeders.example", "https://patients.example", "fhir-dmp"


def keys_with(clients: dict, tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(clients))
    Memory.document = {"keys": [jwk(RSA_KEY.public_key(), "k")]}
    keys = load_keys(Settings(oidc_issuers=(FEEDERS, PATIENTS), oidc_audiences=(AUDIENCE,),
                              oidc_claims=("psc+system", "patient+system"), oidc_clients=path))
    for issuer in keys.issuers.values():
        issuer._discovery = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
        issuer._jwks = Memory(f"{issuer.url}/jwks", lifespan=300, cooldown_duration=30)
    return keys


def client_token(issuer: str, client: str = "dmp-feeder") -> str:
    now = int(time.time())
    return jwt.encode({"iss": issuer, "aud": AUDIENCE, "sub": client, "client_id": client, "iat": now,
                       "exp": now + 300}, RSA_KEY, algorithm="RS256", headers={"kid": "k"})


def test_a_client_registered_for_one_issuer_is_nobody_at_another(tmp_path):
    keys = keys_with({"issuers": {FEEDERS: {"dmp-feeder": "feeder-system"}}}, tmp_path)
    caller = caller_from_header(f"Bearer {client_token(FEEDERS)}", keys)
    assert (caller.actor, caller.sub) == ("system", "feeder-system")
    with pytest.raises(FhirError) as refused:  # the patients' provider's own "dmp-feeder": not the registered one
        caller_from_header(f"Bearer {client_token(PATIENTS)}", keys)
    assert refused.value.status == 401 and "registered" in refused.value.issues[0].diagnostics


def test_the_short_registry_form_needs_one_issuer_taking_clients(tmp_path):
    with pytest.raises(ValueError, match="several issuers take system clients"):
        keys_with({"clients": {"dmp-feeder": "feeder-system"}}, tmp_path)
    with pytest.raises(ValueError, match="not an issuer"):
        keys_with({"issuers": {"https://elsewhere.example": {"dmp-feeder": "x"}}}, tmp_path)
