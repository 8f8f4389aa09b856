"""Reading one resource: its DMP's facts and its row in two statements, the caller's scope in the second's WHERE
clause, so that a resource hidden from the caller is absent for them (6.8) with no second look. A List names other
resources: which of them the caller sees is one more statement, for all the Lists of an answer (`lists_shown`)."""

from __future__ import annotations

from collections.abc import Sequence

from fhir_dmp.errors import FhirError, not_found
from fhir_dmp.policy import lists
from fhir_dmp.policy.access import IDENTITY_ELEMENTS, named_scope, narrow
from fhir_dmp.search import shape
from fhir_dmp.services import content
from fhir_dmp.services.requests import FhirRequest, FhirResponse
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import resources
from fhir_dmp.storage.records import SYSTEM_SCOPE, Stored


def visible(u: Unit, resource_type: str, rid: str) -> Stored | None:
    """The current row as the caller may see it: None when it is absent or hidden from them (one answer);
    403 when its whole DMP is closed to them."""
    located = resources.locate(u.tx, resource_type, rid)
    if located is None:
        return None
    u.know_facts(located.patient_key, located.dmp_facts)
    u.touch(located.patient_key, f"{resource_type}/{rid}", facts=located.facts)
    scope = narrow(u.scope(u.require(located.patient_key)), resource_type)
    return resources.read_current(u.tx, resource_type, rid, scope=None if scope == SYSTEM_SCOPE else scope)


def current(u: Unit, req: FhirRequest) -> Stored:
    """The URL's resource as the caller may see it: 404 when absent or hidden, 403 for a DMP closed to them."""
    assert req.resource_type and req.id
    stored = visible(u, req.resource_type, req.id)
    if stored is None:
        raise not_found(f"{req.resource_type}/{req.id} does not exist")
    return stored


def shown(u: Unit, stored: Stored) -> dict:
    """A matched resource as the caller may see it: a Patient found by the existence check, by identity only; a
    List without the entries naming what the caller may not see."""
    if lists.shaped(u.caller, stored.resource_type):
        return lists_shown(u, [stored])[0] or content.resource_of(stored)
    resource = content.resource_of(stored)
    if stored.resource_type == "Patient":
        access = u.access(stored.patient_key)
        if access is not None and not access.is_open:
            return shape.subset(resource, None, IDENTITY_ELEMENTS)
    return resource


def lists_shown(u: Unit, rows: Sequence[Stored]) -> list[dict | None]:
    """Per row, a List as the caller may see it (policy/lists.py: the entries naming a resource outside their scope
    left out, hidden or absent alike), decided for all the Lists of an answer in one statement, the scope in its
    WHERE clause; None for any other row, and for every row to a system caller (then: as stored). A List is always
    answered from this parsed form, whether an entry was left out or not, so that both answer the same bytes."""
    out: list[dict | None] = [None] * len(rows)
    parsed = {i: (s.patient_key, content.resource_of(s)) for i, s in enumerate(rows)
              if s.content is not None and lists.shaped(u.caller, s.resource_type)}
    rows_at = list(parsed)
    for j, (resource, _) in _judged(u, list(parsed.values())).items():
        out[rows_at[j]] = resource
    return out


def list_as_shown(u: Unit, patient_key: str, resource: dict) -> tuple[dict, list[dict]]:
    """A List (`resource`, of DMP `patient_key`) as the caller may see it, and the entries left out of it."""
    return _judged(u, [(patient_key, resource)]).get(0, (resource, []))


def _judged(u: Unit, found: list[tuple[str, dict]]) -> dict[int, tuple[dict, list[dict]]]:
    """Each (DMP, List) as shown to the caller, with the entries left out: one statement for them all."""
    if not found or u.caller.is_system:
        return {}
    named = [lists.named(resource, u.req.base_url) for _, resource in found]
    keys = sorted({k for keys in named for k in keys if k is not None})
    scope = named_scope(u.scope_of({key for key, _ in found}))
    visible = resources.visible_keys(u.tx, keys, scope) if keys else set()
    return {i: (lists.shown(resource, named[i], visible), lists.left_out(resource, named[i], visible))
            for i, (_, resource) in enumerate(found)}


def read(u: Unit, req: FhirRequest) -> FhirResponse:
    stored = current(u, req)
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"{req.resource_type}/{req.id} was deleted",
                           headers={"ETag": f'W/"{stored.version_id}"'})
    headers = content.version_headers(stored, req.base_url)
    if req.if_none_match and _etag_matches(req.if_none_match, stored.version_id):
        return FhirResponse(304, None, headers)
    summary, elements = shape.requested(req.query)
    resource = lists_shown(u, [stored])[0]
    if summary is None and not elements:
        if resource is not None:
            return FhirResponse(200, resource, headers)
        if req.resource_type != "Binary":  # Binary: http/ may answer its bytes
            return FhirResponse(200, content.as_stored(stored), headers)
    return FhirResponse(200, shape.subset(resource or content.resource_of(stored), summary, elements), headers)


def vread(u: Unit, req: FhirRequest) -> FhirResponse:
    assert req.resource_type and req.id and req.version_id
    current(u, req)
    stored = resources.read_version(u.tx, req.resource_type, req.id, int(req.version_id))
    if stored is None:
        raise not_found(f"{req.resource_type}/{req.id} has no version {req.version_id}")
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"Version {req.version_id} of {req.resource_type}/{req.id} is a deletion")
    resource = lists_shown(u, [stored])[0] or content.resource_of(stored)
    return FhirResponse(200, resource, content.version_headers(stored, req.base_url))


def _etag_matches(header: str, version_id: int) -> bool:
    if header.strip() == "*":  # RFC 9110 13.1.2: any current representation matches
        return True
    return any(content.parse_etag(v, "If-None-Match") == version_id for v in header.split(",") if v.strip())
