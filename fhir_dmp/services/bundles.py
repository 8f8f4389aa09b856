"""Batch and transaction Bundles (`POST /fhir`).

A transaction runs every entry in one unit of work, in the order the R4 spec fixes (DELETE, POST,
PUT/PATCH, GET), after replacing `urn:uuid:` full URLs and conditional references by the ids they
stand for; any failure rolls back everything. A batch runs each entry in its own unit of work.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, Issue, bad_request, precondition_failed
from fhir_dmp.policy.caller import Caller
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.services import conditions, content, interactions, reads, references, routes, validating, writes
from fhir_dmp.services.requests import FhirRequest, FhirResponse, parse_url, query_text
from fhir_dmp.services.runtime import Runtime
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage.records import NewResource
from fhir_dmp.validation import documents

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
Run = Callable[[Caller, FhirRequest, Callable[[Unit], FhirResponse]], FhirResponse]


def process(run: Run, caller: Caller, req: FhirRequest, enforce_profiles: bool, rt: Runtime) -> FhirResponse:
    """A batch (each entry in a unit of work of its own, traced on its own) or a transaction (one unit of work,
    traced as one interaction: an AuditEvent per DMP it touched)."""
    bundle = req.body
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base URL takes a Bundle of type batch or transaction", "Bundle")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise bad_request(f"Bundle.type must be batch or transaction, not {kind!r}", "Bundle.type")
    entries = bundle.get("entry") or []
    if kind == "batch":  # each entry judged on its own (_batch_entry)
        return FhirResponse(200, _bundle("batch-response", [_batch_entry(run, caller, req, e, i)
                                                            for i, e in enumerate(entries)]))

    # The checks that need no database run before the unit of work opens its transaction (and once, however many
    # times a concurrent writer makes it start again); a refusal is still raised inside it, so that it is traced.
    refusal, requests, conformity = _checked(rt, req, entries, enforce_profiles)

    def transaction(u: Unit) -> FhirResponse:
        if refusal is not None:
            raise refusal
        return FhirResponse(200, _bundle("transaction-response", _transaction(u, req, entries, list(requests),
                                                                              conformity)))
    return run(caller, req, transaction)


def _checked(rt: Runtime, req: FhirRequest, entries: list, enforce_profiles: bool
             ) -> tuple[Exception | None, list[FhirRequest], _Conformity | None]:
    """A transaction's entries' requests (400), then every issue of every entry, R4 structure and profiles, in one
    422 (`_Conformity`, as far as the Bundle alone can tell): what refuses it, in the order the unit of work would
    have found it, to be raised there (and traced); the entries' requests, for the unit of work."""
    try:
        structure = validating.r4_issues(rt.conformance, req.body)
        requests = [_entry_request(req, e, i) for i, e in enumerate(entries)]
        _check_distinct(requests)
        if not enforce_profiles:
            return (FhirError(422, structure) if structure else None), requests, None
        conformity = _Conformity(rt, req, entries, requests, structure)
        return conformity.refusal(), requests, conformity
    except Exception as error:  # noqa: BLE001 - raised in the unit of work, which traces it (a fault: 500)
        return error, [], None


def _bundle(kind: str, entries: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": kind, "timestamp": instant(now_utc()), "entry": entries}


def _entry_request(parent: FhirRequest, entry: Any, index: int) -> FhirRequest:
    where = f"Bundle.entry[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise bad_request(f"{where} has no request", f"{where}.request")
    request = entry["request"]
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or method not in _ORDER or not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url",
                          f"{where}.request")
    url = _relative(url, parent.base_url)
    body = entry.get("resource")
    content_type = "application/fhir+json"
    if method == "PATCH" and isinstance(body, dict) and body.get("resourceType") == "Binary":
        body, content_type = _patch_from_binary(body, where)
    return parse_url(method, url, body=body, content_type=content_type, if_match=request.get("ifMatch"),
                     if_none_exist=request.get("ifNoneExist"), if_none_match=request.get("ifNoneMatch"),
                     strict=parent.strict, base_url=parent.base_url)


def _relative(url: str, base: str) -> str:
    if url.startswith(base.rstrip("/") + "/"):
        return url[len(base.rstrip("/")) + 1:]
    if urlsplit(url).scheme:
        raise bad_request(f"Entry url {url!r} is not on this server")
    return url


def _patch_from_binary(binary: dict, where: str) -> tuple[Any, str]:
    """In a Bundle, a JSON Patch travels as a Binary (R4 http.html#patch)."""
    try:
        return fhirjson.loads(base64.b64decode(binary.get("data", ""))), binary.get("contentType", "")
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's
        raise bad_request(f"{where}.resource: the JSON Patch in the Binary cannot be read") from exc


def _response_entry(resp: FhirResponse, prefer: str | None = None, stored: str | None = None) -> dict:
    """An entry of a batch or transaction response. What a write answers follows `Prefer: return` as a single
    write's does (R4 http.html#ops): `minimal` no resource, `OperationOutcome` an outcome, else the resource (its
    stored text as is, when the write just made it: `stored`). A read answers its resource whatever the
    preference."""
    out: dict = {}
    body = resp.body
    if isinstance(body, fhirjson.Raw):  # a read's stored text, parsed: its meta is looked at below
        body = fhirjson.materialize(body)
    written = "Location" in resp.headers
    if isinstance(body, dict) and not (written and prefer in ("minimal", "OperationOutcome")):
        out["resource"] = fhirjson.raw(stored) if stored is not None else body
    response: dict = {"status": content.status_line(resp.status)}
    if "Location" in resp.headers:
        response["location"] = resp.headers["Location"]
    if "ETag" in resp.headers:
        response["etag"] = resp.headers["ETag"]
    if isinstance(body, dict) and isinstance(body.get("meta"), dict):
        response["lastModified"] = body["meta"].get("lastUpdated")
    if written and prefer == "OperationOutcome" and isinstance(body, dict):
        response["outcome"] = content.information("Created" if resp.status == 201 else "Updated")
    out["response"] = {k: v for k, v in response.items() if v is not None}
    return out


def _error_entry(error: FhirError) -> dict:
    return {"response": {"status": content.status_line(error.status), "outcome": error.outcome()}}


def _batch_entry(run: Run, caller: Caller, parent: FhirRequest, entry: Any, index: int) -> dict:
    try:
        req = _entry_request(parent, entry, index)  # 400 unless the entry has a usable request object
        # its resource's structure and profiles are checked by the interaction, in one 422 (`writes.parsed`)
        return _response_entry(run(caller, req, lambda u: routes.route(req)(u, req)),  # traced on its own
                               parent.prefer_return)
    except FhirError as error:
        return _error_entry(error)


def _transaction(u: Unit, parent: FhirRequest, entries: list, requests: list[FhirRequest],
                 conformity: _Conformity | None) -> list[dict]:
    """`requests`: the entries' own (`_entry_request`), a copy this run of the unit of work may change."""
    changed = _check_distinct(requests)
    if conformity is not None:
        conformity.check_stored(u)
    # DELETEs first (R4), before the ifNoneExist conditions below are evaluated.
    deletes = sorted((i for i, req in enumerate(requests) if req.method == "DELETE"),
                     key=lambda k: _lock_order(requests[k]))
    responses: dict[int, FhirResponse] = {i: _dispatch_entry(u, requests[i], i) for i in deletes}
    ids: dict[str, str] = {}  # fullUrl -> "Type/id"
    # ifNoneExist conditions are locked in one order, so that concurrent transactions never deadlock.
    for i in sorted(range(len(requests)), key=lambda k: (requests[k].resource_type or "",
                                                         requests[k].if_none_exist or "")):
        entry, req = entries[i], requests[i]
        full_url = entry.get("fullUrl")
        if req.method != "POST" or req.interaction != "create":
            continue
        rid = str(uuid.uuid4())
        if req.if_none_exist:
            try:
                found = interactions.existing_match(u, req.resource_type or "", req.if_none_exist, "ifNoneExist")
            except FhirError as error:
                error.issues[:] = [_located(issue, i) for issue in error.issues]
                raise
            if found is not None:
                rid = found.id
                responses[i] = FhirResponse(200, reads.shown(u, found),
                                            content.version_headers(found, parent.base_url, location=True))
        requests[i] = replace(req, if_none_exist=None, assigned_id=rid)
        if isinstance(full_url, str):
            ids[full_url] = f"{req.resource_type}/{rid}"
    resolved = [_resolve_references(u, r, ids, i) for i, r in enumerate(requests)]
    if conformity is not None:  # an update's body judged with the Bundle, unchanged since: not judged again
        u.judged.update((id(resolved[i].body), resolved[i].body) for i in conformity.per_entry
                        if resolved[i].body is requests[i].body and resolved[i].method == "PUT")
    pending: dict[tuple[str, str], str] = {}  # created in this transaction, not yet written
    batch: list[NewResource] = []
    texts: dict[int, str] = {}  # the stored text of each create, answered as it is
    # Patients first among creates (the DMP others point to, whatever the entry order: R4 says the order
    # of entries does not matter), Binaries last: their securityContext may name a DocumentReference.
    # Updates in one global order of their ids, so that concurrent transactions never deadlock.
    for i in sorted(range(len(resolved)),
                    key=lambda k: (_ORDER[resolved[k].method],
                                   {"Patient": 0, "Binary": 2}.get(resolved[k].resource_type or "", 1),
                                   _lock_order(resolved[k]))):
        if i in responses:
            continue
        req = resolved[i]
        if req.interaction == "create":
            # Creates are prepared one by one (validated, stamped, indexed) and written together.
            responses[i], texts[i] = _prepare_create(u, req, i, pending, batch)
            continue
        _flush(u, batch)
        responses[i] = _dispatch_entry(u, req, i)
        body = responses[i].body
        if req.method in ("PUT", "PATCH") and req.id is None and isinstance(body, dict):
            # A conditional update/patch resolved to an identity: it must not overlap another change (R4).
            key = f"{req.resource_type}/{body.get('id')}"
            if key in changed:
                raise bad_request(f"Bundle.entry[{i}]: the transaction changes {key} more than once")
            changed.add(key)
    _flush(u, batch)
    return [_response_entry(responses[i], parent.prefer_return, texts.get(i)) for i in range(len(resolved))]


class _Conformity:
    """Every entry's resource against its profiles and the document rules (an attachment may name a Binary of the
    Bundle by its fullUrl), and an ITI-65 Bundle against its own profile: one 422 with every error, before anything
    is written. Judged before the unit of work, from the Bundle alone; an entry whose attachment names a Binary
    already stored is judged again inside it (`check_stored`), where that Binary can be read as the caller may.
    The Bundle's R4 `structure` issues come first in the answer."""

    def __init__(self, rt: Runtime, parent: FhirRequest, entries: list, requests: list[FhirRequest],
                 structure: list[Issue]) -> None:
        self.conf, self.parent, self.entries, self.requests = rt.conformance, parent, entries, requests
        self.structure = structure
        binaries = {e["fullUrl"]: e["resource"].get("data") for e in entries
                    if isinstance(e, dict) and isinstance(e.get("fullUrl"), str)
                    and isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") == "Binary"}
        self.decoded: dict[str, bytes | None] = {}

        def bundled(url: str) -> bytes | None:
            if url not in binaries:
                return None
            if url not in self.decoded:
                data = binaries[url]
                self.decoded[url] = documents.decoded(data) if isinstance(data, str) else b""
            return self.decoded[url]
        self.bundled = bundled
        self.per_entry: dict[int, list[Issue]] = {}
        self.stored: list[int] = []  # entries naming a stored Binary: judged in the unit of work
        for i in self._judged():
            try:
                self.per_entry[i] = self._entry(i, self._alone)
            except NeedsStore:
                self.stored.append(i)
        self.bundle_level = validating.bundle_issues(self.conf, parent.body)

    def _judged(self) -> list[int]:
        return [i for i, req in enumerate(self.requests) if req.method in ("POST", "PUT") and isinstance(
            req.body, dict) and req.resource_type == req.body.get("resourceType")]

    def _alone(self, url: str) -> bytes | None:
        return bytes_at_hand(self.parent.base_url, self.bundled)(url)

    def _entry(self, i: int, bytes_of: writes.BytesOf) -> list[Issue]:
        return [_located(issue, i) for issue in validating.conformity_issues(self.conf, self.requests[i].body,
                                                                             bytes_of)]

    def refusal(self) -> FhirError | None:
        """The 422 of what the Bundle alone shows (None while an entry waits for a stored Binary: all in one)."""
        return None if self.stored else self._outcome()

    def check_stored(self, u: Unit) -> None:
        if self.stored:
            bytes_of = writes.bytes_of(u, self.bundled)
            for i in self.stored:
                self.per_entry[i] = self._entry(i, bytes_of)
            self.stored = []
            error = self._outcome()
            if error is not None:
                raise error

    def _outcome(self) -> FhirError | None:
        issues = list(self.structure)
        seen = {(i.code, i.expression) for i in issues}
        for issue in [issue for i in sorted(self.per_entry) for issue in self.per_entry[i]] + self.bundle_level:
            if (issue.code, issue.expression) not in seen:
                seen.add((issue.code, issue.expression))
                issues.append(issue)
        return FhirError(422, issues) if issues else None


class NeedsStore(Exception):
    """An attachment names a Binary of this server that is not in the Bundle: only the unit of work can tell."""


def bytes_at_hand(base_url: str, bundled: writes.BytesOf = lambda _url: None) -> writes.BytesOf:
    """`writes.bytes_of` without a database: the bytes of a Binary of the Bundle (`bundled`), None for a document
    kept elsewhere, `NeedsStore` for a Binary of this server (judged in the unit of work, as the caller may read
    it)."""
    def resolve(url: str) -> bytes | None:
        found = bundled(url)
        if found is None and references.local_id(url, "Binary", base_url) is not None:
            raise NeedsStore
        return found
    return resolve


def _prepare_create(u: Unit, req: FhirRequest, index: int, pending: dict[tuple[str, str], str],
                    batch: list[NewResource]) -> tuple[FhirResponse, str]:
    """A create entry, decided and indexed (its conformity and structure were checked with the Bundle's): its
    response and the text it is stored as."""
    try:
        body = content.as_resource(req.body, req.resource_type or "")
        new, response = writes.prepare_new(u, req, body, req.assigned_id or str(uuid.uuid4()), pending)
    except FhirError as error:
        error.issues[:] = [_located(issue, index) for issue in error.issues]
        raise
    pending[(new.resource_type, new.id)] = new.patient_key
    batch.append(new)
    return response, new.content


def _flush(u: Unit, batch: list[NewResource]) -> None:
    writes.insert(u, batch)
    batch.clear()


def _lock_order(req: FhirRequest) -> tuple[str, str]:
    """Writers lock their resource (`writes.lock_for_write`) or condition: take the locks in one order."""
    if req.method in ("PUT", "PATCH", "DELETE"):  # a conditional one locks its condition first
        return req.resource_type or "", req.id or "?" + query_text(sorted(req.query))
    return "", ""


def _dispatch_entry(u: Unit, req: FhirRequest, index: int) -> FhirResponse:
    try:
        return routes.route(req)(u, req)
    except FhirError as error:
        error.issues[:] = [_located(issue, index) for issue in error.issues]
        raise


def _located(issue: Issue, index: int) -> Issue:
    prefix = f"Bundle.entry[{index}].resource"
    expression = tuple(f"{prefix}.{e.split('.', 1)[1]}" if "." in e else f"{prefix}"
                       for e in issue.expression)
    return Issue(issue.code, f"Bundle.entry[{index}]: {issue.diagnostics}", expression or (prefix,),
                 issue.severity)


def _check_distinct(requests: list[FhirRequest]) -> set[str]:
    seen: set[str] = set()
    for req in requests:
        if req.method in ("PUT", "PATCH", "DELETE") and req.id:
            key = f"{req.resource_type}/{req.id}"
            if key in seen:
                raise bad_request(f"The transaction changes {key} more than once")
            seen.add(key)
    return seen


def _resolve_references(u: Unit, req: FhirRequest, ids: dict[str, str], index: int) -> FhirRequest:
    """Replace fullUrls by the ids they got, and `Type?search` references by the one match. Copy on write: what
    holds nothing to replace is the request's own (nothing downstream changes a body in place), so a Binary's
    base64 or a document's codes are walked, not copied."""
    if not isinstance(req.body, dict):
        return req
    longest = max(map(len, ids), default=0)  # a Binary's base64 is never a fullUrl: not hashed to find out

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = None
            for key, value in node.items():
                if key == "reference" and isinstance(value, str) and "?" in value and value not in ids:
                    new = _conditional_reference(u, value, index)
                else:
                    new = walk(value)
                if new is not value:
                    out = out if out is not None else dict(node)
                    out[key] = new
            return node if out is None else out
        if isinstance(node, list):
            items = None
            for i, value in enumerate(node):
                new = walk(value)
                if new is not value:
                    items = items if items is not None else list(node)
                    items[i] = new
            return node if items is None else items
        if isinstance(node, str) and len(node) <= longest and node in ids:
            return ids[node]
        return node

    return req.with_body(walk(req.body))


def _conditional_reference(u: Unit, value: str, index: int) -> str:
    """`Type?search`: the one match among what the caller may see (`conditions.match`: the scope in the SQL)."""
    rtype, _, query = value.partition("?")
    try:
        parse_url("GET", rtype)
        found = conditions.match(u, rtype, query, f"conditional reference {value!r}")
    except FhirError as error:
        if error.status == 412:
            raise precondition_failed(f"Bundle.entry[{index}]: conditional reference {value!r} matches more than "
                                      f"one {rtype}") from None
        if error.status not in (400, 404):
            raise
        raise bad_request(f"Bundle.entry[{index}]: conditional reference {value!r}: "
                          f"{error.issues[0].diagnostics}") from None
    if found is None:
        raise precondition_failed(f"Bundle.entry[{index}]: conditional reference {value!r} matches no {rtype}")
    return f"{rtype}/{found.id}"
