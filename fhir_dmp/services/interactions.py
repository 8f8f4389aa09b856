"""The REST interactions that write: create, update, patch, delete, plain and conditional, each composing the
write pipeline's stages (`writes.py`) with the lookups it needs (`reads.py`, `conditions.py`)."""

from __future__ import annotations

from fhir_dmp.errors import FhirError, bad_request, not_found, unprocessable
from fhir_dmp.services import conditions, content, ins, mhd, patching, reads, writes
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage.records import Stored


def create(u: Unit, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    body = writes.parsed(u, req.body, req.resource_type)
    # `POST Patient?identifier=...` (fhirpy's get-or-create) means the same as If-None-Exist: ignoring the query
    # would silently open a second DMP for one INS.
    condition = req.if_none_exist or conditions.in_url(req)
    if condition:
        existing = existing_match(u, req.resource_type, condition, "If-None-Exist")
        if existing is not None:
            return FhirResponse(200, reads.shown(u, existing),
                                content.version_headers(existing, req.base_url, location=True))
    writes.conform(u, body)
    return writes.store_new(u, req, body, req.assigned_id)


def existing_match(u: Unit, resource_type: str, condition: str, what: str) -> Stored | None:
    """A conditional create's match. A Patient's condition takes its INS locks first (see `ins.claim_ins`)."""
    if resource_type == "Patient":
        ins.lock_condition_ins(u, condition)
    return conditions.match(u, resource_type, condition, what)


def update(u: Unit, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    body = writes.parsed(u, req.body, req.resource_type)
    if req.id is None:
        return _conditional_update(u, req, body)
    if body.get("id") is None:
        raise bad_request("The resource in an update must carry its id", f"{req.resource_type}.id")
    if body.get("id") != req.id:
        raise bad_request(f"The body's id {body.get('id')!r} differs from the URL's {req.id!r}",
                          f"{req.resource_type}.id")
    writes.lock_for_write(u, req)
    stored = reads.visible(u, req.resource_type, req.id)
    if stored is None:  # absent or hidden from the caller: one answer
        raise method_not_allowed(req, diagnostics=f"{req.resource_type}/{req.id} does not exist and this server "
                                 "assigns ids itself: create it with POST")
    return writes.change(u, req, stored, body, "PUT")


def _conditional_update(u: Unit, req: FhirRequest, body: dict) -> FhirResponse:
    assert req.resource_type
    stored = conditions.match(u, req.resource_type, conditions.required(req), "conditional update")
    if stored is None:
        if body.get("id"):
            exists = reads.visible(u, req.resource_type, str(body["id"])) is not None
            why = ("No resource matches the condition, and the body names an id: this server does not create "
                   "resources with client-assigned ids")
            raise FhirError.of(409, "conflict", why) if exists else method_not_allowed(req, diagnostics=why)
        writes.conform(u, body)
        return writes.store_new(u, req, body)
    if body.get("id") not in (None, stored.id):
        raise bad_request(f"The body's id {body['id']!r} is not the id of the matching resource ({stored.id})",
                          f"{req.resource_type}.id")
    return writes.change(u, req, stored, body, "PUT")


def patch(u: Unit, req: FhirRequest) -> FhirResponse:
    """JSON Patch, FHIRPath Patch or JSON merge patch (`patching.py`), then the rules of an update."""
    assert req.resource_type
    if req.id is None:
        found = conditions.match(u, req.resource_type, conditions.required(req), "conditional patch")
        if found is None:
            raise not_found(f"No {req.resource_type} matches the condition")
        stored = found
    else:
        writes.lock_for_write(u, req)
        stored = reads.current(u, req)
    if stored.deleted:
        raise writes.gone(stored)
    writes.check_if_match(req, stored)
    before = reads.lists_shown(u, [stored])[0] or content.resource_of(stored)  # a List: patched as shown
    patched = patching.patched(req, before)
    if not isinstance(patched, dict) or patched.get("id") != stored.id:
        raise unprocessable("A patch may not change the resource's id", f"{req.resource_type}.id")
    if patched.get("resourceType") != req.resource_type:
        raise unprocessable("A patch may not change the resourceType", "resourceType")
    if req.resource_type == "DocumentReference":  # PDSm flux 03: metadata only
        mhd.check_metadata_update(content.resource_of(stored), patched)
    writes.checked(u, patched)
    return writes.change(u, req, stored, patched, "PATCH")


def delete(u: Unit, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    if req.id is None:
        stored = conditions.match(u, req.resource_type, conditions.required(req), "conditional delete")
    else:
        writes.lock_for_write(u, req)
        stored = reads.visible(u, req.resource_type, req.id)  # absent or hidden: 204 alike
    return writes.remove(u, req, stored)
