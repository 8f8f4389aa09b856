"""The development provider itself (http/devidp.py), in-process: what a client of it may and may not do."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from fhir_dmp.http.devidp import create_idp

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
