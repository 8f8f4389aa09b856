"""`$validate` on the stored types (R4 OperationDefinition Resource-validate): a resource, POSTed alone or in a
Parameters (`resource`, `profile`, `mode`), or the stored `[type]/[id]` as the caller may read it
(`FhirService.current`: a hidden resource is a 404), checked against R4's structure and a profile: the one
named, else the shipped DMP profile(s) of the type. The answer is a 200 OperationOutcome listing every issue,
or one information issue. Ordinary writes are not checked against the profiles (only here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_dmp import fhirjson
from fhir_dmp.errors import Issue, bad_request, not_found, operation_outcome
from fhir_dmp.services.guard import Guard
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fhir_dmp.services.interactions import FhirService

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
_MODES = ("create", "update", "profile")


def validate(service: FhirService, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
    rtype = req.resource_type or ""
    if req.method != "POST" and not (req.method == "GET" and req.id):
        raise method_not_allowed(req)
    resource, profile, mode = _arguments(req)
    if mode is not None and mode not in _MODES:
        raise bad_request(f"$validate: mode '{mode}' is not supported (supported: {', '.join(_MODES)})", "mode",
                          code="not-supported")
    if req.id:
        stored = service.current(conn, guard, req)
        if resource is None:
            if stored.deleted or stored.content is None:
                raise not_found(f"{rtype}/{req.id} was deleted")
            resource = fhirjson.loads(stored.content)
    else:
        guard.touch("", query="&".join(f"{k}={v}" for k, v in req.query))
    if resource is None:
        raise bad_request("$validate: give the resource to validate", "resource", code="required")
    if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
        raise bad_request(f"$validate on {rtype}: the resource is not a {rtype}", "resource")
    sds = _profiles(service.conformance, rtype, profile)
    return FhirResponse(200, operation_outcome(issues_of(service.conformance, resource, sds)))


def issues_of(conf: Conformance, resource: dict, sds: list[dict]) -> list[Issue]:
    issues = list(validate_structure(resource))
    for sd in sds:
        issues += validate_profile(conf, sd, resource).issues
    return issues or [Issue("informational", "No issues detected during validation", severity="information")]


def default_profiles(conf: Conformance, rtype: str) -> list[dict]:
    """The shipped profiles constraining a type (those the CapabilityStatement names as supportedProfile)."""
    return [sd for sd in conf.all("StructureDefinition") if sd.get("kind") == "resource"
            and sd.get("derivation") == "constraint" and sd.get("type") == rtype]


def _profiles(conf: Conformance, rtype: str, profile: str | None) -> list[dict]:
    if profile is None:
        return default_profiles(conf, rtype)
    sd = conf.resolve("StructureDefinition", profile)
    if sd is None:
        raise not_found(f"$validate: profile {profile} is not known to this server")
    if sd.get("type") != rtype:
        raise bad_request(f"$validate: profile {profile} is for {sd.get('type')}, not {rtype}", "profile")
    return [sd]


def _arguments(req: FhirRequest) -> tuple[Any, str | None, str | None]:
    query = dict(req.query)
    profile, mode = query.get("profile"), query.get("mode")
    body = req.body
    if body is None or body == b"" or req.method == "GET":
        return None, profile, mode
    if not isinstance(body, dict):
        raise bad_request("$validate takes a JSON or XML resource or Parameters", code="structure")
    if body.get("resourceType") != "Parameters" or req.resource_type == "Parameters":
        return body, profile, mode
    resource = None
    for i, p in enumerate(body.get("parameter") if isinstance(body.get("parameter"), list) else [None]):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise bad_request(f"{where} needs a name", where, code="structure")
        if p["name"] == "resource":
            resource = p.get("resource")
        elif p["name"] in ("profile", "mode"):
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if not isinstance(value, str):
                raise bad_request(f"{where}: '{p['name']}' must be a uri or code", where)
            profile, mode = (value, mode) if p["name"] == "profile" else (profile, value)
        elif req.strict:
            raise bad_request(f"$validate has no parameter '{p['name']}'", where, code="not-supported")
    return resource, profile, mode
