"""Subscription events, numbered in the transaction of the write that caused them (a before-commit step of the
unit of work, `Pipeline._finish`): the outbox the delivery worker reads (docs/subscriptions.md).

An event is kept for a subscriber only if they may see its resource at that moment: one search of theirs, the
subscription's filter ANDed with the created resources' ids, with their scope in its WHERE clause, exactly the
ITI-67 they could run then. A unit that created no DocumentReference or SubmissionSet pays nothing; one that did
pays one indexed statement when nobody subscribes to its DMPs.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from urllib.parse import parse_qsl

from fhir_dmp import fhirjson
from fhir_dmp.policy import subscriptions as rules
from fhir_dmp.policy.access import confine, narrow
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import moment
from fhir_dmp.search.parse import parse_query
from fhir_dmp.services import wakeup
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries
from fhir_dmp.storage import subscriptions as store

TOPIC_TYPES = ("DocumentReference", "List")  # what the offered topics are about (capability/subscription-topics)


def created(u: Unit) -> dict[str, list[tuple[str, str]]]:
    """The resources of the topics' types this unit created, by DMP: (type, id), from what it touched."""
    found: dict[str, list[tuple[str, str]]] = {}
    for key, touched in u.touched.items():
        for ref in touched.references:
            parts = ref.split("/")
            if key and len(parts) == 4 and parts[0] in TOPIC_TYPES and parts[2:] == ["_history", "1"]:
                found.setdefault(key, []).append((parts[0], parts[1]))
    return found


@lru_cache(maxsize=1024)
def _filter(resource_type: str, query: str) -> c.Criterion:
    """A stored filter, as parsed when the subscription was accepted (checked then: it parses)."""
    return parse_query(resource_type, parse_qsl(query, keep_blank_values=True), strict=False, default_count=1,
                       max_count=1).criteria


def capture(u: Unit) -> int:
    """Number and store the events this unit's creations give each live subscription; returns how many."""
    news = created(u)
    if not news:
        return 0
    types = sorted({t for items in news.values() for t, _ in items})
    seen: dict[tuple[str, str, str, str], list[str]] = {}  # one search per subscriber, DMP and filter
    events: list[tuple[str, str, list[str]]] = []
    for sub in store.candidates(u.tx, sorted(news), types):
        if _ended(sub.body, u.now):
            continue
        for key in ([sub.patient_key] if sub.patient_key else sorted(news)):
            ids = tuple(i for t, i in news.get(key, []) if t == sub.resource_type)
            if not ids:
                continue
            asked = (sub.subscriber, key, sub.resource_type, sub.criteria)
            if asked not in seen:
                seen[asked] = _visible(u, rules.load_subscriber(sub.subscriber), key, sub.resource_type,
                                       sub.criteria, ids)
            if seen[asked]:
                events.append((sub.id, key, seen[asked]))
    total = len(store.number_many(u.tx, events, u.now))
    if total:
        u.after_commit.append(wakeup.wake)
    return total


def _visible(u: Unit, subscriber: Caller, key: str, resource_type: str, criteria: str,
             ids: tuple[str, ...]) -> list[str]:
    """Which of `ids` (created in DMP `key`) the subscriber's ITI-67 with the subscription's filter would return
    now, as `Type/id/_history/version`: their scope in its WHERE clause; none when the DMP is closed to them."""
    scope = rules.event_scope(subscriber, u.dmp(key), resource_type, u.rt.matrix, u.now)
    if scope is None:
        return []
    where = c.AllOf((c.IdIn(ids), c.PatientIs(key), confine(_filter(resource_type, criteria), scope, resource_type)))
    found = queries.find(u.tx, resource_type, where, limit=len(ids) + 1, scope=narrow(scope, resource_type))
    return [f"{s.resource_type}/{s.id}/_history/{s.version_id}" for s in found]


def _ended(body: str, now: datetime) -> bool:
    """A subscription past its `end` hears of nothing more."""
    end = moment(fhirjson.loads(body).get("end"))
    return end is not None and end <= now
