"""End to end: `fhir-dmp serve` trusting `fhir-dmp dev-idp`, two processes talking HTTP.

Accepted: a Pro Santé Connect-style professional (authorization code with PKCE), a patient, a system client
(client credentials). Refused with 401 and a challenge: another audience, another issuer, an expired token, a key
the JWKS does not hold, HS256 signed with the issuer's public key, `alg: none`, a key the issuer withdrew (while
the new one is picked up without a restart, at once after a fetch; another unknown key within the refresh cooldown
is a 503 with Retry-After). Scopes restrict what the DMP rules allow, over HTTP too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import SECRET
from tests.fhirclient import patient
from tests.serving import checkout_env, free_port, serve_command, served

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "fhir-dmp-e2e"
LIFESPAN = 1.0  # seconds the server keeps a JWKS: the rotation test waits this long
COOLDOWN = 2.0  # seconds between two JWKS refreshes an unknown kid forces (flood protection on, as in production)
INS = "1800175123456"
FEEDER, FEEDER_SECRET = "dmp-feeder", "dev-feeder-secret"
REDIRECT = "http://127.0.0.1:1/callback"


@dataclass
class Stack:
    idp: str
    fhir: str
    key_dir: Path

    def keys(self) -> list[tuple[str, str]]:
        return [(k["kid"], k["pem"]) for k in json.loads((self.key_dir / "keys.json").read_text())["keys"]]

    def client_token(self, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials", **({"scope": scope} if scope is not None else {})}
        answer = requests.post(f"{self.idp}/token", data=form, auth=(FEEDER, FEEDER_SECRET), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def user_token(self, login: str, scope: str = "openid user/*.cruds patient/*.rs") -> str:
        return self.token_response(login, scope)["access_token"]

    def token_response(self, login: str, scope: str, **extra: str) -> dict:
        """The authorization code flow with PKCE, as a SMART app runs it (the dev-idp asks nobody)."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        answer = requests.get(f"{self.idp}/authorize", allow_redirects=False, timeout=10, params={
            "response_type": "code", "client_id": "smart-app", "redirect_uri": REDIRECT, "scope": scope,
            "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256", "login_hint": login,
            **extra})
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        assert query["state"] == ["s1"]
        form = {"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": REDIRECT,
                "client_id": "smart-app", "code_verifier": verifier}
        token = requests.post(f"{self.idp}/token", data=form, timeout=10)
        assert token.status_code == 200, token.text
        assert requests.post(f"{self.idp}/token", data=form, timeout=10).status_code == 400  # a code is used once
        return token.json()

    def forge(self, pem: str, kid: str, **claims: object) -> str:
        now = int(time.time())
        body = {"iss": self.idp, "aud": AUDIENCE, "sub": FEEDER, "client_id": FEEDER, "iat": now, "exp": now + 600,
                **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, pem, algorithm="RS256",
                          headers={"kid": kid})

    def get(self, path: str, token: str) -> requests.Response:
        return requests.get(f"{self.fhir}/{path}", timeout=20,
                            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("oidc")
    idp_port, fhir_port = free_port(), free_port()
    idp = f"http://127.0.0.1:{idp_port}"
    clients = tmp / "clients.json"
    clients.write_text(json.dumps({"clients": {FEEDER: "dmp-feeder-system"}}))
    env = checkout_env(SECRET, FHIR_DMP_OIDC_ISSUER=idp, FHIR_DMP_OIDC_AUDIENCE=AUDIENCE,
                       FHIR_DMP_OIDC_CLAIMS="psc+patient+system", FHIR_DMP_OIDC_CLIENTS=str(clients),
                       FHIR_DMP_OIDC_JWKS_LIFESPAN=str(LIFESPAN), FHIR_DMP_OIDC_REFRESH_COOLDOWN=str(COOLDOWN))
    idp_command = [*serve_command(idp_port, "unused")[:3], "dev-idp", "--port", str(idp_port), "--audience",
                   AUDIENCE, "--key-dir", str(tmp / "keys")]
    with served(idp_command, cwd=ROOT, env=env, log=tmp / "idp.log", ready_url=f"{idp}/jwks", seconds=30), \
            served(serve_command(fhir_port, f"sqlite:///{tmp / 'fhir.db'}", "--workers", "1", "--threads", "4"),
                   cwd=ROOT, env=env, log=tmp / "serve.log", ready_url=f"http://127.0.0.1:{fhir_port}/fhir/metadata",
                   seconds=60):
        log = (tmp / "serve.log").read_text()
        assert f"tokens accepted from: OpenID Connect issuer {idp}" in log
        assert "warning: the shared secret" in log
        yield Stack(idp, f"http://127.0.0.1:{fhir_port}/fhir", tmp / "keys")


def refused(answer: requests.Response, words: str) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="fhir-dmp", error="invalid_token"')
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert words in outcome["issue"][0]["diagnostics"], outcome


def test_system_professional_and_patient_tokens_are_accepted(stack: Stack) -> None:
    system = stack.client_token()
    created = requests.post(f"{stack.fhir}/Patient", json=patient(INS), timeout=20, headers={
        "Authorization": f"Bearer {system}", "Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    assert stack.get("Patient?_total=accurate", system).json()["total"] == 1  # a system caller lists DMPs
    own = stack.get(f"Patient?identifier={INS}&_total=accurate", stack.user_token("patient-" + INS))
    assert own.status_code == 200 and own.json()["total"] == 1, own.text
    # a representative of another patient: accepted as who they are, then held to that patient's DMP
    representative = stack.user_token("parent-of-2150375123456")
    assert stack.get(f"Patient?identifier={INS}", representative).status_code == 403
    # the professional is not authorised on this DMP: the existence check only (the DMP rules, 6.3)
    doctor = stack.user_token("dr-martin")
    check = stack.get(f"Patient?identifier={INS}&_total=accurate", doctor)
    assert check.status_code == 200 and check.json()["total"] == 1, check.text
    assert stack.get(f"DocumentReference?patient.identifier={INS}", doctor).status_code == 403


def test_a_system_client_must_be_registered(stack: Stack) -> None:
    kid, pem = stack.keys()[-1]
    refused(stack.get("Patient", stack.forge(pem, kid, sub="other", client_id="other")), "registered")


def test_scopes_restrict_what_the_dmp_rules_allow(stack: Stack) -> None:
    reader = stack.client_token("system/Patient.rs")
    assert stack.get("Patient", reader).status_code == 200
    denied = stack.get("DocumentReference", reader)
    assert denied.status_code == 403 and "system/DocumentReference.s" in denied.json()["issue"][0]["diagnostics"]
    write = requests.post(f"{stack.fhir}/Patient", json=patient("2800275123456"), timeout=20, headers={
        "Authorization": f"Bearer {reader}", "Content-Type": "application/fhir+json"})
    assert write.status_code == 403 and "system/Patient.c" in write.json()["issue"][0]["diagnostics"]
    # a patient's user/ scope does not open another DMP: the DMP rules still apply
    other = stack.get("Patient?identifier=2800275123456", stack.user_token("patient-" + INS, "user/*.cruds"))
    assert other.status_code in (200, 403) and other.json().get("total", 0) == 0


@pytest.mark.parametrize(("claims", "words"), [
    ({"aud": "another-api"}, "Audience"),
    ({"iss": "http://127.0.0.1:9/evil"}, "issuer is not one this server trusts"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"nbf": int(time.time()) + 3600}, "not yet valid"),
    ({"iat": int(time.time()) + 3600}, "not yet valid"),
    ({"exp": None}, "exp"),
    ({"aud": None}, "aud"),
])
def test_tokens_outside_the_issuer_s_terms_are_refused(stack: Stack, claims: dict, words: str) -> None:
    kid, pem = stack.keys()[-1]
    refused(stack.get("Patient", stack.forge(pem, kid, **claims)), words)


PSC_LISTS = {"sub": "f:psc:x", "client_id": "smart-app", "SubjectNameID": "810001234567",
             "SubjectRefPro": {"exercices": [{"codeProfession": ["10", "21"], "activities": []}]}}


@pytest.mark.parametrize(("claims", "words"), [
    # a patient's INS and a represented patient's INS at once: which DMP does the session act on?
    ({"sub": "f:patient:x", "client_id": "smart-app", "ins": INS, "represents": "2150375123456"}, "no rule"),
    (PSC_LISTS, "must be one string"),  # several professions where one is expected
    ({**PSC_LISTS, "ins": INS}, "several rules"),  # a professional and a patient at once
    ({"scope": ["system/*.rs"]}, "scope"),
    ({"scope": "system/*.rs\tsystem/Patient.c"}, "scope"),
    ({"scp": ["system/Patient.rs"]}, "scp"),  # scopes this server would not read: not taken as none
    ({"at_hash": "x", "nonce": "n"}, "ID token"),
    ({"exp": 10**400}, "NumericDate"),  # PyJWT failed on it with a 500
    ({"exp": str(int(time.time()) + 600)}, "NumericDate"),
])
def test_claims_forged_with_the_provider_s_own_key_are_refused(stack: Stack, claims: dict, words: str) -> None:
    kid, pem = stack.keys()[-1]
    refused(stack.get("Patient", stack.forge(pem, kid, **claims)), words)


def test_a_scope_is_not_widened_by_a_chain_or_a_condition(stack: Stack) -> None:
    reader = stack.client_token("system/DocumentReference.rs")
    chained = stack.get(f"DocumentReference?patient.identifier={INS}", reader)  # ITI-67 by INS searches Patient
    assert chained.status_code == 403 and "system/Patient.s" in chained.json()["issue"][0]["diagnostics"]
    creator = stack.client_token("system/Patient.c")  # get-or-create answers an existing DMP: a read
    answer = requests.post(f"{stack.fhir}/Patient?identifier={INS}", json=patient(INS), timeout=20, headers={
        "Authorization": f"Bearer {creator}", "Content-Type": "application/fhir+json"})
    assert answer.status_code == 403 and "system/Patient.r" in answer.json()["issue"][0]["diagnostics"]
    both = stack.client_token("system/DocumentReference.rs system/Patient.s")
    assert stack.get(f"DocumentReference?patient.identifier={INS}", both).status_code == 200


def test_a_key_outside_the_jwks_is_refused(stack: Stack) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    refused(stack.get("Patient", stack.forge(stranger, "not-a-published-kid")), "not in the JWKS")
    kid, _ = stack.keys()[-1]
    refused(stack.get("Patient", stack.forge(stranger, kid)), "Signature verification failed")  # a published kid


def _unsigned(header: dict, body: dict, key: bytes | None) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    head = f"{part(header)}.{part(body)}"
    signature = b"" if key is None else hmac.new(key, head.encode(), hashlib.sha256).digest()
    return f"{head}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_alg_confusion_and_alg_none_are_refused(stack: Stack) -> None:
    kid, pem = stack.keys()[-1]
    now = int(time.time())
    body = {"iss": stack.idp, "aud": AUDIENCE, "sub": FEEDER, "client_id": FEEDER, "iat": now, "exp": now + 600}
    jwk = next(k for k in requests.get(f"{stack.idp}/jwks", timeout=10).json()["keys"] if k["kid"] == kid)
    public_pem = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    confused = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, body, public_pem)
    refused(stack.get("Patient", confused), "must be signed with RS256, PS256, ES256")
    refused(stack.get("Patient", _unsigned({"alg": "none", "kid": kid}, body, None)), "not 'none'")
    # the shared secret does not sign for an issuer either
    refused(stack.get("Patient", jwt.encode(body, SECRET, algorithm="HS256", headers={"kid": kid})), "HS256")


def test_rotation_withdraws_the_old_key_and_picks_up_the_new_one_without_restart(stack: Stack) -> None:
    (old_kid, old_pem), _ = stack.keys()[-2:]
    by_old = stack.forge(old_pem, old_kid)
    time.sleep(max(LIFESPAN, COOLDOWN))  # no JWKS kept, no forced refresh cooling down (an earlier test forced one)
    assert stack.get("Patient", by_old).status_code == 200  # the JWKS just fetched: published, accepted, remembered
    rotated = requests.post(f"{stack.idp}/rotate", timeout=10).json()
    assert old_kid not in rotated["published"]
    fresh = stack.client_token()  # signed with a kid the server has never seen, right after its fetch
    assert jwt.get_unverified_header(fresh)["kid"] == rotated["signing_kid"]
    assert stack.get("Patient", fresh).status_code == 200  # one refresh at once (PyJWKClient's cooldown said 401)
    time.sleep(max(LIFESPAN, COOLDOWN) + 0.5)  # the kept JWKS has expired: the next one no longer holds the old key
    # even though this very token was accepted before: its kid is unknown, so one refresh, and it is not there
    refused(stack.get("Patient", by_old), "not in the JWKS")
    # within the cooldown of that refresh: no fetch; a token older than the kept set (by more than the leeway) is
    # refused, since its key would be in it; one newer gets a 503 to retry (its key may have been published since)
    refused(stack.get("Patient", stack.forge(old_pem, old_kid, iat=int(time.time()) - 120)), "not in the JWKS")
    busy = stack.get("Patient", stack.forge(old_pem, "published-since?"))
    assert busy.status_code == 503, busy.text
    assert 1 <= int(busy.headers["Retry-After"]) <= COOLDOWN
    assert "being refreshed" in busy.json()["issue"][0]["diagnostics"]


def test_smart_configuration_and_the_capability_statement(stack: Stack) -> None:
    answer = requests.get(f"{stack.fhir}/.well-known/smart-configuration", timeout=10,
                          headers={"Accept": "application/fhir+xml"})
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    document = answer.json()
    assert document["issuer"] == stack.idp
    assert document["authorization_endpoint"] == f"{stack.idp}/authorize"
    assert document["token_endpoint"] == f"{stack.idp}/token"
    assert "S256" in document["code_challenge_methods_supported"]
    assert {"permission-v1", "permission-v2", "launch-standalone"} <= set(document["capabilities"])
    assert "patient/*.rs" in document["scopes_supported"]
    # what it advertises for the issuer, the issuer delivers: a standalone patient launch gets the Patient's id in
    # the token response, `openid fhirUser` an id_token naming the user's resource (which is no access token here)
    assert {"sso-openid-connect", "context-standalone-patient"} <= set(document["capabilities"])
    found = stack.get(f"Patient?identifier={INS}", stack.client_token()).json()
    patient_id = found["entry"][0]["resource"]["id"]
    launch = stack.token_response("patient-" + INS, "openid fhirUser launch/patient patient/*.rs",
                                  launch_patient=patient_id)
    assert launch["patient"] == patient_id
    assert stack.get(f"Patient/{launch['patient']}", launch["access_token"]).status_code == 200
    assert jwt.decode(launch["id_token"], options={"verify_signature": False})["fhirUser"] == f"Patient/{patient_id}"
    refused(stack.get("Patient", launch["id_token"]), "")
    security = requests.get(f"{stack.fhir}/metadata", timeout=10).json()["rest"][0]["security"]
    codes = [c["code"] for s in security["service"] for c in s["coding"]]
    assert "SMART-on-FHIR" in codes
    uris = {e["url"]: e["valueUri"] for x in security["extension"] for e in x["extension"]}
    assert uris == {"authorize": f"{stack.idp}/authorize", "token": f"{stack.idp}/token"}
