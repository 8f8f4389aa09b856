"""`$validate` on the stored types (R4 OperationDefinition Resource-validate): a resource, POSTed alone or in a
Parameters (`resource`, `profile`, `mode`), or the stored `[type]/[id]` as the caller may read it (a hidden
resource is a 404), checked against R4's structure and a profile (`validating.py`)."""

from __future__ import annotations

from typing import Any

from fhir_dmp import fhirjson
from fhir_dmp.errors import bad_request, not_found, operation_outcome
from fhir_dmp.services import reads, validating, writes
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit

DEFINITION = validating.DEFINITION
_MODES = validating.MODES


def validate(u: Unit, req: FhirRequest) -> FhirResponse:
    rtype = req.resource_type or ""
    if req.method != "POST" and not (req.method == "GET" and req.id):
        raise method_not_allowed(req)
    resource, profile, mode = _arguments(req)
    if mode is not None and mode not in _MODES:
        raise bad_request(f"$validate: mode '{mode}' is not supported (supported: {', '.join(_MODES)})", "mode",
                          code="not-supported")
    if req.id:
        stored = reads.current(u, req)
        if resource is None:
            if stored.deleted or stored.content is None:
                raise not_found(f"{rtype}/{req.id} was deleted")
            resource = reads.lists_shown(u, [stored])[0] or fhirjson.loads(stored.content)  # as they may read it
    else:
        u.touch("", query=req.query_text)
    if resource is None:
        raise bad_request("$validate: give the resource to validate", "resource", code="required")
    if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
        raise bad_request(f"$validate on {rtype}: the resource is not a {rtype}", "resource")
    sds = validating.profiles(u.rt.conformance, rtype, profile)
    bytes_of = writes.bytes_of(u)
    return FhirResponse(200, operation_outcome(validating.issues_of(u.rt.conformance, resource, sds, bytes_of)))


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
