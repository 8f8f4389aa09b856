"""Bearer tokens and refused callers, attacked from every side (dmp-reference.md section 2).

Every failure must be a 401 (or 400/403) with an OperationOutcome, never a stack trace, and a
refused caller must never get anything written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_dmp.http.app import create_app
from fhir_dmp.services.identity import mint_token
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR, FhirTestClient, json_of, patient, written

# Token checks happen before any storage is touched: one backend is enough for them. The tests that
# check that nothing was written (refused callers, bad purposes) run on every backend.
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

# -- helpers ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: dict, claims: dict, signer=None) -> str:  # type: ignore[no-untyped-def]
    """A JWT built by hand, so that PyJWT's own guards cannot stop us from forging it."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = signer(signing_input.encode()) if signer else b""
    return f"{signing_input}.{_b64(signature)}"


def _claims(**extra) -> dict:  # type: ignore[no-untyped-def]
    now = int(time.time())
    return {"actor": "system", "sub": "test-suite", "iat": now, "exp": now + 600, **extra}


def _hs256(claims: dict, secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _get(client: FhirTestClient, path: str, authorization: str | None):  # type: ignore[no-untyped-def]
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.get(path, auth=False, headers=headers)


def _assert_outcome(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.data
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    assert body["issue"][0]["code"] == code, body
    assert body["issue"][0]["severity"] == "error"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text, text
    return body


def _assert_401(response, error: str | None = "invalid_token") -> dict:  # type: ignore[no-untyped-def]
    body = _assert_outcome(response, 401, "login")
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer "), challenge
    assert 'realm="fhir-dmp"' in challenge
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge, challenge
    return body


def _versions(app) -> int:  # type: ignore[no-untyped-def]
    """How many resource versions the store holds (every write adds one)."""
    return written(app.extensions["fhir_dmp"]["db"])


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh 2048-bit key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture
def rs_client(settings, database, rsa_keys) -> FhirTestClient:  # type: ignore[no-untyped-def]
    """A server configured for RS256 only (production): no shared secret."""
    rs_settings = replace(settings, jwt_secret=None, jwt_public_key=rsa_keys[1])
    return FhirTestClient(create_app(rs_settings, database=database).test_client(), SECRET)


@pytest.fixture
def dual_client(settings, database, rsa_keys) -> FhirTestClient:  # type: ignore[no-untyped-def]
    """A server accepting both HS256 (secret) and RS256 (public key)."""
    both = replace(settings, jwt_public_key=rsa_keys[1])
    return FhirTestClient(create_app(both, database=database).test_client(), SECRET)


# -- no or malformed Authorization header -----------------------------------------------------


@SQLITE_ONLY
def test_no_authorization_header_is_401_with_challenge(client):
    body = _assert_401(_get(client, "Patient", None), error=None)
    assert "Authorization" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_every_method_needs_a_token(client, app, method):
    before = _versions(app)
    path = "Patient/abc" if method in ("PUT", "PATCH", "DELETE") else "Patient"
    body = None if method in ("GET", "DELETE") else ([] if method == "PATCH" else patient())
    _assert_401(client.request(method, path, body, auth=False), error=None)
    assert _versions(app) == before


@SQLITE_ONLY
def test_no_token_on_an_unknown_type_is_still_401(client):
    """Authentication comes first: an anonymous caller learns nothing about what is served."""
    _assert_401(_get(client, "NotAType/1", None), error=None)
    _assert_401(client.post("/fhir", {"resourceType": "Bundle", "type": "transaction"}, auth=False), error=None)


@pytest.mark.parametrize("authorization", [
    f"Basic {base64.b64encode(b'admin:admin').decode()}",
    "Token abc.def.ghi",
    "bearer-abc",
])
@SQLITE_ONLY
def test_another_scheme_is_401_with_a_bare_challenge(client, authorization):
    """RFC 6750 3: a request authenticating by an unsupported method lacks bearer information, so the challenge
    carries no error code."""
    _assert_401(_get(client, "Patient", authorization), error=None)


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer    "])
@SQLITE_ONLY
def test_a_bearer_header_without_token_is_401_invalid_request(client, authorization):
    _assert_401(_get(client, "Patient", authorization), error="invalid_request")


@SQLITE_ONLY
def test_bearer_scheme_is_case_insensitive(client):
    token = client.token()
    assert _get(client, "Patient", f"bearer {token}").status_code == 200
    assert _get(client, "Patient", f"BEARER {token}").status_code == 200


@pytest.mark.parametrize("token", [
    "garbage",
    "a.b.c",
    "....",
    "eyJhbGciOiJIUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiJ9.%%%.zzz",
    _b64(b"[1,2]") + "." + _b64(b"{}") + ".",  # header is not an object
    _b64(b'{"alg":"HS256"}') + "." + _b64(b"[1]") + ".x",  # claims are not an object
    _b64(b'{"alg":"HS256"}') + "." + _b64(b"\xff\xfe") + ".x",  # claims are not UTF-8
    "x" * 5000,
], ids=lambda token: token if len(token) < 40 else f"{token[:20]}...({len(token)} chars)")
@SQLITE_ONLY
def test_garbage_token_is_401(client, token):
    _assert_401(_get(client, "Patient", f"Bearer {token}"))


@SQLITE_ONLY
def test_bad_signature_is_401(client):
    forged = _hs256(_claims(), secret="another-secret-of-at-least-thirty-two-bytes")
    body = _assert_401(_get(client, "Patient", f"Bearer {forged}"))
    assert "not valid" in body["issue"][0]["diagnostics"]


@SQLITE_ONLY
def test_tampered_claims_are_401(client):
    """Re-encoding the claims (e.g. to raise one's actor) breaks the signature."""
    header, _, signature = _hs256(_claims(actor="patient", patient="1")).split(".")
    tampered = _b64(json.dumps(_claims(actor="system")).encode())
    _assert_401(_get(client, "Patient", f"Bearer {header}.{tampered}.{signature}"))


@SQLITE_ONLY
def test_expired_token_is_401(client):
    now = int(time.time())
    expired = _hs256(_claims(iat=now - 3600, exp=now - 120))
    body = _assert_401(_get(client, "Patient", f"Bearer {expired}"))
    assert "expired" in body["issue"][0]["diagnostics"]


@SQLITE_ONLY
def test_expiry_within_the_30_second_leeway_is_accepted(client):
    now = int(time.time())
    assert _get(client, "Patient", f"Bearer {_hs256(_claims(exp=now - 5))}").status_code == 200


@SQLITE_ONLY
def test_token_not_yet_valid_is_401(client):
    future = int(time.time()) + 3600
    _assert_401(_get(client, "Patient", f"Bearer {_hs256(_claims(nbf=future))}"))


@pytest.mark.parametrize("missing", ["exp", "sub"])
@SQLITE_ONLY
def test_token_without_exp_or_sub_is_401(client, missing):
    claims = _claims()
    del claims[missing]
    body = _assert_401(_get(client, "Patient", f"Bearer {_hs256(claims)}"))
    assert missing in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("exp", ["tomorrow", None, [1], {"a": 1}])
@SQLITE_ONLY
def test_non_numeric_exp_is_401(client, exp):
    _assert_401(_get(client, "Patient", f"Bearer {_hs256(_claims(exp=exp))}"))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@SQLITE_ONLY
def test_alg_none_token_is_401(client, alg):
    unsigned = _raw_token({"alg": alg, "typ": "JWT"}, _claims())
    _assert_401(_get(client, "Patient", f"Bearer {unsigned}"))
    # with a (meaningless) signature too
    signed_none = _raw_token({"alg": alg}, _claims(), signer=lambda data: b"sig")
    _assert_401(_get(client, "Patient", f"Bearer {signed_none}"))


@SQLITE_ONLY
def test_token_without_alg_is_401(client):
    token = _raw_token({"typ": "JWT"}, _claims(),
                       signer=lambda data: hmac.new(SECRET.encode(), data, hashlib.sha256).digest())
    _assert_401(_get(client, "Patient", f"Bearer {token}"))


@pytest.mark.parametrize("alg,digest", [("HS384", hashlib.sha384), ("HS512", hashlib.sha512)])
@SQLITE_ONLY
def test_other_hmac_algorithms_are_401(client, alg, digest):
    """Only HS256 is configured, even a correct HS512 signature with the right secret is refused."""
    token = _raw_token({"alg": alg, "typ": "JWT"}, _claims(),
                       signer=lambda data: hmac.new(SECRET.encode(), data, digest).digest())
    _assert_401(_get(client, "Patient", f"Bearer {token}"))


# -- HS256 / RS256 and algorithm confusion ----------------------------------------------------


def test_rs256_token_is_accepted_when_the_public_key_is_configured(rs_client, rsa_keys):
    token = mint_token({"actor": "system", "sub": "rs-test"}, private_key=rsa_keys[0])
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    response = _get(rs_client, "Patient", f"Bearer {token}")
    assert response.status_code == 200, response.data
    assert json_of(response)["resourceType"] == "Bundle"


def test_rs256_token_can_write(rs_client, rsa_keys):
    token = mint_token({"actor": "system", "sub": "rs-test"}, private_key=rsa_keys[0])
    created = rs_client.post("Patient", patient(), auth=False, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.data


@SQLITE_ONLY
def test_hs256_token_is_refused_when_only_rs256_is_configured(rs_client):
    token = _hs256(_claims())
    body = _assert_401(_get(rs_client, "Patient", f"Bearer {token}"))
    assert "HS256" in body["issue"][0]["diagnostics"]


@SQLITE_ONLY
def test_rs256_token_is_refused_when_only_hs256_is_configured(client, rsa_keys):
    token = mint_token({"actor": "system", "sub": "rs-test"}, private_key=rsa_keys[0])
    body = _assert_401(_get(client, "Patient", f"Bearer {token}"))
    assert "RS256" in body["issue"][0]["diagnostics"]


@SQLITE_ONLY
def test_rs256_token_signed_with_another_key_is_401(rs_client):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    token = mint_token({"actor": "system", "sub": "rs-test"}, private_key=other)
    _assert_401(_get(rs_client, "Patient", f"Bearer {token}"))


@pytest.mark.parametrize("fixture", ["rs_client", "dual_client"])
@SQLITE_ONLY
def test_algorithm_confusion_hs256_signed_with_the_public_key_is_refused(request, database, rsa_keys, fixture):
    """The classic attack: the public key is public, so an HS256 token keyed with its PEM must fail."""
    target = request.getfixturevalue(fixture)
    public_pem = rsa_keys[1].encode()
    for key in (public_pem, public_pem.strip(), public_pem.replace(b"\n", b"")):
        forged = _raw_token({"alg": "HS256", "typ": "JWT"}, _claims(),
                            signer=lambda data, k=key: hmac.new(k, data, hashlib.sha256).digest())
        _assert_401(_get(target, "Patient", f"Bearer {forged}"))


@SQLITE_ONLY
def test_dual_configuration_accepts_both_real_algorithms(dual_client, rsa_keys):
    rs = mint_token({"actor": "system", "sub": "rs"}, private_key=rsa_keys[0])
    hs = mint_token({"actor": "system", "sub": "hs"}, secret=SECRET)
    assert _get(dual_client, "Patient", f"Bearer {rs}").status_code == 200
    assert _get(dual_client, "Patient", f"Bearer {hs}").status_code == 200


@SQLITE_ONLY
def test_server_without_any_key_refuses_every_token(settings, database):
    keyless = replace(settings, jwt_secret=None, jwt_public_key=None)
    client = FhirTestClient(create_app(keyless, database=database).test_client(), SECRET)
    _assert_401(client.get("Patient"))
    assert client.get("metadata", auth=False).status_code == 200


# -- claims -----------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [None, "", 0, 42, ["professional"], {"kind": "system"}])
@SQLITE_ONLY
def test_missing_or_malformed_actor_claim_is_401(client, actor):
    claims = _claims()
    if actor is None:
        del claims["actor"]
    else:
        claims["actor"] = actor
    body = _assert_401(_get(client, "Patient", f"Bearer {_hs256(claims)}"))
    assert "actor" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("purpose", ["HACK", "treat", "EMERGENCY", "TREAT ", "ALL", 1, ["TREAT"], None, ""])
def test_unknown_purpose_of_use_is_401(client, app, purpose):
    """A purpose that is not exactly TREAT, ETREAT or BTG makes the token invalid (dmp-reference.md 2)."""
    before = _versions(app)
    token = _hs256(_claims(purpose_of_use=purpose))
    body = _assert_401(_get(client, "Patient", f"Bearer {token}"))
    assert "purpose_of_use" in body["issue"][0]["diagnostics"]
    _assert_401(client.post("Patient", patient(), auth=False, headers={"Authorization": f"Bearer {token}"}))
    assert _versions(app) == before


@pytest.mark.parametrize("actor,specialty", [("insurer", None), ("employer", None), ("professional", "SM25")])
def test_refused_actor_with_a_bad_purpose_is_refused_before_its_request(client, app, actor, specialty):
    """Refusal comes first: a refused caller learns nothing about its request. Its token is invalid (401, the
    claims are checked before anything reads them); with a well-formed purpose, it is the refused actor's 403."""
    before = _versions(app)
    extra = {"specialty": specialty} if specialty else {}
    sub = "810009999999" if actor == "professional" else "x"
    token = _hs256(_claims(actor=actor, sub=sub, purpose_of_use="HACK", **extra))
    _assert_401(_get(client, "Patient", f"Bearer {token}"))
    token = _hs256(_claims(actor=actor, sub=sub, purpose_of_use="BTG", **extra))  # BTG without its reason
    _assert_outcome(_get(client, "Patient", f"Bearer {token}"), 403, "forbidden")
    assert _versions(app) == before


@pytest.mark.parametrize("purpose", ["TREAT", "ETREAT", "BTG"])
@SQLITE_ONLY
def test_known_purposes_of_use_are_accepted(client, purpose):
    token = _hs256(_claims(actor="professional", sub="810001234567", profession="10",
                           purpose_of_use=purpose, access_reason="urgence"))
    assert _get(client, "Practitioner", f"Bearer {token}").status_code == 200


# -- refused actors: 403 on every interaction, nothing written -----------------------------------

REFUSED = [
    pytest.param({"actor": "insurer", "sub": "CPAM-75"}, id="insurer"),
    pytest.param({"actor": "employer", "sub": "ACME"}, id="employer"),
    pytest.param({"actor": "occupational-physician", "sub": "810009999999"}, id="occupational-physician"),
    pytest.param({"actor": "professional", "sub": "810009999999", "profession": "10", "specialty": "SM25"},
                 id="occupational-medicine-SM25"),
    pytest.param({"actor": "system", "sub": "x", "specialty": "SM25"}, id="system-with-SM25"),
]
# Tokens whose claims are not of their shape (dmp-reference.md 2): invalid, 401, whatever they ask.
MALFORMED = [
    pytest.param({"actor": "hacker", "sub": "x"}, id="unknown-actor"),
    pytest.param({"actor": "Professional", "sub": "810001234567"}, id="actor-case-differs"),
    pytest.param({"actor": "system ", "sub": "x"}, id="actor-trailing-space"),
    pytest.param({"actor": "professional", "sub": "810009999999", "profession": "10", "specialty": " SM25"},
                 id="SM25-with-a-space"),
    pytest.param({"actor": "professional", "sub": "810009999999", "profession": "10", "specialty": ["SM26", "SM25"]},
                 id="SM25-in-a-list"),
]


@pytest.fixture
def seeded(client) -> str:
    """A Patient that exists, so that a refusal is not confused with a 404."""
    created = client.post("Patient", patient())
    assert created.status_code == 201
    return json_of(created)["id"]


def _transaction(pid: str) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6a0f4c3e-8d0b-4d6e-9b0c-1e2f3a4b5c6d", "resource": patient("1800175999999"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**patient(), "id": pid}, "request": {"method": "PUT", "url": f"Patient/{pid}"}},
    ]}


@pytest.mark.parametrize("claims,status", [*((p.values[0], 403) for p in REFUSED),
                                           *((p.values[0], 401) for p in MALFORMED)],
                         ids=[*(p.id for p in REFUSED), *(p.id for p in MALFORMED)])
def test_refused_actor_is_403_on_every_interaction(client, app, seeded, claims, status):
    """A refused actor is 403 everywhere, a malformed token 401 everywhere; neither writes anything."""
    refused = client.as_(**claims)
    before = _versions(app)
    attempts = {
        "read": refused.get(f"Patient/{seeded}"),
        "vread": refused.get(f"Patient/{seeded}/_history/1"),
        "search": refused.get("Patient?identifier=1800175123456"),
        "search-post": refused.post("Patient/_search", raw=b"identifier=1800175123456",
                                    content_type="application/x-www-form-urlencoded"),
        "create": refused.post("Patient", patient("1800175000001")),
        "update": refused.put(f"Patient/{seeded}", {**patient(), "id": seeded}),
        "patch": refused.patch(f"Patient/{seeded}", [{"op": "replace", "path": "/gender", "value": "male"}]),
        "delete": refused.delete(f"Patient/{seeded}"),
        "transaction": refused.post("/fhir", _transaction(seeded)),
        "batch": refused.post("/fhir", {**_transaction(seeded), "type": "batch"}),
        "history-instance": refused.get(f"Patient/{seeded}/_history"),
        "history-type": refused.get("Patient/_history"),
        "history-system": refused.get("_history"),
        "document-search": refused.get(f"DocumentReference?patient={seeded}"),
    }
    for name, response in attempts.items():
        body = _assert_outcome(response, status, "forbidden" if status == 403 else "login")
        assert "Traceback" not in body["issue"][0]["diagnostics"], name
    assert _versions(app) == before
    # the DMP is untouched
    current = json_of(client.get(f"Patient/{seeded}"))
    assert current["meta"]["versionId"] == "1" and current["gender"] == "female"


@pytest.mark.parametrize("claims,status", [*((p.values[0], 403) for p in REFUSED),
                                           *((p.values[0], 401) for p in MALFORMED)],
                         ids=[*(p.id for p in REFUSED), *(p.id for p in MALFORMED)])
def test_refused_actor_is_403_whatever_it_asks(client, app, claims, status):
    """'Never allowed in, whatever they ask': a malformed body or an unknown type does not change the answer."""
    refused = client.as_(**claims)
    before = _versions(app)
    code = "forbidden" if status == 403 else "login"
    _assert_outcome(refused.get("NotAType/1"), status, code)
    _assert_outcome(refused.post("Patient", raw=b"{not json"), status, code)
    _assert_outcome(refused.post("Patient", {"resourceType": "Patient", "gender": "robot"}), status, code)
    _assert_outcome(refused.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Nope"}}]}), status, code)
    assert _versions(app) == before


@SQLITE_ONLY
def test_refused_specialty_diagnostics_name_occupational_medicine(client):
    body = _assert_outcome(client.as_(actor="professional", sub="810009999999", specialty="SM25").get("Practitioner"),
                           403, "forbidden")
    assert "SM25" in body["issue"][0]["diagnostics"]


ALLOWED = [
    pytest.param({"actor": "professional", "sub": "810001234567", "profession": "10", "specialty": "SM26"},
                 id="general-practitioner"),
    pytest.param({"actor": "professional", "sub": "810001234568", "profession": "60"}, id="nurse"),
    pytest.param({"actor": "patient", "sub": "1800175123456", "patient": "1800175123456"}, id="patient"),
    pytest.param({"actor": "representative", "sub": "rep-1", "patient": "1800175123456"}, id="representative"),
    pytest.param({"actor": "system", "sub": "test-suite"}, id="system"),
]


@pytest.mark.parametrize("claims", ALLOWED)
def test_allowed_actors_get_through(client, seeded, claims):
    """Allowed actors pass the gate: the directory (outside any DMP) answers them; what they may do in a
    DMP is the access policy's, tested in tests/policy."""
    caller = client.as_(**claims)
    assert caller.get("Practitioner").status_code == 200
    assert caller.get("Organization?name=x").status_code == 200


@SQLITE_ONLY
def test_doctor_fixture_claims_are_admitted(client):
    assert client.as_(**DOCTOR).get("Practitioner").status_code == 200


# -- metadata and leaks -----------------------------------------------------------------------


def test_metadata_needs_no_token(client):
    response = client.get("metadata", auth=False)
    assert response.status_code == 200
    assert json_of(response)["resourceType"] == "CapabilityStatement"
    assert "WWW-Authenticate" not in response.headers


@SQLITE_ONLY
def test_metadata_ignores_a_bad_token(client):
    assert _get(client, "metadata", "Bearer garbage").status_code == 200


@SQLITE_ONLY
def test_401_never_leaks_internals(client):
    tokens = ["garbage", _hs256(_claims(), secret="x" * 40), _raw_token({"alg": "none"}, _claims()),
              _b64(b"{") + ".e30.", "\u00e9\u00e8.\u00e0.\u00f9"]
    for token in tokens:
        try:
            response = _get(client, "Patient", f"Bearer {token}")
        except (UnicodeEncodeError, ValueError):
            continue  # the test client itself cannot send non-latin-1 headers
        body = _assert_401(response)
        text = response.get_data(as_text=True)
        for leak in ("Traceback", "site-packages", ".py", SECRET, "jwt.exceptions"):
            assert leak not in text, (leak, text)
        assert body["issue"][0]["diagnostics"]


@SQLITE_ONLY
def test_401_in_xml_is_an_operation_outcome(client):
    response = client.get("Patient", auth=False, headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/fhir+xml")
    assert b"OperationOutcome" in response.data and b"login" in response.data
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
