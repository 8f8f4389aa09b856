"""A FHIR interaction as plain data, parsed the same way for HTTP requests and Bundle entries."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from fhir_dmp.errors import FhirError, bad_request, not_found
from fhir_dmp.services.registry import RESOURCES

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_KNOWN_NON_SERVED = re.compile(r"^[A-Z][A-Za-z]+$")


@dataclass(frozen=True)
class FhirRequest:
    method: str
    resource_type: str | None = None
    id: str | None = None
    version_id: str | None = None
    operation: str | None = None  # "_history", "_search", or "$name"
    query: tuple[tuple[str, str], ...] = ()
    body: Any = None
    content_type: str = "application/fhir+json"
    if_match: str | None = None
    if_none_exist: str | None = None
    if_none_match: str | None = None
    strict: bool = False
    base_url: str = ""
    assigned_id: str | None = None  # a transaction gives a POST entry its id before running it
    prefer_return: str | None = None  # `Prefer: return=` (minimal, representation, OperationOutcome)

    @property
    def interaction(self) -> str:
        return interaction_of(self)

    @property
    def query_text(self) -> str:
        """The search parameters as the trace records them (`a=1&b=2`, undecoded pairs in order)."""
        return query_text(self.query)

    def with_body(self, body: Any) -> FhirRequest:
        return replace(self, body=body)


@dataclass
class FhirResponse:
    status: int
    body: dict | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    resource_created: bool = False


def query_text(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """Search parameters as one text, the one way every trace and paging link writes them."""
    return "&".join(f"{k}={v}" for k, v in pairs)


def parse_url(method: str, url: str, **fields: Any) -> FhirRequest:
    """`Patient/1/_history/2?x=y` (relative to the base) -> FhirRequest; 404 for unknown types."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    segments = [unquote(s) for s in path.split("/")] if path else []
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    rtype = rid = vid = op = None
    if segments and segments[0].startswith("$") or segments and segments[0] == "_history":
        op = segments.pop(0)
    elif segments:
        rtype = segments.pop(0)
        if rtype not in RESOURCES:
            what = "is not served by this server" if _KNOWN_NON_SERVED.match(rtype) else "is not a resource type"
            raise not_found(f"Resource type '{rtype}' {what}")
        if segments and (segments[0] in ("_history", "_search") or segments[0].startswith("$")):
            op = segments.pop(0)
        elif segments:
            rid = segments.pop(0)
            if not ID_PATTERN.match(rid):
                raise bad_request(f"'{rid}' is not a valid FHIR id", f"{rtype}.id")
            if segments and (segments[0] == "_history" or segments[0].startswith("$")):
                op = segments.pop(0)
                if op == "_history" and segments:
                    vid = segments.pop(0)
                    if not (vid.isascii() and vid.isdigit()) or len(vid) > 9:  # versions are INTEGER
                        raise not_found(f"Version '{vid}' of {rtype}/{rid} does not exist")
    if segments:
        raise not_found(f"No FHIR endpoint at '{path}'")
    return FhirRequest(method=method.upper(), resource_type=rtype, id=rid, version_id=vid, operation=op,
                       query=query, **fields)


def head_of(method: str, url: str, base_url: str) -> FhirRequest:
    """What a request is about before its body is read (for admission and its trace); a URL that does not
    parse is still a request of that method."""
    try:
        return parse_url(method, url, base_url=base_url)
    except FhirError:
        return FhirRequest(method, base_url=base_url)


def interaction_of(req: FhirRequest) -> str:
    """The R4 interaction code of a request (used for the 405 check and the traces)."""
    m, t, i, op = req.method, req.resource_type, req.id, req.operation
    if t is None:
        if op == "_history" and m == "GET":
            return "history-system"
        if op is None and m == "POST":
            return "batch/transaction"
        if op is None and m == "GET":
            return "search-system"
        return "operation" if op and op.startswith("$") else "unknown"
    if op and op.startswith("$"):
        return "operation"
    if i is None:
        if op == "_history":
            return "history-type" if m == "GET" else "unknown"
        if op == "_search":
            return "search-type" if m == "POST" else "unknown"
        return {"GET": "search-type", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}.get(m, "unknown")
    if op == "_history":
        if m != "GET":
            return "unknown"
        return "vread" if req.version_id else "history-instance"
    return {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m, "unknown")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(req: FhirRequest) -> list[str]:
    """The methods the request's URL takes, as its type's interactions say (an operation: GET and POST)."""
    if req.operation and req.operation.startswith("$"):
        return ["GET", "HEAD", "POST"]
    definition = RESOURCES.get(req.resource_type or "")
    out = []
    for method in _METHODS:
        interaction = interaction_of(replace(req, method="GET" if method == "HEAD" else method))
        if definition is not None and definition.allows(interaction) or definition is None and interaction in (
                "history-system", "batch/transaction"):
            out.append(method)
    return out


def method_not_allowed(req: FhirRequest, allowed: tuple[str, ...] | None = None,
                       diagnostics: str | None = None) -> FhirError:
    """405 with the `Allow` header RFC 9110 15.5.6 requires: the methods this URL does take (never the refused
    one; the same for an absent and a hidden resource, since it depends on the URL's shape only)."""
    where = req.resource_type or "the system endpoint"
    methods = [m for m in (allowed if allowed is not None else allowed_methods(req)) if m != req.method]
    text = diagnostics or (f"{req.method} is not supported on {where}"
                           + (f" ({req.interaction})" if req.interaction != "unknown" else ""))
    return FhirError.of(405, "not-supported", text, headers={"Allow": ", ".join(methods)})
