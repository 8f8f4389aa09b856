"""Issuer configuration and failures that need no provider running (services/oidc.py, services/identity.py);
the provider's own tests run end to end in tests/e2e/test_oidc.py."""

from __future__ import annotations

import time

import jwt
import pytest

from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.services.identity import caller_from_header, load_keys, mint_token, token_sources
from tests.serving import free_port

SECRET = "oidc-test-secret-at-least-thirty-two-bytes"
DOCTOR = {"actor": "professional", "sub": "810001234567", "profession": "10"}


def settings(**overrides: object) -> Settings:
    return Settings(jwt_secret=SECRET, **overrides)  # type: ignore[arg-type]


def test_each_issuer_gets_its_audience_and_mapping():
    keys = load_keys(settings(oidc_issuers=("https://a.example", "https://b.example"),
                              oidc_audiences=("fhir-dmp",), oidc_claims=("psc", "patient+system")))
    assert [(i.url, i.audience, i.mapping.name) for i in keys.issuers.values()] == [
        ("https://a.example", "fhir-dmp", "psc"), ("https://b.example", "fhir-dmp", "patient+system")]
    assert token_sources(keys)[-1] == "shared secret (FHIR_DMP_JWT_SECRET, HS256)"
    assert load_keys(settings(oidc_issuers=("https://a.example",), oidc_audiences=("x",))).issuers[
        "https://a.example"].mapping.name == "dmp"


@pytest.mark.parametrize("overrides", [
    {"oidc_issuers": ("https://a.example",)},  # no audience
    {"oidc_issuers": ("https://a", "https://b", "https://c"), "oidc_audiences": ("x", "y")},
    {"oidc_issuers": ("https://a",), "oidc_audiences": ("x",), "oidc_claims": ("nope",)},
    {"oidc_issuers": ("https://a",), "oidc_audiences": ("x",), "oidc_leeway": 86400},  # a day-old token accepted
    {"oidc_issuers": ("https://a",), "oidc_audiences": ("x",), "oidc_leeway": -30},
    {"oidc_issuers": ("https://a",), "oidc_audiences": ("x",), "oidc_jwks_lifespan": 0},
    {"oidc_issuers": ("https://a",), "oidc_audiences": ("x",), "oidc_refresh_cooldown": float("nan")},
    {"oidc_issuers": ("https://a",), "oidc_audiences": ("x",), "oidc_refresh_cooldown": -1},
    {"oidc_issuers": ("https://a", "https://a"), "oidc_audiences": ("x",), "oidc_claims": ("psc", "dmp")},
    {"oidc_issuers": ("file:///etc/idp",), "oidc_audiences": ("x",)},
    {"oidc_issuers": ("idp.example",), "oidc_audiences": ("x",)},
])
def test_a_configuration_that_does_not_fit_is_refused_at_start(overrides):
    with pytest.raises(ValueError):
        load_keys(settings(**overrides))


def test_settings_read_several_issuers_from_the_environment(monkeypatch):
    monkeypatch.setenv("FHIR_DMP_OIDC_ISSUER", "https://a.example, https://b.example")
    monkeypatch.setenv("FHIR_DMP_OIDC_AUDIENCE", "fhir-dmp")
    monkeypatch.setenv("FHIR_DMP_OIDC_LEEWAY", "5")
    read = Settings.from_env()
    assert (read.oidc_issuers, read.oidc_audiences, read.oidc_leeway) == (
        ("https://a.example", "https://b.example"), ("fhir-dmp",), 5)


def test_shared_secret_tokens_keep_working_beside_issuers_and_other_issuers_are_refused():
    keys = load_keys(settings(oidc_issuers=("https://a.example",), oidc_audiences=("x",)))
    assert caller_from_header(f"Bearer {mint_token(DOCTOR, secret=SECRET)}", keys).sub == "810001234567"
    foreign = mint_token({**DOCTOR, "iss": "https://elsewhere.example"}, secret=SECRET)
    with pytest.raises(FhirError) as refused:
        caller_from_header(f"Bearer {foreign}", keys)
    assert refused.value.status == 401 and "not one this server trusts" in refused.value.issues[0].diagnostics


def test_a_shared_secret_token_with_scopes_carries_them():
    keys = load_keys(settings())
    caller = caller_from_header(f"Bearer {mint_token({**DOCTOR, 'scope': 'user/*.rs'}, secret=SECRET)}", keys)
    assert caller.scopes is not None and caller.scopes.text == "user/*.rs"
    for bad in (["user/*.rs"], "user/*.rs  openid"):
        with pytest.raises(FhirError) as refused:
            caller_from_header(f"Bearer {mint_token({**DOCTOR, 'scope': bad}, secret=SECRET)}", keys)
        assert refused.value.status == 401


def test_an_issuer_that_cannot_be_reached_is_a_503_not_a_401():
    url = f"http://127.0.0.1:{free_port()}"
    keys = load_keys(settings(oidc_issuers=(url,), oidc_audiences=("x",)))
    now = int(time.time())
    token = jwt.encode({"iss": url, "aud": "x", "sub": "a", "iat": now, "exp": now + 60}, "k" * 32,
                       algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(FhirError) as refused:  # HS256 under an issuer: refused before any network call
        caller_from_header(f"Bearer {token}", keys)
    assert refused.value.status == 401
    rs = jwt.encode({"iss": url, "aud": "x", "sub": "a", "iat": now, "exp": now + 60},
                    _private_pem(), algorithm="RS256", headers={"kid": "k1"})
    for _ in range(2):  # the second within the cooldown: no new attempt, still 503
        with pytest.raises(FhirError) as unavailable:
            caller_from_header(f"Bearer {rs}", keys)
        assert unavailable.value.status == 503 and unavailable.value.headers["Retry-After"]


def _private_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def test_serve_refuses_an_issuer_configuration_that_does_not_fit(tmp_path):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from fhir_dmp.cli import main

    env = {"FHIR_DMP_JWT_SECRET": None, "FHIR_DMP_OIDC_ISSUER": "https://a.example", "FHIR_DMP_OIDC_AUDIENCE": None}
    result = CliRunner().invoke(main, ["serve", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"], env=env)
    assert result.exit_code == 78, result.output
    assert "FHIR_DMP_OIDC_AUDIENCE" in result.output
    assert not (tmp_path / "x.db").exists()


def test_a_discovery_naming_an_unusable_jwks_uri_is_a_503():
    keys = load_keys(settings(oidc_issuers=("https://a.example",), oidc_audiences=("x",)))
    issuer = keys.issuers["https://a.example"]
    issuer._discovery = {"issuer": "https://a.example", "jwks_uri": "file:///etc/passwd"}
    now = int(time.time())
    rs = jwt.encode({"iss": "https://a.example", "aud": "x", "sub": "a", "iat": now, "exp": now + 60},
                    _private_pem(), algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(FhirError) as unavailable:
        caller_from_header(f"Bearer {rs}", keys)
    assert unavailable.value.status == 503
