"""The DMP's life (dmp-reference.md 4 and 9): one DMP per INS, `Patient/[id]/$close` and `$reopen`, the purge of
DMPs closed for more than ten years, and `Patient/[id]/$everything`.

One DMP per INS: every write of a Patient (create, conditional or not, in a transaction or not; an update that
changes its INS) takes a lock per INS value (PostgreSQL advisory lock; SQLite writers are serialised already)
before looking for another DMP with that INS, so two concurrent creates cannot both miss each other. A plain
create (no If-None-Exist) whose INS has a DMP is refused 409 `duplicate`, naming it: R4 gives a plain create no
matching semantics, and answering the existing DMP would silently drop the body the client sent; the conditional
create (If-None-Exist, or `POST Patient?identifier=...`) is how a client asks for "this INS's DMP, created if
need be".

The rules (who may close, reopen, export) are `policy/lifecycle.py`'s; this module reads, writes and traces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from sqlalchemy import Connection

from fhir_dmp.errors import FhirError, Issue, bad_request, operation_outcome
from fhir_dmp.policy import lifecycle as policy
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import moment, owner_key
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.parse import parse_criteria
from fhir_dmp.services import audit, content, results
from fhir_dmp.services.dmp_operations import operation
from fhir_dmp.services.guard import Guard
from fhir_dmp.services.references import INS_SYSTEMS
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import paging
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.db import Database

if TYPE_CHECKING:
    from fhir_dmp.services.interactions import FhirService

CLOSE_URL = "https://fhir-dmp.example.org/OperationDefinition/Patient-close"
REOPEN_URL = "https://fhir-dmp.example.org/OperationDefinition/Patient-reopen"
EVERYTHING_URL = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
# $everything: the DMP's resources; its traces are read with AuditEvent?patient= (each call adds to them).
EVERYTHING_TYPES = tuple(sorted(n for n, d in RESOURCES.items() if not d.shipped and n != "AuditEvent"))
PURGER = Caller("system", "fhir-dmp purge")


# -- one DMP per INS ------------------------------------------------------------------------------------------
def ins_values(patient: dict) -> list[str]:
    """The INS values a Patient carries (any of the INS systems), sorted."""
    idents = patient.get("identifier") if isinstance(patient.get("identifier"), list) else []
    return sorted({i["value"] for i in idents if isinstance(i, dict) and i.get("system") in INS_SYSTEMS
                   and isinstance(i.get("value"), str) and i["value"]})


def lock_ins(db: Database, conn: Connection, values: list[str]) -> None:
    """Queue the writers of the DMPs of these INS (in one order: no deadlock between two of them)."""
    for value in sorted(set(values)):
        db.lock(conn, f"INS|{value}")


def lock_condition_ins(db: Database, conn: Connection, condition: str) -> None:
    """A conditional create of a Patient takes its condition's INS locks before matching, so that it and a plain
    create of the same INS (or one with a differently written condition) see each other."""
    values = []
    for name, value in parse_qsl(condition.lstrip("?"), keep_blank_values=True):
        if name == "identifier":
            values += [part.rsplit("|", 1)[-1] for part in value.split(",") if part.rsplit("|", 1)[-1]]
    lock_ins(db, conn, values)


def claim_ins(db: Database, conn: Connection, guard: Guard, patient: dict, rid: str,
              before: dict | None = None) -> None:
    """Refuse (409) a Patient `rid` whose INS already names another DMP, stored or opened earlier in this
    transaction; `before`: the stored version of an update (unchanged INS are not checked again)."""
    values = ins_values(patient)
    if not values or (before is not None and ins_values(before) == values):
        return
    lock_ins(db, conn, values)
    for value in values:
        other = guard.pending_ins.get(value)
        if other is not None and other != rid:
            raise _duplicate(value, other)
    token = c.AnyOf(tuple(c.Token("identifier", system, value) for system in sorted(INS_SYSTEMS) for value in values))
    found = [s for s in repo.find(conn, "Patient", token, limit=3, scope=repo.SYSTEM_SCOPE) if s.id != rid]
    if found:
        guard.touch(found[0].patient_key, f"Patient/{found[0].id}")  # its patient sees the attempt in their trail
        shared = sorted(set(values) & set(ins_values(content.resource_of(found[0]))))
        raise _duplicate(shared[0] if shared else values[0], found[0].id)
    for value in values:
        guard.pending_ins[value] = rid


def _duplicate(ins: str, existing: str) -> FhirError:
    return FhirError.of(409, "duplicate", f"A DMP already exists for INS {ins} (Patient/{existing}): one DMP per "
                        "INS. To get it, or create it if absent, use a conditional create (If-None-Exist: "
                        "identifier=<INS system>|<INS>)", "Patient.identifier")


# -- $close and $reopen -------------------------------------------------------------------------------------
@operation("Patient", "$close", CLOSE_URL)
def close(service: FhirService, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
    """Close the DMP: `active` false and the closure (now, `reason`); answers the updated Patient."""
    _instance_post(req)
    reason = _reason(req.body)
    return _change(service, conn, guard, req, reason)


@operation("Patient", "$reopen", REOPEN_URL)
def reopen(service: FhirService, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
    """Reopen the DMP: `active` true, the closure removed (the closed versions stay in the history)."""
    _instance_post(req)
    _parameters(req.body, "$reopen", allowed=())
    return _change(service, conn, guard, req, None)


def _instance_post(req: FhirRequest) -> None:
    if req.method != "POST":
        raise method_not_allowed(req)
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


def _change(service: FhirService, conn: Connection, guard: Guard, req: FhirRequest,
            reason: str | None) -> FhirResponse:
    """Close (`reason` given) or reopen the URL's DMP: a new version of its Patient, through the same write path
    as an update (If-Match, profile, index, traces), once the lifecycle rules allow it."""
    closing = reason is not None
    service.lock_for_write(conn, req)  # one state change at a time (and not while the purge removes it)
    stored = service.current(conn, guard, req)  # 404 absent or unseen, 403 a DMP closed to the caller
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"Patient/{stored.id} was deleted")
    access = guard.access(conn, stored.patient_key)
    refusal = (policy.close_refusal if closing else policy.reopen_refusal)(guard.caller, access)
    before = content.resource_of(stored)
    refusal = refusal or policy.state_refusal(before, closing)
    if refusal is not None:
        raise refusal
    after = policy.closed(before, instant(guard.now), reason) if reason is not None else policy.reopened(before)
    return service.store_version(conn, guard, req, stored, after, "PUT", judged=True)


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


@operation("Patient", "$everything", EVERYTHING_URL)
def everything(service: FhirService, conn: Connection, guard: Guard, req: FhirRequest) -> FhirResponse:
    """The DMP as the caller may see it, a searchset Bundle paged by keyset cursors (`_count`, `_since`, `_type`),
    the access scope inside each statement."""
    if req.method not in ("GET", "POST"):
        raise method_not_allowed(req)
    if req.id is None:
        raise bad_request("$everything applies to one DMP here: GET Patient/[id]/$everything")
    pairs = list(req.query) + _body_pairs(req.body) if req.method == "POST" else list(req.query)
    asked = _everything_args(pairs, req.strict, service.settings.default_count, service.settings.max_count)
    stored = service.current(conn, guard, req)
    if stored.deleted:
        raise FhirError.of(410, "deleted", f"Patient/{stored.id} was deleted")
    key = stored.patient_key
    guard.touch(key, query="&".join(f"{k}={v}" for k, v in pairs))
    access = guard.access(conn, key)
    refusal = policy.everything_refusal(guard.caller, access)
    if refusal is not None:
        raise refusal
    scope = guard.scope(access)
    rows = repo.dmp_page(conn, key, asked.types, since=asked.since, scope=scope, after_pk=asked.after_pk,
                         limit=asked.count + 1) if asked.count else []
    page = rows[:asked.count]
    next_cursor = paging.encode(paging.Cursor(True, (), page[-1].pk), ()) if len(rows) > asked.count else None
    total = repo.dmp_count(conn, key, asked.types, since=asked.since, scope=scope)
    entries = [results.match_entry(req.base_url, s) for s in page]
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
            rows = repo.find(conn, "Patient", closed, limit=500, scope=repo.SYSTEM_SCOPE, cursor=cursor)
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
        with db.transaction(write=True) as conn:
            db.lock(conn, f"Patient/{pid}")  # the key `$reopen` and updates lock
            repo.lock_chains(conn, [pid])  # traces being appended to its chain finish first, and are purged too
            stored = repo.read_current(conn, "Patient", pid)
            if stored is None or stored.content is None:
                continue
            patient = content.resource_of(stored)
            if not policy.purgeable(patient, before):
                continue
            closure = policy.closure_of(patient)
            assert closure is not None and closure.date is not None
            head = repo.chain_head(conn, pid)
            removed = repo.purge_patient(conn, pid)
            audit.append(conn, [("", _purge_event(pid, closure.date, head, removed))], owner_key(PURGER), base_url)
        done.append({"purged": f"Patient/{pid}", "closed": instant(closure.date), "removed": removed})
    return done


def _purge_event(pid: str, closed_on: datetime, head: tuple[int, str] | None, removed: dict[str, int]) -> dict:
    """The AuditEvent of one DMP's purge (dmp-auditevent profile): who (this command), what (the Patient), when it
    was closed, and the last link of the trace chain removed with it, so that its removal is itself attested."""
    seq, digest = head or (0, repo.GENESIS)
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
