"""The development provider itself (http/devidp.py), in-process: what a client of it may and may not do."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from fhir_dmp.http.devidp import create_idp
from fhir_dmp.policy.mappings import load_mapping
from fhir_dmp.services.oidc import Issuer
from fhir_dmp.services.smart import configuration

ISSUER = "http://idp.test"


@pytest.fixture
def idp(tmp_path):  # type: ignore[no-untyped-def]
    return create_idp(ISSUER, "fhir-dmp", tmp_path / "keys", ttl=120).test_client()


def verify(idp, token: str) -> dict:  # type: ignore[no-untyped-def]
    keys = {k["kid"]: k for k in idp.get("/jwks").get_json()["keys"]}
    key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]])
    return jwt.decode(token, key, algorithms=["RS256"], audience="fhir-dmp", issuer=ISSUER)


def test_discovery_and_two_published_keys_and_rotation(idp):  # type: ignore[no-untyped-def]
    found = idp.get("/.well-known/openid-configuration").get_json()
    assert found["issuer"] == ISSUER and found["jwks_uri"] == f"{ISSUER}/jwks"
    assert found["code_challenge_methods_supported"] == ["S256"]
    before = [k["kid"] for k in idp.get("/jwks").get_json()["keys"]]
    assert len(before) == 2
    rotated = idp.post("/rotate").get_json()
    after = [k["kid"] for k in idp.get("/jwks").get_json()["keys"]]
    assert after == [before[1], rotated["signing_kid"]]


def test_client_credentials(idp):  # type: ignore[no-untyped-def]
    basic = base64.b64encode(b"dmp-feeder:dev-feeder-secret").decode()
    answer = idp.post("/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                      headers={"Authorization": f"Basic {basic}"})
    claims = verify(idp, answer.get_json()["access_token"])
    assert (claims["sub"], claims["client_id"], claims["scope"]) == ("dmp-feeder", "dmp-feeder", "system/*.rs")
    wrong = idp.post("/token", data={"grant_type": "client_credentials", "client_id": "dmp-feeder",
                                     "client_secret": "guess"})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"
    public = idp.post("/token", data={"grant_type": "client_credentials", "client_id": "smart-app"})
    assert public.status_code == 401  # a public client has no secret to prove


def _code(idp, challenge: str, **extra: str) -> str:  # type: ignore[no-untyped-def]
    answer = idp.get("/authorize", query_string={
        "response_type": "code", "client_id": "smart-app", "redirect_uri": "http://app/cb", "scope": "user/*.rs",
        "code_challenge": challenge, "code_challenge_method": "S256", "login_hint": "dr-martin", **extra})
    assert answer.status_code == 302, answer.data
    return parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]


def test_authorization_code_with_pkce(idp):  # type: ignore[no-untyped-def]
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    form = {"grant_type": "authorization_code", "client_id": "smart-app", "redirect_uri": "http://app/cb"}
    bad = idp.post("/token", data={**form, "code": _code(idp, challenge), "code_verifier": "w" * 50})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_grant"
    code = _code(idp, challenge)
    good = idp.post("/token", data={**form, "code": code, "code_verifier": verifier})
    claims = verify(idp, good.get_json()["access_token"])
    assert claims["SubjectNameID"] == "810001234567" and claims["scope"] == "user/*.rs"
    assert idp.post("/token", data={**form, "code": code, "code_verifier": verifier}).status_code == 400  # once
    elsewhere = idp.post("/token", data={**form, "redirect_uri": "http://evil/cb", "code": _code(idp, challenge),
                                         "code_verifier": verifier})
    assert elsewhere.status_code == 400


@pytest.mark.parametrize("query", [
    {"code_challenge_method": "plain"}, {"login_hint": "nobody"}, {"client_id": "unknown"}, {"response_type": "token"},
])
def test_authorize_refuses_what_it_does_not_support(idp, query):  # type: ignore[no-untyped-def]
    args = {"response_type": "code", "client_id": "smart-app", "redirect_uri": "http://app/cb",
            "code_challenge": "x" * 43, "code_challenge_method": "S256", "login_hint": "dr-martin", **query}
    assert idp.get("/authorize", query_string=args).status_code == 400


def test_the_keys_survive_a_restart_in_their_directory(tmp_path):  # type: ignore[no-untyped-def]
    first = create_idp(ISSUER, "fhir-dmp", tmp_path).test_client().get("/jwks").get_json()
    again = create_idp(ISSUER, "fhir-dmp", tmp_path).test_client().get("/jwks").get_json()
    assert first == again


VERIFIER = "v" * 50
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


def _flow(idp, login: str, scope: str, **extra: str):  # type: ignore[no-untyped-def]
    """The authorization code flow; the /authorize answer when it refuses, else the token response."""
    answer = idp.get("/authorize", query_string={
        "response_type": "code", "client_id": "smart-app", "redirect_uri": "http://app/cb", "scope": scope,
        "code_challenge": CHALLENGE, "code_challenge_method": "S256", "login_hint": login, **extra})
    if answer.status_code != 302:
        return answer
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    return idp.post("/token", data={"grant_type": "authorization_code", "client_id": "smart-app", "code": code,
                                    "redirect_uri": "http://app/cb", "code_verifier": VERIFIER})


def id_claims(idp, token: str, client: str = "smart-app") -> dict:  # type: ignore[no-untyped-def]
    keys = {k["kid"]: k for k in idp.get("/jwks").get_json()["keys"]}
    header = jwt.get_unverified_header(token)
    return jwt.decode(token, jwt.PyJWK(keys[header["kid"]]), algorithms=["RS256"], audience=client, issuer=ISSUER)


def test_what_the_fhir_server_advertises_for_it_the_provider_delivers(idp):  # type: ignore[no-untyped-def]
    """smart-configuration, computed from this provider's discovery, claims sso-openid-connect and
    context-standalone-patient: a patient launch then gets `patient`, `openid fhirUser` an id_token with fhirUser."""
    found = idp.get("/.well-known/openid-configuration").get_json()
    advertised = configuration(Issuer(ISSUER, "fhir-dmp", load_mapping("dmp"), _discovery=found))["capabilities"]
    assert {"sso-openid-connect", "context-standalone-patient"} <= set(advertised)
    answer = _flow(idp, "patient-1800175123456", "openid fhirUser launch/patient patient/*.rs",
                   launch_patient="pat-42", nonce="n-123")
    assert answer.status_code == 200, answer.data
    body = answer.get_json()
    assert body["patient"] == "pat-42"
    claims = id_claims(idp, body["id_token"])
    assert claims["sub"] == "f:patient:1800175123456" and claims["fhirUser"] == "Patient/pat-42"
    assert claims["nonce"] == "n-123"
    half = hashlib.sha256(body["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(half).rstrip(b"=").decode()
    assert jwt.get_unverified_header(body["id_token"])["typ"] == "JWT"  # signed with the keys of the JWKS (above)
    assert verify(idp, body["access_token"])["scope"] == "openid fhirUser launch/patient patient/*.rs"


def test_a_professional_s_fhir_user_and_no_context_unless_asked(idp):  # type: ignore[no-untyped-def]
    body = _flow(idp, "dr-martin", "openid fhirUser user/*.rs", fhir_user="Practitioner/p-1").get_json()
    assert id_claims(idp, body["id_token"])["fhirUser"] == "Practitioner/p-1" and "patient" not in body
    plain = _flow(idp, "dr-martin", "user/*.rs", launch_patient="pat-42").get_json()
    assert "id_token" not in plain and "patient" not in plain  # neither asked for
    openid = _flow(idp, "dr-martin", "openid user/*.rs").get_json()
    assert "fhirUser" not in id_claims(idp, openid["id_token"]) and "nonce" not in id_claims(idp, openid["id_token"])


@pytest.mark.parametrize(("login", "scope", "extra"), [
    ("patient-1800175123456", "launch/patient patient/*.rs", {}),  # no patient to give: refused, not left out
    ("dr-martin", "openid fhirUser user/*.rs", {}),  # no FHIR resource for a professional: refused
    ("parent-of-2150375123456", "openid fhirUser", {"launch_patient": "pat-42"}),  # a representative is no Patient
    ("patient-1800175123456", "launch/patient", {"launch_patient": "../Patient/x"}),
    ("dr-martin", "openid fhirUser", {"fhir_user": "javascript:alert(1)"}),
])
def test_a_context_it_cannot_give_is_refused(idp, login, scope, extra):  # type: ignore[no-untyped-def]
    answer = _flow(idp, login, scope, **extra)
    assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_request", answer.data
