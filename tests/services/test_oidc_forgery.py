"""Forging a token (services/identity.py, services/oidc.py), against an issuer whose JWKS is served from memory and
against the shared secret: algorithm confusion in every HMAC size with the issuer's public key as the secret,
headers that carry their own key or say which URL to fetch one from, `crit`, duplicate member names, odd `kid`s,
nested and encrypted JWTs, issuer look-alikes, audiences, the NumericDates, ID tokens and `scp`. Every attempt is a
401 with a challenge, never a 500 and never a caller."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.services.identity import caller_from_header, load_keys
from tests.services.test_oidc_keys import AUDIENCE, CLAIMS, ISSUER, RSA_KEY, jwk, keys  # noqa: F401 - keys: the fixture

SECRET = "forgery-test-secret-at-least-thirty-two-bytes"
NOW = int(time.time())
PUBLIC_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
PUBLIC_JWK = json.dumps(jwk(RSA_KEY.public_key(), "rsa-any")).encode()
HEADER = '{"alg":"RS256","kid":"rsa-any"}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: str, payload: str, alg: str = "RS256", key: bytes = b"") -> str:
    """A JWS over the header and payload exactly as written (duplicate names, NaN...): RS256 with the issuer's
    real key, or an HMAC with `key`."""
    head = f"{b64(header.encode())}.{b64(payload.encode())}".encode()
    if alg == "RS256":
        signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(head, RSA_KEY)
    else:
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signature = hmac.new(key, head, digest).digest()
    return f"{head.decode()}.{b64(signature)}"


def payload(**claims: object) -> str:
    """The claims as JSON, `iat` and `exp` from now (a long run must not expire them); a claim given as "RAW" is
    written as `raw` says, unquoted (NaN, 10**400...)."""
    now = int(time.time())
    body = {**CLAIMS, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return json.dumps({k: v for k, v in body.items() if v is not None})


def refused(token: str, keys, words: str = "") -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with pytest.raises(FhirError) as error:
        caller_from_header(f"Bearer {token}", keys)
    assert error.value.status == 401, error.value.issues
    assert error.value.headers["WWW-Authenticate"].startswith('Bearer realm="fhir-dmp"')
    assert words in error.value.issues[0].diagnostics, error.value.issues[0].diagnostics
    assert len(error.value.issues[0].diagnostics) < 400  # nothing of the token is echoed at length


def test_the_issuer_s_own_token_is_accepted(keys):  # noqa: F811
    assert caller_from_header(f"Bearer {signed(HEADER, payload())}", keys).sub == CLAIMS["sub"]


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("secret", [PUBLIC_PEM, PUBLIC_JWK], ids=["pem", "jwk"])
def test_hmac_with_the_issuer_s_public_key_as_the_secret(keys, alg, secret):  # noqa: F811
    header = json.dumps({"alg": alg, "kid": "rsa-any", "typ": "JWT"})
    refused(signed(header, payload(), alg, secret), keys, "must be signed with RS256, PS256, ES256")
    # without `iss` the token goes to the shared secret, which the public key is not
    refused(signed(header, payload(iss=None), alg, secret), keys)


@pytest.mark.parametrize("header", [
    '{"alg":"RS256","kid":"ec"}',  # an RSA signature under an EC key's kid
    '{"alg":"ES256","kid":"rsa-any"}',
    '{"alg":"RS256","kid":"rsa-any","crit":["exp"]}',  # crit naming a claim, not a header extension
    '{"alg":"RS256","kid":"rsa-any","crit":["x-ours"],"x-ours":1}',
    '{"alg":"RS256","kid":"rsa-any","crit":["b64"],"b64":false}',
    '{"alg":"RS256","kid":"rsa-any","crit":[]}',
    '{"alg":"none","alg":"RS256","kid":"rsa-any"}',  # a gateway reading the first name sees alg none
    '{"alg":"RS256","kid":"' + "../" * 20000 + '"}',  # path traversal, 60 kB
    '{"alg":"RS256","kid":"rsa-any","kid":"ec"}',
    '{"alg":"RS256","kid":"rsa-any","cty":"JWT"}',  # a nested JWT: its payload is a token, not claims
    '{"alg":"RS256","kid":"rsa-any","typ":"JWE"}',
    '{"alg":"RS256","kid":["rsa-any"]}',
    '{"alg":["RS256"],"kid":"rsa-any"}',
])
def test_headers_that_try_to_change_the_key_or_the_rules(keys, header):  # noqa: F811
    body = json.dumps(signed(HEADER, payload())) if '"cty"' in header else payload()
    refused(signed(header, body), keys)


def test_headers_carrying_a_key_or_a_key_url_are_never_followed(keys):  # noqa: F811
    attacker = jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    for extra in ({"jku": "https://evil.example/jwks"}, {"x5u": "https://evil.example/cert"},
                  {"jwk": attacker}, {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}):
        header = json.dumps({"alg": "RS256", "kid": "rsa-any", **extra})
        # signed with the issuer's real key: accepted, as the JWKS says, whatever the header adds
        assert caller_from_header(f"Bearer {signed(header, payload())}", keys).sub == CLAIMS["sub"]


@pytest.mark.parametrize("token", [
    "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d",  # JWE compact: five parts
    "eyJhbGciOiJSUzI1NiJ9.e30",
    "a.b.c", "..", "x" * 5000,
])
def test_what_is_not_a_signed_jwt(keys, token):  # noqa: F811
    refused(token, keys)


@pytest.mark.parametrize("claims_text", [
    payload()[:-1] + ', "sub": "810009999999"}',  # a second sub: which one is the caller?
    payload()[:-1] + f', "iss": "{ISSUER}/"}}',
    payload(exp="RAW").replace('"RAW"', "1" + "0" * 400),  # 10**400 crashed PyJWT (500)
    payload(exp="RAW").replace('"RAW"', "1e400"),
    payload(exp="RAW").replace('"RAW"', "Infinity"),
    payload(exp="RAW").replace('"RAW"', "NaN"),
    payload(iat="RAW").replace('"RAW"', "-Infinity"),
    payload(exp=str(NOW + 300)), payload(exp=True), payload(exp=[NOW + 300]), payload(exp={}),
    payload(exp="RAW").replace('"RAW"', "null"),
    payload(exp=None), payload(iat=None), payload(iat=-1), payload(iat=NOW + 3600), payload(nbf=NOW + 3600),
    payload(nbf="0"), payload(exp=NOW - 3600, iat=NOW - 7200),
    payload(exp=NOW - 120),  # outside the 30 s leeway
])
def test_claims_outside_the_rules(keys, claims_text):  # noqa: F811
    refused(signed(HEADER, claims_text), keys)


def test_the_leeway_is_what_it_says_and_no_more(keys):  # noqa: F811
    now = int(time.time())
    assert caller_from_header(f"Bearer {signed(HEADER, payload(exp=now - 20))}", keys)  # within 30 s
    assert caller_from_header(f"Bearer {signed(HEADER, payload(nbf=now + 20))}", keys)
    refused(signed(HEADER, payload(exp=now - 40)), keys, "expired")
    refused(signed(HEADER, payload(nbf=now + 60)), keys, "not yet valid")


@pytest.mark.parametrize("iss", [ISSUER + "/", ISSUER.upper(), ISSUER.replace("e", "\u0435"), ISSUER + "#",
                                 ISSUER + " ", [ISSUER], {"url": ISSUER}, "https://idp.example.evil.example"])
def test_issuer_look_alikes(keys, iss):  # noqa: F811
    refused(signed(HEADER, payload(iss=iss)), keys)


def test_audiences(keys):  # noqa: F811
    """RFC 7519 4.1.3 and RFC 9068 4: the resource server checks that `aud` names it; a list naming it and others
    is a token meant for several resource servers, this one among them: accepted (OpenID Connect's stricter rule,
    no untrusted audience, is the ID token's, and an ID token is refused anyway)."""
    assert caller_from_header(f"Bearer {signed(HEADER, payload(aud=[AUDIENCE, 'other-api']))}", keys)
    for aud in (["other-api"], [], "", AUDIENCE.upper(), AUDIENCE + "/", [AUDIENCE, 1], {"aud": AUDIENCE}):
        refused(signed(HEADER, payload(aud=aud)), keys)


def test_an_id_token_is_not_an_access_token(keys):  # noqa: F811
    refused(signed(HEADER, payload(at_hash="x", nonce="n")), keys, "ID token")
    refused(signed(HEADER, payload(c_hash="x")), keys, "ID token")
    refused(signed(HEADER, payload(typ="ID")), keys, "ID token")
    refused(signed('{"alg":"RS256","kid":"rsa-any","typ":"id_token+jwt"}', payload()), keys, "typ")
    for typ in ("JWT", "at+jwt", "application/at+jwt", "jwt"):
        header = json.dumps({"alg": "RS256", "kid": "rsa-any", "typ": typ})
        assert caller_from_header(f"Bearer {signed(header, payload())}", keys)


def test_scopes_in_scp_are_not_ignored(keys):  # noqa: F811
    refused(signed(HEADER, payload(scp=["user/Patient.rs"])), keys, "scp")
    caller = caller_from_header(f"Bearer {signed(HEADER, payload(scp=['x'], scope='user/Patient.rs'))}", keys)
    assert caller.scopes is not None and caller.scopes.text == "user/Patient.rs"


@pytest.mark.parametrize("scope", [["user/*.rs"], "user/*.rs\tpatient/*.rs", "user/*.rs\npatient/*.rs",
                                   "user/*.rs,patient/*.rs ", " user/*.rs", 7, None])
def test_a_scope_claim_of_another_shape(keys, scope):  # noqa: F811
    text = payload(scope=scope) if scope is not None else payload()[:-1] + ', "scope": null}'
    refused(signed(HEADER, text), keys, "scope")


def test_the_shared_secret_path_is_held_to_the_same_json():
    shared = load_keys(Settings(jwt_secret=SECRET))
    now = int(time.time())
    good = json.dumps({**CLAIMS, "iat": now, "exp": now + 300})
    header = '{"alg":"HS256","typ":"JWT"}'
    assert caller_from_header(f"Bearer {signed(header, good, 'HS256', SECRET.encode())}", shared)
    for text in (good.replace(f'"exp": {now + 300}', '"exp": 1' + "0" * 400), good[:-1] + ', "actor": "system"}',
                 json.dumps({**CLAIMS, "exp": str(now + 300)})):
        refused(signed(header, text, "HS256", SECRET.encode()), shared)
    refused(signed('{"alg":"HS256","alg":"HS256"}', good, "HS256", SECRET.encode()), shared)
    for alg in ("HS384", "HS512"):
        refused(signed(json.dumps({"alg": alg}), good, alg, SECRET.encode()), shared, alg)
