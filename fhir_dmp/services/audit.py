"""Traces (dmp-reference.md 7): one AuditEvent per interaction and DMP, allowed or refused, hash-chained.

Each DMP has its own chain (events tied to no DMP go on the server's chain, key ''): an event carries the
sequence number and the SHA-256 of the previous event's stored JSON, and the chain head (`audit_chain`)
the hash of the last one. Altering, removing or reordering any stored event breaks a link that
`verify` reports. Writers lock only the chain rows of the DMPs they touched, in key order.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services import content
from fhir_dmp.services.guard import Guard, Touched
from fhir_dmp.services.requests import FhirRequest
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.db import Database

CHAIN_URL = "https://fhir-dmp.example.org/StructureDefinition/audit-chain"
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
_ACTIONS = {"create": "C", "read": "R", "vread": "R", "history-instance": "R", "history-type": "R",
            "history-system": "R", "update": "U", "patch": "U", "delete": "D"}


def record(conn: Connection, guard: Guard, req: FhirRequest, status: int, error: FhirError | None,
           base_url: str) -> None:
    """Write this interaction's AuditEvents (one per DMP it touched) in the caller's transaction."""
    touched: dict[str, Touched] = guard.touched or {"": Touched()}
    events = []
    for key in sorted(touched):
        body = _event(guard.caller, req, status, error, key, touched[key], guard)
        events.append((key, body))
    append(conn, events, guard.owner, base_url)


def append(conn: Connection, events: list[tuple[str, dict]], owner: str, base_url: str) -> None:
    """Chain and store AuditEvents (patient key, body); keys in sorted order, so writers never deadlock."""
    if not events:
        return
    heads = repo.lock_chains(conn, [key for key, _ in events])
    news = []
    for key, body in sorted(events, key=lambda e: e[0]):
        seq, head = heads[key]
        body["extension"] = [{"url": CHAIN_URL, "extension": [
            {"url": "sequence", "valueInteger": seq + 1}, {"url": "previous", "valueString": head}]}]
        rid = str(uuid.uuid4())
        when = now_utc()
        stamped = content.stamp(body, rid, 1, when)
        text = fhirjson.dumps(stamped)
        heads[key] = (seq + 1, digest(text))
        news.append(repo.NewResource("AuditEvent", rid, key, text, when, index_rows("AuditEvent", stamped, base_url),
                                     facts=AccessFacts(owner=owner)))
    repo.advance_chains(conn, {key: heads[key] for key, _ in events})
    repo.insert_resources(conn, news)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _event(caller: Caller, req: FhirRequest, status: int, error: FhirError | None, key: str, touched: Touched,
           guard: Guard) -> dict:
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
        "recorded": instant(guard.now),
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
        query = "&".join(f"{k}={v}" for k, v in req.query)
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
        keys = repo.audit_chains(conn)
    for key in sorted(keys):
        with db.snapshot() as conn:
            head = repo.chain_head(conn, key)
            rows = repo.audit_contents(conn, key)
        yield key, len(rows), _first_break(key, rows, head)


def _first_break(key: str, rows: list[tuple[str, str | None]], head: tuple[int, str] | None) -> Broken | None:
    previous, expected_seq, previous_id = repo.GENESIS, 1, ""
    for rid, text in rows:
        try:
            body = fhirjson.loads(text or "")
            link = {e["url"]: e for e in next(x for x in body["extension"] if x["url"] == CHAIN_URL)["extension"]}
            seq, prev = link["sequence"]["valueInteger"], link["previous"]["valueString"]
        except (ValueError, KeyError, StopIteration, TypeError):
            return Broken(key, rid, "the event has no readable chain link (altered or removed content)")
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
