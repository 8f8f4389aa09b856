"""What a request needs of the token's SMART scopes (policy/scopes.py decides; the pipeline enforces).

Besides its own type and interaction, a search needs read on each type its `_include`/`_revinclude` bring (so a
scope never lets an include return a type it does not grant) and search on each type a `_has` looks into; a batch
or transaction needs what each of its entries needs (SMART App Launch 2.0: "batch and transaction requests should
be validated based on the actual requests within them").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fhir_dmp.policy import scopes
from fhir_dmp.search.definitions import definitions
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, head_of

Need = tuple[str, str]


def needs_of(req: FhirRequest) -> list[Need]:
    """(type, permission) pairs the request needs; `*`: every type."""
    if req.interaction == "batch/transaction":
        return _entries(req)
    wanted = list(scopes.needs(req.resource_type, req.interaction, req.operation))
    for name, value in req.query:
        base = name.split(":", 1)[0]
        if base in ("_include", "_revinclude"):
            wanted += [(t, "r") for t in _included(base, value)]
        elif name.startswith("_has:"):
            parts = name.split(":")
            wanted.append((parts[1] if len(parts) > 1 and parts[1] else scopes.ALL, "s"))
    return wanted


def _included(base: str, value: str) -> list[str]:
    """The types an include may bring: the source of a `_revinclude`; the target of an `_include` (every target
    of its parameter without one); every type for `*`."""
    parts = value.split(":")
    if value == "*" or len(parts) < 2 or parts[1] == "*":
        return [scopes.ALL]
    if base == "_revinclude":
        return [parts[0]]
    if len(parts) > 2 and parts[2]:
        return [parts[2]]
    found = definitions().get((parts[0], parts[1]))
    targets = [t for t in (found or {}).get("target", []) if t in RESOURCES]
    return targets or [scopes.ALL]


def _entries(req: FhirRequest) -> list[Need]:
    """What each entry of a batch or transaction needs (an entry that does not parse is refused by the bundle's
    own processing, with the same parser)."""
    body: Any = req.body
    entries = body.get("entry") if isinstance(body, dict) else None
    out: list[Need] = []
    for entry in entries if isinstance(entries, list) else []:
        request = entry.get("request") if isinstance(entry, dict) else None
        method = request.get("method") if isinstance(request, dict) else None
        url = request.get("url") if isinstance(request, dict) else None
        if not isinstance(method, str) or not isinstance(url, str):
            continue
        base = req.base_url.rstrip("/") + "/"
        if url.startswith(base):
            url = url[len(base):]
        elif urlsplit(url).scheme:
            continue  # not on this server: refused by the bundle
        head = head_of(method, url, req.base_url)
        if head.interaction == "batch/transaction":
            continue  # a nested bundle is refused by the bundle
        out += needs_of(head)
    return out
