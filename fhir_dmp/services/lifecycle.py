"""The DMP's life (dmp-reference.md 4 and 9): `Patient/[id]/$close` and `$reopen`, the purge of DMPs closed for
more than ten years, and `Patient/[id]/$everything` (one DMP per INS is `ins.py`'s).

A plain create (no If-None-Exist) whose INS has a DMP is refused 409 `duplicate`, naming it: R4 gives a plain
create no matching semantics, and answering the existing DMP would silently drop the body the client sent; the
conditional create (If-None-Exist, or `POST Patient?identifier=...`) is how a client asks for "this INS's DMP,
created if need be".

The rules (who may close, reopen, export) are `policy/lifecycle.py`'s; this module reads, writes and traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fhir_dmp.errors import FhirError, Issue, bad_request, operation_outcome
from fhir_dmp.policy import lifecycle as policy
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import moment, owner_key
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.parse import parse_criteria
from fhir_dmp.services import audit, content, reads, results, writes
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed, query_text
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import dmps, paging, queries, resources, traces
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.records import GENESIS, SYSTEM_SCOPE

CLOSE_URL = "https://fhir-dmp.example.org/OperationDefinition/Patient-close"
REOPEN_URL = "https://fhir-dmp.example.org/OperationDefinition/Patient-reopen"
EVERYTHING_URL = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
# $everything: the DMP's resources; its traces are read with AuditEvent?patient= (each call adds to them).
EVERYTHING_TYPES = tuple(sorted(n for n, d in RESOURCES.items() if not d.shipped and n != "AuditEvent"))
PURGER = Caller("system", "fhir-dmp purge")


# -- $close and $reopen -------------------------------------------------------------------------------------
def close(u: Unit, req: FhirRequest) -> FhirResponse:
    """Close the DMP: `active` false and the closure (now, `reason`); answers the updated Patient."""
    _instance_post(req)
    reason = _reason(req.body)
    return _change(u, req, reason)


def reopen(u: Unit, req: FhirRequest) -> FhirResponse:
    """Reopen the DMP: `active` true, the closure removed (the closed versions stay in the history)."""
    _instance_post(req)
    _parameters(req.body, "$reopen", allowed=())
    return _change(u, req, None)


def _instance_post(req: FhirRequest) -> None:
    if req.method != "POST":
        raise method_not_allowed(req, ("POST",))
    if req.id is None:
        raise bad_request(f"{req.operation} applies to one DMP: POST Patient/[id]/{req.operation}")


def _parameters(body: object, name: str, allowed: tuple[str, ...]) -> list[dict]:
    """The `parameter` list of an operation's Parameters body (no body: none); 400 for anything else."""
    if body is None:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise bad_request(f"{name} takes a Parameters resource", "Parameters", code="structure")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise bad_request("Parameters.parameter is a list", "Parameters.parameter", code="structure")
    for i, p in enumerate(parameters):
        if not isinstance(p, dict) or p.get("name") not in allowed:
            what = p.get("name") if isinstance(p, dict) else None
            known = ", ".join(allowed) or "none"
            raise bad_request(f"{name} has no parameter {what!r} (its parameters: {known})",
                              f"Parameters.parameter[{i}]")
    return parameters


def _reason(body: object) -> str:
    parameters = _parameters(body, "$close", allowed=("reason",))
    if len(parameters) != 1:
        raise bad_request("$close takes exactly one 'reason' parameter (valueString): why the DMP is closed",
                          "Parameters.parameter", code="required")
    value = parameters[0].get("valueString")
    if not isinstance(value, str) or not value.strip() or set(parameters[0]) - {"name", "valueString"}:
        raise bad_request("The 'reason' parameter of $close is a non-empty valueString",
                          "Parameters.parameter[0].valueString")
    return value.strip()


def _change(u: Unit, req: FhirRequest, reason: str | None) -> FhirResponse:
    """Close (`reason` given) or reopen the URL's DMP: a new version of its Patient, through the same write path
    as an update (If-Match, profile, index, traces), once the lifecycle rules allow it."""
    closing = reason is not None
    writes.lock_for_write(u, req)  # one state change at a time (and not while the purge removes it)
    stored = reads.current(u, req)  # 404 absent or unseen, 403 a DMP closed to the caller
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"Patient/{stored.id} was deleted")
    access = u.access(stored.patient_key)
    refusal = (policy.close_refusal if closing else policy.reopen_refusal)(u.caller, access)
    before = content.resource_of(stored)
    refusal = refusal or policy.state_refusal(before, closing)
    if refusal is not None:
        raise refusal
    after = policy.closed(before, instant(u.now), reason) if reason is not None else policy.reopened(before)
    writes.check_if_match(req, stored)
    writes.conform(u, after)  # decided by the lifecycle rules above, not by an update's
    return writes.store_version(u, req, stored, after, "PUT")


# -- $everything --------------------------------------------------------------------------------------------
_EVERYTHING_PARAMS = frozenset({"_count", "_since", "_type", "_cursor", "_format", "_pretty"})
_NOT_SUPPORTED = frozenset({"start", "end"})  # care-date filters: they would change the answer, so never ignored


@dataclass(frozen=True)
class _Everything:
    count: int
    since: datetime | None
    types: tuple[str, ...]
    after_pk: int | None
    ignored: tuple[str, ...]


def everything(u: Unit, req: FhirRequest) -> FhirResponse:
    """The DMP as the caller may see it, a searchset Bundle paged by keyset cursors (`_count`, `_since`, `_type`),
    the access scope inside each statement."""
    if req.method not in ("GET", "POST"):
        raise method_not_allowed(req)
    if req.id is None:
        raise bad_request("$everything applies to one DMP here: GET Patient/[id]/$everything")
    pairs = list(req.query) + _body_pairs(req.body) if req.method == "POST" else list(req.query)
    settings = u.rt.settings
    asked = _everything_args(pairs, req.strict, settings.default_count, settings.max_count)
    stored = reads.current(u, req)
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"Patient/{stored.id} was deleted")
    key = stored.patient_key
    u.touch(key, query=query_text(pairs))
    access = u.access(key)
    refusal = policy.everything_refusal(u.caller, access)
    if refusal is not None:
        raise refusal
    scope = u.scope(access)
    rows = queries.dmp_page(u.tx, key, asked.types, since=asked.since, scope=scope, after_pk=asked.after_pk,
                         limit=asked.count + 1) if asked.count else []
    page = rows[:asked.count]
    next_cursor = paging.encode(paging.Cursor(True, (), page[-1].pk), ()) if len(rows) > asked.count else None
    total = queries.dmp_count(u.tx, key, asked.types, since=asked.since, scope=scope)
    entries = [results.match_entry(req.base_url, s, resource=r) for s, r in zip(page, reads.lists_shown(u, page),
                                                                                 strict=True)]
    if asked.ignored:
        entries.append({"resource": operation_outcome([
            Issue("not-supported", f"Parameter '{name}' is not supported by $everything and was ignored",
                  severity="warning") for name in asked.ignored]), "search": {"mode": "outcome"}})
    links = results.page_links(req.base_url, f"Patient/{req.id}/$everything", pairs, next_cursor)
    return FhirResponse(200, results.bundle("searchset", entries, links, total))


def _body_pairs(body: object) -> list[tuple[str, str]]:
    """POST $everything: the Parameters' primitive values as if they were in the URL."""
    pairs = []
    for p in _parameters(body, "$everything", allowed=("_count", "_since", "_type", "_cursor")):
        values = [v for k, v in p.items() if k.startswith("value") and isinstance(v, (str, int)) and
                  not isinstance(v, bool)]
        if len(values) != 1:
            raise bad_request(f"The parameter {p['name']!r} of $everything takes one primitive value")
        pairs.append((p["name"], str(values[0])))
    return pairs


def _everything_args(pairs: list[tuple[str, str]], strict: bool, default_count: int, max_count: int) -> _Everything:
    count, since, types, after, ignored = default_count, None, EVERYTHING_TYPES, None, []
    for name, value in pairs:
        if name in _NOT_SUPPORTED:
            raise FhirError.of(400, "not-supported", f"$everything's '{name}' (care dates) is not supported", name)
        if name not in _EVERYTHING_PARAMS:
            if strict:
                raise bad_request(f"$everything has no parameter '{name}'", name)
            ignored.append(name)
        elif name == "_count":
            if not value.isdigit():
                raise bad_request(f"_count must be a non-negative integer, not {value!r}", "_count")
            count = min(int(value), max_count)
        elif name == "_since":
            since = moment(value) if "T" in value else None
            if since is None:
                raise bad_request(f"_since must be an instant (e.g. 2026-01-01T00:00:00Z), not {value!r}", "_since")
        elif name == "_type":
            asked = [t.strip() for t in value.split(",") if t.strip()]
            unknown = [t for t in asked if t not in EVERYTHING_TYPES]
            if unknown or not asked:
                raise bad_request(f"_type names types $everything returns ({', '.join(EVERYTHING_TYPES)}); "
                                  f"not {', '.join(unknown) or 'nothing'}", "_type")
            types = tuple(t for t in types if t in asked)
        elif name == "_cursor":
            try:
                cursor = paging.decode(value, ())
            except paging.BadCursor as exc:
                raise bad_request(f"_cursor is not a cursor this server gave for $everything ({exc})",
                                  "_cursor") from None
            if not cursor.forward:
                raise bad_request("_cursor is not a cursor this server gave for $everything", "_cursor")
            after = cursor.pk
    return _Everything(count, since, types, after, tuple(ignored))


# -- the purge ------------------------------------------------------------------------------------------------
def purge_candidates(db: Database, before: datetime) -> list[str]:
    """The DMPs closed before `before` (naive UTC), by their closure date."""
    closed = parse_criteria("Patient", [("active", "false")])
    found: list[str] = []
    cursor = None
    with db.transaction() as conn:
        while True:
            rows = queries.find(conn, "Patient", closed, limit=500, scope=SYSTEM_SCOPE, cursor=cursor)
            found += [r.id for r in rows if policy.purgeable(content.resource_of(r), before)]
            if len(rows) < 500:
                return found
            cursor = paging.Cursor(True, (), rows[-1].pk)


def purge(db: Database, before: datetime, base_url: str) -> list[dict]:
    """9: remove every DMP closed before `before`, each in its own transaction with the AuditEvent that records it
    (on the server's trace chain: the DMP's own chain, its events and its head, go with the DMP). A DMP reopened
    since it was listed is left alone. Returns what each removal did."""
    done = []
    for pid in purge_candidates(db, before):
        line = purge_one(db, pid, before, base_url)
        if line is not None:
            done.append(line)
    return done


def purge_one(db: Database, pid: str, before: datetime, base_url: str) -> dict | None:
    """`purge` for one of its candidates (the command line shows progress between them): what the removal did,
    or None when the DMP is no longer purgeable (reopened since it was listed, or gone)."""
    with db.transaction(write=True) as conn:
        db.lock(conn, f"Patient/{pid}")  # the key `$reopen` and updates lock
        head = traces.lock_chain(conn, pid)  # traces appended to its chain finish first, and are purged too
        stored = resources.read_current(conn, "Patient", pid)
        if stored is None or stored.content is None:
            return None
        patient = content.resource_of(stored)
        if not policy.purgeable(patient, before):
            return None
        closure = policy.closure_of(patient)
        assert closure is not None and closure.date is not None
        removed = dmps.purge_patient(conn, pid)
        audit.append(conn, [("", _purge_event(pid, closure.date, head, removed))], owner_key(PURGER), base_url)
    return {"purged": f"Patient/{pid}", "closed": instant(closure.date), "removed": removed}


def _purge_event(pid: str, closed_on: datetime, head: tuple[int, str] | None, removed: dict[str, int]) -> dict:
    """The AuditEvent of one DMP's purge (dmp-auditevent profile): who (this command), what (the Patient), when it
    was closed, and the last link of the trace chain removed with it, so that its removal is itself attested."""
    seq, digest = head or (0, GENESIS)
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "delete"}],
        "action": "D",
        "recorded": instant(now_utc()),
        "outcome": "0",
        "agent": [{"type": {"text": PURGER.actor}, "who": {"identifier": {"value": PURGER.sub},
                                                           "display": f"{PURGER.actor} {PURGER.sub}"},
                   "requestor": True,
                   "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                                 "code": "RECORDMGT"}],
                                     "text": f"Purge of a DMP closed for more than {policy.ARCHIVE_YEARS} years"}]}],
        "source": {"observer": {"display": "fhir-dmp"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
        "entity": [{"what": {"reference": f"Patient/{pid}"}, "description": "The DMP purged, with every version of "
                    "its resources and its trace chain",
                    "detail": [{"type": "closed", "valueString": instant(closed_on)},
                               {"type": "audit-chain-head", "valueString": f"{seq} {digest}"},
                               {"type": "rows-removed", "valueString": ", ".join(
                                   f"{table} {n}" for table, n in sorted(removed.items()) if n)}]}],
    }
