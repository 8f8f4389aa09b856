"""SMART on FHIR discovery: `[base]/.well-known/smart-configuration` and the CapabilityStatement's `security`.

The endpoints are the first configured issuer's (`FHIR_DMP_OIDC_ISSUER`), read from its OpenID configuration, which
the token verification fetches anyway (once per process). What this server supports (capabilities, scopes) is data:
`data/smart-scopes.json`; what the issuer must deliver (an id_token for `openid`, its `fhirUser` claim, the `patient`
launch context for `launch/patient`, a refresh token for `offline_access`) is claimed only when the issuer's own
discovery lists the scope: a server never advertises what it does not deliver. Source: SMART App Launch 2.0,
Conformance ("FHIR Authorization Endpoint and Capabilities Discovery using a Well-Known Uniform Resource
Identifiers"), and for the CapabilityStatement the `oauth-uris` extension and the `SMART-on-FHIR` code of the
restful-security-service code system.
"""

from __future__ import annotations

import copy

from fhir_dmp.errors import FhirError, not_found
from fhir_dmp.policy.scopes import rules
from fhir_dmp.services.identity import TokenKeys
from fhir_dmp.services.oidc import Issuer

SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")  # the options SMART names
GRANT_TYPES = ("authorization_code", "client_credentials")  # SMART App Launch, SMART Backend Services
APP_LAUNCH = ("launch-standalone", "launch-ehr", "client-public", "context-standalone-patient", "sso-openid-connect")
# the issuer's optional endpoints SMART names, passed on as its discovery gives them
PASSED_ON = ("registration_endpoint", "introspection_endpoint", "revocation_endpoint")


def smart_issuer(keys: TokenKeys) -> Issuer | None:
    """The issuer a SMART client is sent to: the first configured one."""
    return next(iter(keys.issuers.values()), None)


def configuration(issuer: Issuer | None) -> dict:
    """The `.well-known/smart-configuration` document (404 without an issuer; 503 when it cannot be reached)."""
    if issuer is None:
        raise not_found("No OpenID Connect issuer is configured (FHIR_DMP_OIDC_ISSUER): this server takes "
                        "development tokens only, and has no SMART authorization server")
    found = issuer.discovery()
    table = rules()
    methods = [m for m in found.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
               if m in AUTH_METHODS]
    offered = found.get("grant_types_supported")
    grants = [g for g in GRANT_TYPES if not isinstance(offered, list) or g in offered]
    capabilities, supported = list(table.capabilities), list(table.scopes_supported)
    listed = found.get("scopes_supported")
    listed = set(listed) if isinstance(listed, list) else set()
    for scope, needing in table.issuer_scopes.items():
        if scope not in listed:  # the issuer's to deliver, and it does not say it does: neither claimed here
            capabilities = [c for c in capabilities if c not in needing]
            supported = [s for s in supported if s != scope]
    if not found.get("authorization_endpoint") or "authorization_code" not in grants:
        # SMART: authorization_endpoint is required with launch-standalone; no app launch without it
        capabilities = [c for c in capabilities if c not in APP_LAUNCH]
    if "private_key_jwt" in methods:  # SMART Backend Services' client authentication (asymmetric keys)
        capabilities.append("client-confidential-asymmetric")
    document = {
        "issuer": issuer.url,
        "jwks_uri": found["jwks_uri"],
        "authorization_endpoint": found.get("authorization_endpoint"),
        "token_endpoint": found.get("token_endpoint"),
        "grant_types_supported": grants,
        "token_endpoint_auth_methods_supported": methods,
        "token_endpoint_auth_signing_alg_values_supported": (
            found.get("token_endpoint_auth_signing_alg_values_supported") if "private_key_jwt" in methods else None),
        **{key: found.get(key) for key in PASSED_ON},
        "scopes_supported": supported,
        "response_types_supported": ["code"],
        "capabilities": capabilities,
        "code_challenge_methods_supported": ["S256"],
    }
    return {k: v for k, v in document.items() if v is not None}


def security(base: dict, issuer: Issuer | None) -> dict:
    """The CapabilityStatement's `rest.security`: the fixed text of capability-base.json, plus, with an issuer,
    the SMART-on-FHIR service and its authorize and token endpoints (omitted while the issuer cannot be reached:
    the CapabilityStatement must answer whatever the issuer does)."""
    out = copy.deepcopy(base)
    if issuer is None:
        return out
    out["service"] = [*out.get("service", []), {
        "coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR", "display": "SMART-on-FHIR"}],
        "text": f"OpenID Connect and SMART on FHIR scopes (issuer {issuer.url})"}]
    try:
        found = issuer.discovery()
    except FhirError:
        return out
    uris = [{"url": name, "valueUri": found[key]} for name, key in (("authorize", "authorization_endpoint"),
                                                                    ("token", "token_endpoint")) if found.get(key)]
    if uris:
        out["extension"] = [*out.get("extension", []), {"url": OAUTH_URIS, "extension": uris}]
    return out
