"""`$validate` on the stored types (R4 OperationDefinition Resource-validate): a resource, POSTed alone or in a
Parameters (`resource`, `profile`, `mode`), or the stored `[type]/[id]` as the caller may read it
(`FhirService.current`: a hidden resource is a 404), checked against R4's structure and a profile: the one
named, else the shipped DMP profile(s) of the type. The answer is a 200 OperationOutcome listing every issue,
or one information issue.

Every write of a profiled type goes through `enforce` too: the type's DMP profile, any profile the resource
claims in `meta.profile` that this server ships, and the document rules no profile expresses
(`validation/documents.py`). One 422 lists every error, so a vendor fixes everything in one round; warnings
do not refuse a write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, Issue, bad_request, not_found, operation_outcome
from fhir_dmp.services.guard import Guard
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.terminology.classes import codings
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.validation import documents
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fhir_dmp.services.interactions import FhirService

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
ITI65_PROFILE = "https://fhir-dmp.example.org/StructureDefinition/dmp-iti65-bundle"
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
    bytes_of = service.bytes_of(conn, guard, req.base_url)
    return FhirResponse(200, operation_outcome(issues_of(service.conformance, resource, sds, bytes_of)))


def issues_of(conf: Conformance, resource: dict, sds: list[dict],
              bytes_of: documents.BytesOf = lambda _url: None) -> list[Issue]:
    """Every issue, warnings and information included (`$validate`'s answer)."""
    issues = list(validate_structure(resource))
    for sd in sds:
        issues += validate_profile(conf, sd, resource).issues
    issues += rule_issues(conf, resource, bytes_of)
    return issues or [Issue("informational", "No issues detected during validation", severity="information")]


def conformity_issues(conf: Conformance, resource: dict, bytes_of: documents.BytesOf) -> list[Issue]:
    """What refuses a write of `resource` (already structurally valid): its profiles' and the DMP rules'
    errors, warnings left out."""
    issues = [i for sd in write_profiles(conf, resource) for i in validate_profile(conf, sd, resource).issues]
    issues += rule_issues(conf, resource, bytes_of)
    return [i for i in issues if i.severity in ("error", "fatal")]


def enforce(conf: Conformance, resource: dict, bytes_of: documents.BytesOf) -> None:
    issues = conformity_issues(conf, resource, bytes_of)
    if issues:
        raise FhirError(422, issues)


def rule_issues(conf: Conformance, resource: dict, bytes_of: documents.BytesOf) -> list[Issue]:
    if resource.get("resourceType") != "DocumentReference":
        return []
    return documents.class_issues(conf, resource) + documents.attachment_issues(resource, bytes_of)


def write_profiles(conf: Conformance, resource: dict) -> list[dict]:
    """The type's DMP profile(s), and those it claims (`meta.profile`) that this server ships."""
    sds = default_profiles(conf, str(resource.get("resourceType")))
    return sds + [sd for sd in claimed_profiles(conf, resource) if all(sd is not s for s in sds)]


def claimed_profiles(conf: Conformance, resource: dict) -> list[dict]:
    """The shipped profiles of its type a resource names in `meta.profile` (others are not known here)."""
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) and isinstance(meta.get("profile"), list) else []
    sds = [conf.resolve("StructureDefinition", url) if isinstance(url, str) else None for url in claimed]
    return [sd for sd in sds if sd is not None and sd.get("type") == resource.get("resourceType")]


def bundle_issues(conf: Conformance, bundle: object) -> list[Issue]:
    """A transaction against the profiles it claims, and an ITI-65 (it carries a SubmissionSet List) against
    the DMP's ITI-65 profile: errors only."""
    if not isinstance(bundle, dict):
        return []
    sds = claimed_profiles(conf, bundle)
    iti65 = conf.resolve("StructureDefinition", ITI65_PROFILE)
    if iti65 is not None and _is_iti65(bundle) and all(sd is not iti65 for sd in sds):
        sds.append(iti65)
    issues = [i for sd in sds for i in validate_profile(conf, sd, bundle).issues]
    return [i for i in issues if i.severity in ("error", "fatal")]


def _is_iti65(bundle: dict) -> bool:
    entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
    resources = [e.get("resource") for e in entries if isinstance(e, dict)]
    return any(isinstance(r, dict) and r.get("resourceType") == "List"
               and any(c.get("code") == "submissionset" for c in codings(r.get("code"))) for r in resources)


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
