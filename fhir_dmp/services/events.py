"""Subscription events, numbered in the transaction of the write that caused them (a before-commit step of the
unit of work, `Pipeline._finish`): the outbox the delivery worker reads (docs/subscriptions.md).

An event is kept for a subscriber only if they may see its resource at that moment: one search of theirs, the
subscription's filter ANDed with the created resources' ids, with their scope in its WHERE clause, exactly the
ITI-67 they could run then. A unit that created no DocumentReference or SubmissionSet pays nothing; one that did
pays one indexed statement when nobody subscribes to its DMPs.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl

from fhir_dmp.policy import subscriptions as rules
from fhir_dmp.policy.access import confine, narrow
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
    subs = store.candidates(u.tx, sorted(news), types)
    total = 0
    for sub in subs:
        subscriber = rules.load_subscriber(sub.subscriber)
        for key in ([sub.patient_key] if sub.patient_key else sorted(news)):
            ids = tuple(i for t, i in news.get(key, []) if t == sub.resource_type)
            if not ids:
                continue
            scope = rules.event_scope(subscriber, u.dmp(key), u.rt.matrix, u.now)
            if scope is None:
                continue
            where = c.AllOf((c.IdIn(ids), c.PatientIs(key), confine(_filter(sub.resource_type, sub.criteria), scope)))
            seen = queries.find(u.tx, sub.resource_type, where, limit=len(ids) + 1,
                                scope=narrow(scope, sub.resource_type))
            foci = [f"{s.resource_type}/{s.id}/_history/{s.version_id}" for s in seen]
            total += len(store.number_events(u.tx, sub.id, key, foci, u.now))
    if total:
        u.after_commit.append(wakeup.wake)
    return total
