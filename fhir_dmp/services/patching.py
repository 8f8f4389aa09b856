"""The three patch formats R4 names (http.html#patch), each turned into the resource after the patch; the
result then goes through the same write rules as an update (`interactions.patch` -> `writes.change`).

- `application/json-patch+json`: an array of operations, JSON Patch (RFC 6902);
- `application/fhir+json`, `application/fhir+xml` or `application/json`: a `Parameters` resource, FHIRPath Patch;
- `application/merge-patch+json`: an object, JSON merge patch (RFC 7386);
- `application/json` or `application/fhir+json`: a partial resource (of the type, or with no `resourceType`), as
  fhirpy's `patch()` sends it: a JSON merge patch.

A JSON array sent as `application/json` is taken as a JSON Patch too (the shape says which it is). A null in a
merge patch removes the element (RFC 7386).
"""

from __future__ import annotations

import re
from typing import Any

import jsonpatch
import jsonpointer

from fhir_dmp.errors import FhirError, bad_request, unprocessable
from fhir_dmp.services import fhirpath_patch, mhd
from fhir_dmp.services.requests import FhirRequest

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FHIR_TYPES = ("application/fhir+json", "application/json", "application/fhir+xml", "application/xml",
              "text/xml", "application/json+fhir", "application/xml+fhir")
# CapabilityStatement.patchFormat: the content types a patch may come in
PATCH_FORMATS = [JSON_PATCH, MERGE_PATCH, "application/fhir+json", "application/fhir+xml"]


def patched(req: FhirRequest, before: dict) -> dict:
    """The resource `before` after the request's patch, in whichever format it came."""
    media, body = req.content_type, req.body
    if media == JSON_PATCH or (media in FHIR_TYPES and isinstance(body, list)):
        return _json_patch(req, before)
    if media in FHIR_TYPES and fhirpath_patch.is_fhirpath_patch(body):
        assert isinstance(body, dict)
        return fhirpath_patch.apply(body, before)
    if media == MERGE_PATCH or (media in ("application/json", "application/fhir+json") and isinstance(body, dict)):
        return _merge_patch(req, before)
    raise FhirError.of(415, "not-supported", f"PATCH takes {JSON_PATCH}, {MERGE_PATCH}, or a FHIRPath Patch "
                       f"(a Parameters resource) in application/fhir+json or +xml; not {media or 'no type'}"
                       + (" with this body" if media in FHIR_TYPES else ""))


def _json_patch(req: FhirRequest, before: dict) -> dict:
    """Applied one operation at a time, so that a refusal names the operation and its path, never the library's
    message, which quotes the whole resource (jsonpointer) or the value found (a failed `test`)."""
    if not isinstance(req.body, list):
        raise bad_request("A JSON Patch document is a JSON array of operations", code="structure")
    try:
        ops = mhd.pdsm_paths(req.body, before) if req.resource_type == "DocumentReference" else req.body
        jsonpatch.JsonPatch(ops)  # checks every operation's shape before any is applied
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError, KeyError,
            AttributeError) as exc:
        raise bad_request(f"Invalid JSON Patch document: {exc}", code="structure") from exc
    doc = before
    for number, op in enumerate(ops, 1):
        path = str(op.get("path"))
        where = f"JSON Patch operation {number} ({op.get('op')} {path})"
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise unprocessable(f"{where}: the value there is not the tested value",
                                _fhirpath(req.resource_type, path)) from exc
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            raise unprocessable(f"{where}: {_reason(exc)}", _fhirpath(req.resource_type, path)) from exc
        except (jsonpatch.InvalidJsonPatch, TypeError, KeyError, AttributeError) as exc:
            raise bad_request(f"Invalid JSON Patch document: {where}: {_reason(exc)}", code="structure") from exc
    return doc


_POINTER_REASON = re.compile(r"(member '[^']*' not found|index '[^']*' is out of bounds)")


def _reason(exc: Exception) -> str:
    """Why an operation does not apply, without the document jsonpointer quotes ("member 'x' not found in {...}",
    "Document '<value>' does not support indexing")."""
    if isinstance(exc, jsonpointer.JsonPointerException):
        found = _POINTER_REASON.match(str(exc))
        return found.group(1) if found else "the path does not resolve in the resource"
    text = str(exc)
    return text if len(text) <= 200 else "the path does not resolve in the resource"


def _fhirpath(resource_type: str | None, pointer: str) -> str | None:
    """`/telecom/0/value` -> `Patient.telecom[0].value` (the OperationOutcome's expression)."""
    if not resource_type or not pointer.startswith("/"):
        return None
    out = resource_type
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        out += f"[{part}]" if part.isdigit() else ("" if part == "-" else f".{part}")
    return out


def _merge_patch(req: FhirRequest, before: dict) -> dict:
    body = req.body
    if not isinstance(body, dict):
        raise bad_request("A JSON merge patch is a JSON object", code="structure")
    if body.get("resourceType", req.resource_type) != req.resource_type:
        raise bad_request(f"The merge patch is a {body.get('resourceType')}, not a {req.resource_type}",
                          "resourceType")
    if body.get("id", before.get("id")) != before.get("id"):
        raise unprocessable("A patch may not change the resource's id", f"{req.resource_type}.id")
    return merged(before, body)


def merged(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out
