"""Traces (dmp-reference.md 7): one AuditEvent per interaction and DMP, allowed or refused, hash-chained.

Each DMP has its own chain (events tied to no DMP go on the server's chain, key ''): an event carries the
sequence number and the SHA-256 of the previous event's stored JSON, and the chain head (`audit_chain`)
the hash of the last one. Altering, removing or reordering any stored event breaks a link that
`verify` reports. The events of a unit of work are written in its own transaction, chained by storage
(`storage/traces.py`: one statement on PostgreSQL, the heads locked in key order).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.policy.facts import trace_facts
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.services import content
from fhir_dmp.services.requests import FhirRequest
from fhir_dmp.services.unit import Touched, Unit
from fhir_dmp.storage import traces
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.db import Database, Tx
from fhir_dmp.storage.records import GENESIS, NewResource

CHAIN_URL = "https://fhir-dmp.example.org/StructureDefinition/audit-chain"
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
_ACTIONS = {"create": "C", "read": "R", "vread": "R", "history-instance": "R", "history-type": "R",
            "history-system": "R", "update": "U", "patch": "U", "delete": "D"}


def record(u: Unit, status: int, error: FhirError | None, accessed: Sequence[str] = ()) -> set[str]:
    """Write this interaction's AuditEvents (one per DMP it touched) in the unit's transaction, and note that the
    caller opened the DMPs `accessed`; returns those they opened for the first time."""
    touched: dict[str, Touched] = u.touched or {"": Touched()}
    events = [(key, _event(u.caller, u.req, status, error, key, touched[key], u)) for key in sorted(touched)]
    hiding = {key: trace_facts(u.owner, touched[key].named) for key in touched if touched[key].named}
    return append(u.tx, events, u.owner, u.req.base_url, accessed=accessed, when=u.now, hiding=hiding)


def append(tx: Tx, events: list[tuple[str, dict]], owner: str, base_url: str, *, accessed: Sequence[str] = (),
           when: object = None, hiding: Mapping[str, AccessFacts] | None = None) -> set[str]:
    """Chain and store AuditEvents (patient key, body), one per chain; `hiding`: a chain's event's access facts
    when it names hidden resources (`policy.facts.trace_facts`), the bare owner otherwise."""
    chained = []
    for key, body in events:
        seq_mark, prev_mark = f"@@seq-{uuid.uuid4().hex}@@", f"@@prev-{uuid.uuid4().hex}@@"
        body["extension"] = [{"url": CHAIN_URL, "extension": [
            {"url": "sequence", "valueInteger": seq_mark}, {"url": "previous", "valueString": prev_mark}]}]
        rid, at = str(uuid.uuid4()), now_utc()
        stamped = content.stamp(body, rid, 1, at)
        new = NewResource("AuditEvent", rid, key, fhirjson.dumps(stamped), at, {},  # indexed when searched
                          facts=(hiding or {}).get(key) or AccessFacts(owner=owner))
        chained.append(traces.Event(new, f'"{seq_mark}"', prev_mark))
    return traces.append(tx, chained, accessor=owner, accessed=accessed, when=when or now_utc())


def digest(text: str) -> str:
    return traces.digest(text)


def _event(caller: Caller, req: FhirRequest, status: int, error: FhirError | None, key: str, touched: Touched,
           u: Unit) -> dict:
    interaction = req.interaction
    agent: dict = {
        "type": {"text": caller.actor},
        "who": {"identifier": {**({"system": IDNATPS} if caller.actor == "professional" else {}), "value": caller.sub},
                "display": f"{caller.actor} {caller.sub}"},
        "requestor": True,
        "purposeOfUse": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                      "code": caller.purpose_of_use}],
                          **({"text": caller.access_reason} if caller.access_reason else {})}],
    }
    if caller.profession:
        agent["role"] = [{"coding": [{"system": TRE_G15, "code": caller.profession}]}]
    if caller.organization:
        agent["location"] = {"display": caller.organization}
    event: dict = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": _subtype(interaction, req)}],
        "action": _ACTIONS.get(interaction, "E"),
        "recorded": instant(u.now),
        "outcome": "0" if status < 400 else ("4" if status < 500 else "8"),
        "agent": [agent],
        "source": {"observer": {"display": "fhir-dmp"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}]},
    }
    if error is not None:
        event["outcomeDesc"] = "; ".join(i.diagnostics for i in error.issues)[:1000] or f"HTTP {status}"
    entities = []
    if key:
        entities.append({"what": {"reference": f"Patient/{key}"},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}})
    references = touched.references
    entities += [{"what": {"reference": r}} for r in references if r != f"Patient/{key}"]
    query = touched.query
    if query is None and req.query and interaction.startswith(("search", "history")):
        query = req.query_text
    if query is not None:
        entities.append({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                         "query": base64.b64encode(f"{req.resource_type or ''}?{query}".encode()).decode()})
    if entities:
        event["entity"] = entities
    return event


def _subtype(interaction: str, req: FhirRequest) -> str:
    if interaction == "batch/transaction":
        kind = req.body.get("type") if isinstance(req.body, dict) else None
        return kind if kind in ("batch", "transaction") else "transaction"
    if interaction.startswith("operation"):
        return "operation"
    return interaction


# -- verification ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Broken:
    chain: str  # the patient key ('' for the server chain)
    event: str  # the AuditEvent id where the chain breaks ('' for the head)
    reason: str


def verify(db: Database) -> Iterator[tuple[str, int, Broken | None]]:
    """For each chain: (key, events checked, the first broken link or None).

    The chains are those with a head row and those with stored events (removing a head row must not take its
    events out of the check). Each chain's head and events are read from one snapshot (REPEATABLE READ on
    PostgreSQL; a SQLite transaction is one snapshot), so writers appending meanwhile are not reported."""
    with db.transaction() as conn:
        keys = traces.audit_chains(conn)
    for key in sorted(keys):
        with db.snapshot() as conn:
            head = traces.chain_head(conn, key)
            rows = traces.audit_contents(conn, key)
        yield key, len(rows), first_break(key, rows, head)


def chain_link(text: str | None) -> tuple[int, str] | None:
    """An event's (sequence number, previous hash) as stored, None when unreadable."""
    try:
        body = fhirjson.loads(text or "")
        link = {e["url"]: e for e in next(x for x in body["extension"] if x["url"] == CHAIN_URL)["extension"]}
        seq, prev = link["sequence"]["valueInteger"], link["previous"]["valueString"]
    except (ValueError, KeyError, StopIteration, TypeError):
        return None
    return (seq, prev) if isinstance(seq, int) and isinstance(prev, str) else None


def first_break(key: str, rows: list[tuple[str, str | None]], head: tuple[int, str] | None,
                start: tuple[int, str, str] = (0, GENESIS, "")) -> Broken | None:
    """The first broken link of a chain's `rows`, which follow the event `start` (seq, hash, id; none: the
    chain's beginning), up to its `head`."""
    expected_seq, previous, previous_id = start[0] + 1, start[1], start[2]
    for rid, text in rows:
        link = chain_link(text)
        if link is None:
            return Broken(key, rid, "the event has no readable chain link (altered or removed content)")
        seq, prev = link
        if seq != expected_seq:
            return Broken(key, rid, f"sequence {seq} where {expected_seq} was expected (an event was removed)")
        if prev != previous:
            if not previous_id:
                return Broken(key, rid, "its 'previous' hash is not the start of a chain (altered)")
            return Broken(key, rid, f"its 'previous' hash does not match the preceding event {previous_id} "
                                    "(that event, or this one's link, was altered)")
        previous, expected_seq, previous_id = digest(text or ""), expected_seq + 1, rid
    if head is None:
        return Broken(key, "", "the chain has events but no head row (the head was removed)")
    if head != (expected_seq - 1, previous):
        return Broken(key, "", f"the chain head (event {head[0]}) does not match the last stored event "
                               f"({expected_seq - 1}{' ' + previous_id if previous_id else ''}): "
                               "the last event was altered or removed")
    return None
