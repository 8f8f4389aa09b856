"""What a request needs of the token's SMART scopes (policy/scopes.py decides; the pipeline enforces).

Besides its own type and interaction, a request needs something on every other type it reaches: read on each type
its `_include`/`_revinclude` bring (so a scope never lets an include return a type it does not grant), search on
each type a chain (`patient.name=...`) or a `_has` (nested ones included) looks into, found by the search's own
parser so that what is checked is what will run. A conditional create, update, patch or delete needs search on its
type as well (its condition is a search; a conditional create's match is answered as a read), its condition's chains
and `_has` included; a write (or `$validate`) whose attachment `url` names a Binary of this server needs read on
Binary (its validation reads that Binary's size and hash); a batch or transaction needs what each of its entries
needs (SMART App Launch 2.0: "batch and transaction requests should be validated based on the actual requests within
them"), and a transaction search on the type of each conditional reference (`"reference": "Patient?identifier=..."`)
it resolves.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_dmp.policy import scopes
from fhir_dmp.search.definitions import definitions
from fhir_dmp.search.parse import parse_param
from fhir_dmp.services import references, subscriptions
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, head_of
from fhir_dmp.storage import criteria as c

Need = tuple[str, str]
_CONDITIONAL = ("create", "update", "patch", "delete")
_WRITES = ("create", "update", "patch")
_IGNORED = ("_format", "_pretty")


def needs_of(req: FhirRequest) -> list[Need]:
    """(type, permission) pairs the request needs; `*`: every type."""
    if req.interaction == "batch/transaction":
        return _entries(req)
    rtype = req.resource_type
    wanted = list(scopes.needs(rtype, req.interaction, req.operation, _conditional(req)))
    for name, value in req.query:
        base = name.split(":", 1)[0]
        if base in ("_include", "_revinclude"):
            wanted += scopes.reaching("include", _included(base, value))
        elif rtype:
            wanted += _reached(rtype, name, value)
    if rtype == "Subscription" and req.interaction in ("create", "update"):
        wanted += _subscribed(req.body)
    if req.interaction in _WRITES or req.operation == "$validate":
        wanted += scopes.reaching("attachment", ["Binary"] if _names_a_binary(req.body, req.base_url) else [])
    if rtype and isinstance(req.if_none_exist, str):
        for name, value in parse_qsl(req.if_none_exist.lstrip("?"), keep_blank_values=True):
            wanted += _reached(rtype, name, value)
    return wanted


def _conditional(req: FhirRequest) -> bool:
    """A create with a condition (If-None-Exist, or search parameters in its URL), or an update, patch or delete
    of the type (no id: the search parameters name the resource)."""
    if req.interaction not in _CONDITIONAL:
        return False
    if req.interaction == "create":
        return bool(req.if_none_exist) or any(k not in _IGNORED for k, _ in req.query)
    return req.id is None


def _reached(rtype: str, name: str, value: str) -> list[Need]:
    """Search on each type a chain or a `_has` of this parameter looks into, as the search parser reads it (a
    parameter it refuses refuses the request anyway; one it ignores reaches nothing)."""
    if not name.startswith("_has:") and "." not in name:
        return []
    try:
        criterion = parse_param(rtype, name, value)
    except Exception:  # noqa: BLE001 - a 400 for the search too, or its "unknown parameter" (ignored there)
        return []
    chained: list[str] = []
    has: list[str] = []
    _walk(criterion, chained, has)
    return scopes.reaching("chain", chained) + scopes.reaching("has", has)


def _walk(node: Any, chained: list[str], has: list[str]) -> None:
    if isinstance(node, c.Chain):
        chained += node.target_types
    elif isinstance(node, c.Has):
        has.append(node.source_type)
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _walk(getattr(node, f.name), chained, has)
    elif isinstance(node, tuple):
        for part in node:
            _walk(part, chained, has)


def _subscribed(body: Any) -> list[Need]:
    """A Subscription is a standing search whose results the server sends to the subscriber, long after the token
    is gone: creating or changing one needs search on its filter's type (which must be the topic's,
    `services/subscriptions.py` checks, and decides that again at every event with the scopes it keeps), and
    search on what the filter's chains reach (`patient.identifier`: Patient)."""
    criteria = body.get("_criteria") if isinstance(body, dict) else None
    extensions = criteria.get("extension") if isinstance(criteria, dict) else None
    out: list[Need] = []
    for ext in extensions if isinstance(extensions, list) else []:
        if not isinstance(ext, dict) or ext.get("url") != subscriptions.FILTER_URL:
            continue
        value = next((v for k, v in ext.items() if k.startswith("value")), None)
        rtype, _, query = value.partition("?") if isinstance(value, str) else ("", "", "")
        if rtype in RESOURCES:
            out += scopes.reaching("subscription", [rtype])
            for name, param in parse_qsl(query, keep_blank_values=True):
                out += _reached(rtype, name, param)
    return out


def _names_a_binary(node: Any, base_url: str) -> bool:
    """Whether a resource (or a JSON Patch) sets an attachment `url` naming a Binary of this server: the write's
    validation reads that Binary (its size and SHA-1 against the attachment's), which tells whether it exists and
    what its hash is; a token without `Binary.r` must not learn that."""
    if isinstance(node, dict):
        for key, value in node.items():
            url = key == "url" or (key == "value" and str(node.get("path", "")).endswith("url"))
            if url and isinstance(value, str) and references.local_id(value, "Binary", base_url) is not None:
                return True
            if _names_a_binary(value, base_url):
                return True
    elif isinstance(node, list):
        return any(_names_a_binary(v, base_url) for v in node)
    return False


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
    own processing, with the same parser), and, in a transaction, its conditional references."""
    body: Any = req.body
    entries = body.get("entry") if isinstance(body, dict) else None
    transaction = isinstance(body, dict) and body.get("type") == "transaction"
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
        head = head_of("GET" if method == "HEAD" else method, url, req.base_url)  # HEAD: what GET would read
        if head.interaction == "batch/transaction":
            continue  # a nested bundle is refused by the bundle
        condition = request.get("ifNoneExist")
        condition = condition if isinstance(condition, str) else None
        out += needs_of(replace(head, body=entry.get("resource"), if_none_exist=condition))
        if transaction:
            out += _conditional_references(entry.get("resource"))
    return out


def _conditional_references(node: Any) -> list[Need]:
    """`"reference": "Type?search"` anywhere in a transaction entry's resource: the transaction runs that search."""
    out: list[Need] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and "?" in value:
                rtype, _, query = value.partition("?")
                if rtype in RESOURCES:
                    out += scopes.reaching("conditional-reference", [rtype])
                    for name, param in parse_qsl(query, keep_blank_values=True):
                        out += _reached(rtype, name, param)
            else:
                out += _conditional_references(value)
    elif isinstance(node, list):
        for value in node:
            out += _conditional_references(value)
    return out
