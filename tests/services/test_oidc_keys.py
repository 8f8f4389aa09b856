"""An issuer's keys and algorithms (services/oidc.py), against a JWKS served from memory: RS256, PS256 and ES256
accepted with a key of their type; a key of another type or declared algorithm, a key smuggled in the token's own
header, and a flood of unknown `kid`s (one JWKS fetch per cooldown) refused."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.services.identity import caller_from_header, load_keys

ISSUER, AUDIENCE = "https://idp.example", "fhir-dmp"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384 = ec.generate_private_key(ec.SECP384R1())
SHORT_RSA = rsa.generate_private_key(public_exponent=65537, key_size=1024)
CLAIMS = {"actor": "professional", "sub": "810001234567", "profession": "10"}


def jwk(public, kid: str, alg: str | None = None) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(public)), "kid": kid, "use": "sig", **({"alg": alg} if alg else {})}


class Memory(jwt.PyJWKClient):
    """PyJWKClient whose endpoint is a dict (counting the fetches)."""

    document: dict = {}
    fetches = 0

    def fetch_data(self):  # type: ignore[no-untyped-def]
        Memory.fetches += 1
        if self.jwk_set_cache is not None:
            self.jwk_set_cache.put(Memory.document)
        self._last_successful_fetch = time.monotonic()  # as PyJWKClient.fetch_data does: starts the cooldown
        return Memory.document


@pytest.fixture
def keys():  # type: ignore[no-untyped-def]
    Memory.document = {"keys": [
        jwk(RSA_KEY.public_key(), "rsa-any"),  # no declared alg: RS256 and PS256
        jwk(RSA_KEY.public_key(), "rsa-ps", "PS256"),
        jwk(EC_KEY.public_key(), "ec", "ES256"),
        jwk(EC384.public_key(), "ec384"),
        jwk(SHORT_RSA.public_key(), "rsa-1024"),
    ]}
    Memory.fetches = 0
    found = load_keys(Settings(oidc_issuers=(ISSUER,), oidc_audiences=(AUDIENCE,), oidc_refresh_cooldown=30))
    issuer = found.issuers[ISSUER]
    issuer._discovery = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}
    issuer._jwks = Memory(f"{ISSUER}/jwks", lifespan=300, cooldown_duration=30)
    return found


def token(key, alg: str, kid: str, **headers: object) -> str:  # type: ignore[no-untyped-def]
    now = int(time.time())
    body = {**CLAIMS, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **headers})


@pytest.mark.parametrize(("key", "alg", "kid"), [
    (RSA_KEY, "RS256", "rsa-any"), (RSA_KEY, "PS256", "rsa-any"), (RSA_KEY, "PS256", "rsa-ps"),
    (EC_KEY, "ES256", "ec"),
])
def test_the_three_algorithms_are_accepted_with_a_key_of_their_type(keys, key, alg, kid):  # type: ignore[no-untyped-def]
    assert caller_from_header(f"Bearer {token(key, alg, kid)}", keys).sub == "810001234567"


@pytest.mark.parametrize(("key", "alg", "kid"), [
    (RSA_KEY, "RS256", "rsa-ps"),  # the JWK declares PS256
    (EC_KEY, "ES256", "rsa-any"),  # an EC signature under an RSA key
    (RSA_KEY, "RS256", "ec"),
    (EC384, "ES384", "ec384"),  # not one of the three
    (RSA_KEY, "RS512", "rsa-any"),
    (SHORT_RSA, "RS256", "rsa-1024"),  # a key anyone with a few CPU-days can factor
    (SHORT_RSA, "PS256", "rsa-1024"),
])
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the 1024-bit key, on purpose
def test_a_key_of_another_type_or_algorithm_is_refused(keys, key, alg, kid):  # type: ignore[no-untyped-def]
    with pytest.raises(FhirError) as refused:
        caller_from_header(f"Bearer {token(key, alg, kid)}", keys)
    assert refused.value.status == 401


def test_a_key_carried_in_the_token_itself_is_never_used(keys):  # type: ignore[no-untyped-def]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    smuggled = token(attacker, "RS256", "rsa-any", jwk=jwk(attacker.public_key(), "rsa-any"),
                     jku="https://evil.example/jwks")
    with pytest.raises(FhirError) as refused:
        caller_from_header(f"Bearer {smuggled}", keys)
    assert refused.value.status == 401


def test_unknown_kids_refresh_the_jwks_once_per_cooldown(keys):  # type: ignore[no-untyped-def]
    caller_from_header(f"Bearer {token(RSA_KEY, 'RS256', 'rsa-any')}", keys)
    assert Memory.fetches == 1
    with pytest.raises(FhirError) as refused:  # the first unknown kid: one refresh, then a 401
        caller_from_header(f"Bearer {token(RSA_KEY, 'RS256', 'invented')}", keys)
    assert refused.value.status == 401 and "not in the JWKS" in refused.value.issues[0].diagnostics
    assert Memory.fetches == 2
    for i in range(50):  # a flood within the cooldown: no fetch, a 503 (such a key may have been published since)
        with pytest.raises(FhirError) as busy:
            caller_from_header(f"Bearer {token(RSA_KEY, 'RS256', f'invented-{i}')}", keys)
        assert busy.value.status == 503 and "being refreshed" in busy.value.issues[0].diagnostics
        assert 1 <= int(busy.value.headers["Retry-After"]) <= 30
    assert Memory.fetches == 2
    # a token issued well before the kept set was fetched: its key would be in it (a withdrawn key): 401, no fetch
    old = jwt.encode({**CLAIMS, "iss": ISSUER, "aud": AUDIENCE, "iat": int(time.time()) - 120,
                      "exp": int(time.time()) + 300}, RSA_KEY, algorithm="RS256", headers={"kid": "withdrawn"})
    with pytest.raises(FhirError) as refused:
        caller_from_header(f"Bearer {old}", keys)
    assert refused.value.status == 401 and "not in the JWKS" in refused.value.issues[0].diagnostics
    assert Memory.fetches == 2
    keys.issuers[ISSUER]._forced -= 31  # the cooldown is over: one refresh, then none
    for i in range(50):
        with pytest.raises(FhirError):
            caller_from_header(f"Bearer {token(RSA_KEY, 'RS256', f'again-{i}')}", keys)
    assert Memory.fetches == 3


def test_a_key_rotated_right_after_a_fetch_is_picked_up_at_once(keys):  # type: ignore[no-untyped-def]
    """PyJWKClient's cooldown counts from any fetch, the first included: a key published just after it got a 401
    for the whole cooldown. Here only a refresh an unknown kid forced starts it."""
    caller_from_header(f"Bearer {token(RSA_KEY, 'RS256', 'rsa-any')}", keys)  # the first fetch
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    Memory.document = {"keys": [*Memory.document["keys"], jwk(rotated.public_key(), "rotated")]}
    assert caller_from_header(f"Bearer {token(rotated, 'RS256', 'rotated')}", keys).sub == "810001234567"
    assert Memory.fetches == 2
    newer = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a second rotation within the cooldown
    Memory.document = {"keys": [*Memory.document["keys"], jwk(newer.public_key(), "newer")]}
    with pytest.raises(FhirError) as busy:
        caller_from_header(f"Bearer {token(newer, 'RS256', 'newer')}", keys)
    assert busy.value.status == 503 and busy.value.headers["Retry-After"] in ("29", "30")
    assert Memory.fetches == 2
    keys.issuers[ISSUER]._forced -= 30  # once the cooldown is over, the retry the 503 asked for succeeds
    assert caller_from_header(f"Bearer {token(newer, 'RS256', 'newer')}", keys).sub == "810001234567"


def test_a_remembered_token_stops_working_when_its_key_leaves_the_jwks(keys):  # type: ignore[no-untyped-def]
    header = f"Bearer {token(RSA_KEY, 'RS256', 'rsa-any')}"
    caller_from_header(header, keys)
    Memory.document = {"keys": [k for k in Memory.document["keys"] if k["kid"] != "rsa-any"]}
    keys.issuers[ISSUER].jwks().jwk_set_cache.put(Memory.document)  # as a refresh after the lifespan would
    with pytest.raises(FhirError) as refused:
        caller_from_header(header, keys)
    assert refused.value.status == 401
