"""IHE MHD / ANS PDSm document transactions on top of the REST interactions: the replacement an ITI-65 (or a
simplified publish) carries, and the restricted metadata update (PDSm flux 03).

The decisions (who may replace, delete, mask; which transitions exist) are policy/documents.py's; this module
finds the documents they are about and writes the versions.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from fhir_dmp.errors import FhirError, bad_request, unprocessable
from fhir_dmp.policy import documents
from fhir_dmp.services import conditions, content, reads, references
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage.records import Stored

# PDSm's JSON Patch paths name an extension by its url: `/extension[url:'https://...']/valueBoolean`
# (TD3.3d; flux 03 writes the quotes as ” too). Not RFC 6901: translated to the extension's index first.
_BY_URL = re.compile(r"^/extension\[url:\s*['\"“”‘’]([^'\"“”‘’]+)['\"“”‘’]\s*\](/.*)?$")


def pdsm_paths(ops: list, document: dict) -> list:
    """`ops` with PDSm's `extension[url:'...']` segments turned into RFC 6901 pointers on `document`; an
    extension that is not there yet is appended (a `replace` of its value then creates it)."""
    extensions = document.get("extension") if isinstance(document.get("extension"), list) else []
    out: list[Any] = []
    added = False
    for op in ops:
        path = op.get("path") if isinstance(op, dict) else None
        match = _BY_URL.match(path) if isinstance(path, str) else None
        if match is None:
            out.append(op)
            continue
        url, rest = match.group(1), match.group(2) or ""
        index = next((i for i, e in enumerate(extensions) if isinstance(e, dict) and e.get("url") == url), None)
        if index is None:
            if not rest or op.get("op") not in ("add", "replace"):
                raise FhirError.of(422, "processing", f"JSON Patch: the resource has no extension {url}",
                                   "DocumentReference.extension")
            element = rest.lstrip("/")
            if "/" in element:
                raise bad_request(f"JSON Patch path {path!r} is not supported", code="structure")
            if not added and not extensions:
                out.append({"op": "add", "path": "/extension", "value": []})
            out.append({"op": "add", "path": "/extension/-", "value": {"url": url, element: op.get("value")}})
            added = True
            continue
        out.append({**op, "path": f"/extension/{index}{rest}"})
    return out


def check_metadata_update(before: dict, after: dict) -> None:
    """PDSm flux 03: a PATCH of a DocumentReference changes status, securityLabel and is-archived only (422
    naming every other element changed; nothing is written)."""
    issues = documents.metadata_issues(before, after)
    if issues:
        raise FhirError(422, issues)


def replaced(u: Unit, document: dict, patient: str) -> list[tuple[Stored, dict]]:
    """The documents a new DocumentReference `replaces`, each with its content, to be marked `superseded` in the
    same unit of work under the caller's rights to change them (policy/documents.py). A target that is missing
    or that the caller may not see is one answer (422): no oracle."""
    out = []
    relations = document.get("relatesTo") if isinstance(document.get("relatesTo"), list) else []
    for index, relation in enumerate(relations):
        if not isinstance(relation, dict) or relation.get("code") != "replaces":
            continue
        where = f"DocumentReference.relatesTo[{index}].target"
        target = _target(u, relation.get("target"), where)
        before = content.resource_of(target)
        refusal = documents.replacement_refusal(before, target.patient_key == patient)
        if refusal is not None:
            raise refusal
        out.append((target, before))
    return out


def _target(u: Unit, target: object, where: str) -> Stored:
    missing = unprocessable(f"{where} names no DocumentReference of this DMP that you may see: only an existing "
                            "document can be replaced", where, code="not-found")
    if not isinstance(target, dict):
        raise missing
    reference = target.get("reference")
    stored: Stored | None = None
    if isinstance(reference, str) and "?" in reference:
        rtype, _, query = reference.partition("?")
        if rtype.rsplit("/", 1)[-1] != "DocumentReference":
            raise missing
        stored = conditions.match(u, "DocumentReference", query, "relatesTo.target")
    elif isinstance(reference, str):
        rid = references.local_id(reference, "DocumentReference", u.req.base_url)
        if rid is None:
            raise missing
        u.lock(f"DocumentReference/{rid}")  # concurrent replacers of one document queue here
        stored = _visible(u, rid)
    elif isinstance(target.get("identifier"), dict):
        ident = target["identifier"]
        token = f"{ident.get('system') or ''}|{ident.get('value') or ''}" if ident.get("system") else \
            str(ident.get("value") or "")
        stored = conditions.match(u, "DocumentReference", urlencode({"identifier": token}), "relatesTo.target")
    if stored is None or stored.deleted:
        raise missing
    if "?" in (reference or "") or reference is None:
        u.lock(f"DocumentReference/{stored.id}")
        stored = _visible(u, stored.id) or stored
    return stored


def _visible(u: Unit, rid: str) -> Stored | None:
    """A replaced document as the caller may see it; a DMP closed to them hides it like an absent one (422)."""
    try:
        return reads.visible(u, "DocumentReference", rid)
    except FhirError:
        return None
