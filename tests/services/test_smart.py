"""The `.well-known/smart-configuration` document (services/smart.py) against SMART App Launch 2.0's Conformance
page (tests/data/reference/smart-app-launch/conformance.md): its required fields, and what it says following what
the issuer's own discovery document offers."""

from __future__ import annotations

from fhir_dmp.policy.mappings import load_mapping
from fhir_dmp.services.oidc import Issuer
from fhir_dmp.services.smart import configuration

URL = "https://idp.example.test"
BASE = {"issuer": URL, "jwks_uri": f"{URL}/jwks", "authorization_endpoint": f"{URL}/authorize",
        "token_endpoint": f"{URL}/token", "scopes_supported": ["openid", "fhirUser", "launch/patient", "profile"]}


def _issuer(**discovery: object) -> Issuer:
    """An issuer whose discovery document is already known (as after its first fetch)."""
    return Issuer(URL, "fhir-dmp", load_mapping("dmp"), _discovery={**BASE, **discovery})


def test_the_required_fields_are_there():
    document = configuration(_issuer())
    for field in ("issuer", "jwks_uri", "authorization_endpoint", "token_endpoint", "grant_types_supported",
                  "capabilities", "code_challenge_methods_supported"):
        assert document.get(field), field
    assert document["code_challenge_methods_supported"] == ["S256"]  # S256, never plain
    assert {"launch-standalone", "sso-openid-connect"} <= set(document["capabilities"])
    assert "client-confidential-asymmetric" not in document["capabilities"]


def test_the_grant_types_are_those_the_issuer_offers():
    document = configuration(_issuer(grant_types_supported=["client_credentials", "refresh_token"]))
    assert document["grant_types_supported"] == ["client_credentials"]
    # no authorization code: no app launch capability (authorization_endpoint is required with launch-standalone)
    assert not {"launch-standalone", "client-public", "context-standalone-patient"} & set(document["capabilities"])


def test_without_an_authorization_endpoint_no_launch_is_claimed():
    issuer = _issuer()
    assert issuer._discovery is not None
    del issuer._discovery["authorization_endpoint"]
    document = configuration(issuer)
    assert "authorization_endpoint" not in document and "launch-standalone" not in document["capabilities"]


def test_private_key_jwt_is_the_asymmetric_capability_with_its_algorithms():
    document = configuration(_issuer(token_endpoint_auth_methods_supported=["private_key_jwt", "none"],
                                     token_endpoint_auth_signing_alg_values_supported=["RS384", "ES384"],
                                     revocation_endpoint=f"{URL}/revoke", introspection_endpoint=f"{URL}/introspect"))
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]  # the options SMART names
    assert "client-confidential-asymmetric" in document["capabilities"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert document["revocation_endpoint"] == f"{URL}/revoke"
    assert document["introspection_endpoint"] == f"{URL}/introspect"


def test_what_the_issuer_must_deliver_is_claimed_only_when_its_discovery_lists_it():
    """An id_token with fhirUser (sso-openid-connect) and the token response's patient (context-standalone-patient)
    are the issuer's to deliver: claimed only when its discovery lists `openid` and `fhirUser`, `launch/patient`."""
    full = configuration(_issuer())
    assert {"sso-openid-connect", "context-standalone-patient"} <= set(full["capabilities"])
    assert {"openid", "fhirUser", "launch/patient"} <= set(full["scopes_supported"])
    assert "offline_access" not in full["scopes_supported"]  # not listed by the issuer: no refresh token promised
    issuer = _issuer()
    assert issuer._discovery is not None
    del issuer._discovery["scopes_supported"]  # RECOMMENDED only: an issuer that does not say, promises nothing
    bare = configuration(issuer)
    assert not {"sso-openid-connect", "context-standalone-patient"} & set(bare["capabilities"])
    assert not {"openid", "fhirUser", "launch/patient", "offline_access"} & set(bare["scopes_supported"])
    assert {"launch-standalone", "permission-v2"} <= set(bare["capabilities"])  # this server's own: still there
    assert "patient/*.rs" in bare["scopes_supported"]
    openid_only = configuration(_issuer(scopes_supported=["openid", "launch/patient"]))  # no fhirUser claim
    assert "sso-openid-connect" not in openid_only["capabilities"]
    assert "context-standalone-patient" in openid_only["capabilities"]
    assert "fhirUser" not in openid_only["scopes_supported"]
    odd = configuration(_issuer(scopes_supported="openid fhirUser launch/patient"))  # not a list: not read
    assert "sso-openid-connect" not in odd["capabilities"]
