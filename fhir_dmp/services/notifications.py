"""Notification Bundles (the R4 backport's `history` Bundle, its SubscriptionStatus `Parameters` first) and the
`$status` and `$events` operations (docs/subscriptions.md).

Every resource a notification names is read as its subscriber, now, with their scope in the read's SQL
(`reads.visible`): an event whose resource they may no longer see keeps its number (the receiver sees no gap)
but names nothing; a `full-resource` payload is what a read of theirs would return.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from fhir_dmp.errors import FhirError, bad_request
from fhir_dmp.policy import scopes
from fhir_dmp.policy import subscriptions as rules
from fhir_dmp.policy.caller import Caller
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.services import reads, results, subscriptions, wakeup
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import subscriptions as store
from fhir_dmp.storage.records import Stored
from fhir_dmp.storage.subscriptions import Event, SubscriptionRow

OPERATIONS = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
STATUS_DEFINITION = OPERATIONS + "backport-subscription-status"
EVENTS_DEFINITION = OPERATIONS + "backport-subscription-events"
MAX_REPLAY = 100  # events per `$events` answer
MAX_DIGITS = 18  # an event number fits the database's BIGINT column (more: a 400, not a driver fault)


@dataclass(frozen=True)
class Shown:
    event: Event
    stored: Stored | None  # None: the subscriber may not see it now (or it is gone)


def as_subscriber(u: Unit, row: SubscriptionRow) -> Unit:
    """A unit on the same transaction acting as the subscriber replaying its events (their scope, their trace):
    the owner as their present token says (policy `replayer`)."""
    return Unit(u.rt, rules.replayer(u.caller, row.owner, row.subscriber), u.req, tx=u.tx, now=u.now)


def shown(sub: Unit, events: list[Event]) -> list[Shown]:
    out = []
    for event in events:
        rtype, rid = event.focus.split("/")[:2]
        try:
            refusal = rules.scope_refusal(sub.caller, rtype)  # their token's SMART scopes, as at the event
            stored = reads.visible(sub, rtype, rid) if refusal is None else None
        except FhirError:  # the DMP is closed to them now
            stored = None
        out.append(Shown(event, None if stored is None or stored.deleted else stored))
    return out


def status_parameters(row: SubscriptionRow, kind: str, events: list[Shown] = (), *,  # type: ignore[assignment]
                      content: str | None = None, reader: Caller | None = None) -> dict:
    """A SubscriptionStatus (R4: Parameters) of `kind`: handshake, heartbeat, event-notification, query-status,
    query-event. `reader`: who asks (`$status`; None: the subscriber's own notifications); to others than the owner,
    without `events-since-subscription-start` (0..1) nor the error, and in error reads active (policy
    `sees_delivery`: they would tell the patient of documents hidden from them)."""
    told = reader is None or rules.sees_delivery(reader, row.owner)
    status = row.status if reader is None else rules.shown_status(reader, row.owner, row.status)
    content = content or row.content
    params: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": f"{row.base_url}/Subscription/{row.id}"}},
        {"name": "topic", "valueCanonical": row.topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
    ]
    if told:
        params.append({"name": "events-since-subscription-start", "valueString": str(row.events)})
    for item in events:
        part = [{"name": "event-number", "valueString": str(item.event.number)},
                {"name": "timestamp", "valueInstant": instant(item.event.occurred)}]
        if item.stored is not None and content != "empty":
            part.append({"name": "focus", "valueReference": {
                "reference": f"{row.base_url}/{item.stored.resource_type}/{item.stored.id}"}})
        params.append({"name": "notification-event", "part": part})
    if told and row.status == "error" and row.error:
        params.append({"name": "error", "valueCodeableConcept": {"text": row.error}})
    return {"resourceType": "Parameters", "parameter": params}


def bundle(sub: Unit | None, row: SubscriptionRow, kind: str, events: list[Shown] = (),  # type: ignore[assignment]
           *, content: str | None = None) -> dict:
    """A notification (or `$events`) Bundle: `history`, the status first, then the resources as `content` says."""
    content = content or row.content
    entries: list[dict] = [{
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": status_parameters(row, kind, events, content=content),
        "request": {"method": "GET", "url": f"{row.base_url}/Subscription/{row.id}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for item in events:
            if item.stored is None:
                continue
            entry: dict = {"fullUrl": f"{row.base_url}/{item.stored.resource_type}/{item.stored.id}"}
            if content == "full-resource" and sub is not None:
                entry["resource"] = reads.shown(sub, item.stored)
            entry["request"] = {"method": "POST", "url": item.stored.resource_type}
            entry["response"] = {"status": "201"}
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history", "timestamp": instant(now_utc()),
            "entry": entries}


# -- $status, $events --------------------------------------------------------------------------------------------
def status(u: Unit, req: FhirRequest) -> FhirResponse:
    """`Subscription/{id}/$status` (an errored subscription its owner asks about is asked for again: a new
    handshake, then the events kept meanwhile), or `Subscription/$status?id=&status=` over those the caller may
    list."""
    if req.id is not None:
        row = subscriptions.visible(u, req.id)
        _within_scopes(u, [row])
        if row.status == "error" and rules.may_manage(u.caller, row.owner):
            store.change(u.tx, row.id, {"status": "requested", "failures": 0, "next_attempt": None, "error": None})
            row = replace(row, status="requested", failures=0, next_attempt=None, error=None)
            u.after_commit.append(wakeup.wake)
        rows = [row]
    else:
        listing = rules.listing(u.caller, subscriptions.own_dmp(u))
        params = subscriptions.plain(_params(req))
        ids = [v for k, v in params if k == "id"]
        statuses = [v for k, v in params if k == "status"]
        rows = [] if listing.nothing else store.listed(
            u.tx, owner=listing.owner, patient_key=listing.patient_key, hearers=listing.hearers, statuses=statuses,
            ids=ids)
        _within_scopes(u, rows)
        for found in rows:
            u.touch(found.patient_key, f"Subscription/{found.id}")
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "search": {"mode": "match"}, "resource": status_parameters(
        r, "query-status", reader=u.caller)} for r in rows]
    path = f"Subscription/{req.id}/$status" if req.id else "Subscription/$status"
    return FhirResponse(200, results.bundle("searchset", entries, results.page_links(req.base_url, path,
                                                                                    list(req.query), None), None))


def events(u: Unit, req: FhirRequest) -> FhirResponse:
    """`Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`: the events kept, replayed as
    their subscriber may see them now (the owner asks; up to MAX_REPLAY at a time)."""
    if req.id is None:
        raise method_not_allowed(req, (), "$events is an instance operation: Subscription/{id}/$events")
    row = subscriptions.managed(u, req.id)
    _within_scopes(u, [row])
    params = dict(subscriptions.plain(_params(req)))
    low = _number(params.get("eventsSinceNumber"), "eventsSinceNumber", 1)
    high = _number(params.get("eventsUntilNumber"), "eventsUntilNumber", row.events)
    content = params.get("content") or row.content
    if content not in subscriptions.CONTENTS:
        raise bad_request(f"content must be one of {', '.join(subscriptions.CONTENTS)}", "content")
    sub = as_subscriber(u, row)
    found = shown(sub, store.between(u.tx, row.id, low, high, MAX_REPLAY))
    for key, touched in sub.touched.items():
        for ref in touched.references:
            u.touch(key, ref)
        for facts in touched.named:  # the replay's trace hides as the documents it names
            u.touch(key, facts=facts)
    return FhirResponse(200, bundle(sub, row, "query-event", found, content=content))


def _within_scopes(u: Unit, rows: list[SubscriptionRow]) -> None:
    """The token asking holds for what a subscription tells of its topic's type (policy/scopes.py decides), as its
    creator's did: its events (`$events`) and their count (`$status`) are the results of a search of that type.
    A replay is then read as that token too (policy `replayer`: its claims and scopes, never the creator's wider
    ones). The type is known once the subscription is found: checked here."""
    wanted = scopes.reaching("subscription", sorted({row.resource_type for row in rows}))
    refusal = scopes.refusal(u.caller.scopes, u.caller.actor, wanted)
    if refusal is not None:
        raise refusal


def _params(req: FhirRequest) -> list[tuple[str, str]]:
    """The operation's parameters, from the URL or a Parameters body."""
    pairs = list(req.query)
    body = req.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if isinstance(p, dict) and value is not None:
                pairs.append((str(p.get("name")), str(value)))
    return pairs


def _number(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_DIGITS:
        raise bad_request(f"{name} must be an event number (digits 0-9, at most {MAX_DIGITS})", name)
    return int(value)
