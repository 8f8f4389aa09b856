"""Subscriptions and their outbox of events: the SQL of services/subscriptions.py and services/delivery.py.

Events are numbered in the transaction of the write that caused them (`number_events`: the subscription's counter
moved and the event rows inserted together), so a rolled-back write leaves no number behind. Workers claim a
subscription's delivery with a lease (`claim`: FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite's write lock
serialises the claims), never hold a transaction while they call an endpoint, and deliver its events in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, insert, or_, select, update

from fhir_dmp.storage import prepared
from fhir_dmp.storage.tables import subscription, subscription_event

LIVE = ("requested", "active", "error")  # statuses whose events are numbered (nothing is lost while in error)


@dataclass(frozen=True)
class SubscriptionRow:
    id: str
    patient_key: str
    owner: str
    subscriber: str
    status: str
    topic: str
    resource_type: str
    criteria: str
    endpoint: str
    content: str
    heartbeat: int | None
    timeout: int
    max_count: int
    base_url: str
    body: str
    version_id: int
    last_updated: datetime
    events: int = 0
    delivered: int = 0
    failures: int = 0
    next_attempt: datetime | None = None
    lease_until: datetime | None = None
    last_sent: datetime | None = None
    heartbeat_at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Event:
    subscription_id: str
    number: int
    patient_key: str
    focus: str  # Type/id/_history/version
    occurred: datetime
    delivered_at: datetime | None = None


_COLUMNS = [subscription.c[f.name] for f in fields(SubscriptionRow)]
_EVENT_COLUMNS = [subscription_event.c[f.name] for f in fields(Event)]


def _row(found: Any) -> SubscriptionRow:
    return SubscriptionRow(*found)


def insert_subscription(conn: Connection, row: SubscriptionRow) -> None:
    conn.execute(insert(subscription).values({f.name: getattr(row, f.name) for f in fields(SubscriptionRow)}))


def get(conn: Connection, sid: str) -> SubscriptionRow | None:
    found = conn.execute(select(*_COLUMNS).where(subscription.c.id == sid)).first()
    return None if found is None else _row(found)


def change(conn: Connection, sid: str, values: dict[str, Any], *, version_id: int | None = None) -> bool:
    """Update a subscription's columns (only at `version_id` when given): whether a row was changed."""
    where = [subscription.c.id == sid]
    if version_id is not None:
        where.append(subscription.c.version_id == version_id)
    return conn.execute(update(subscription).where(*where).values(**values)).rowcount == 1


def listed(conn: Connection, *, owner: str | None, patient_key: str | None, hearers: Sequence[str] = (),
           statuses: Sequence[str] = (), ids: Sequence[str] = (),
           updated: Sequence[tuple[datetime | None, datetime | None]] = (), limit: int = 1000) -> list[SubscriptionRow]:
    """Subscriptions of an owner, or on a DMP (with the multi-patient ones of `hearers` and of systems, who may hear
    of it), or all (both None: the server's own listing); `updated`: ranges [low, high) their last update falls in."""
    query = select(*_COLUMNS)
    if patient_key is not None:
        multi = or_(subscription.c.owner.in_(sorted(hearers)), subscription.c.owner.startswith("system|"))
        query = query.where(or_(subscription.c.patient_key == patient_key,
                                and_(subscription.c.patient_key == "", multi)))
    for low, high in updated:
        if low is not None:
            query = query.where(subscription.c.last_updated >= low)
        if high is not None:
            query = query.where(subscription.c.last_updated < high)
    if owner is not None:
        query = query.where(subscription.c.owner == owner)
    if statuses:
        query = query.where(subscription.c.status.in_(list(statuses)))
    if ids:
        query = query.where(subscription.c.id.in_(list(ids)))
    return [_row(r) for r in conn.execute(query.order_by(subscription.c.last_updated, subscription.c.id).limit(limit))]


# a unit of work writing into one DMP (nearly all of them): one statement compiled once, prepared on PostgreSQL
_LIVE_ON_ONE = (select(*_COLUMNS)
                .where(subscription.c.patient_key.in_([bindparam("key", ""), ""]), subscription.c.status.in_(LIVE))
                .order_by(subscription.c.id))


def candidates(conn: Connection, patient_keys: Sequence[str], resource_types: Sequence[str]) -> list[SubscriptionRow]:
    """The live subscriptions an event in these DMPs may concern: those on one of them, and the multi-patient
    ones ('' key). The one statement a write of a document pays when nobody subscribes (indexed, empty)."""
    keys = sorted(set(patient_keys) - {""})
    if len(keys) == 1:
        found = prepared.rows(conn, _LIVE_ON_ONE, {"key": keys[0]})
    else:
        found = list(conn.execute(select(*_COLUMNS).where(subscription.c.patient_key.in_([*keys, ""]),
                                                          subscription.c.status.in_(LIVE))
                                  .order_by(subscription.c.id)))
    types = set(resource_types)
    return [row for row in map(_row, found) if row.resource_type in types]


def number_events(conn: Connection, sid: str, patient_key: str, foci: Sequence[str], when: datetime) -> list[int]:
    """Give `foci` the subscription's next event numbers and store them in the outbox. The counter's row stays
    locked until the transaction ends: two writers feeding one subscription number one after the other."""
    if not foci:
        return []
    last = conn.execute(update(subscription).where(subscription.c.id == sid)
                        .values(events=subscription.c.events + len(foci))
                        .returning(subscription.c.events)).scalar_one_or_none()
    if last is None:  # deleted since the write read it: nobody left to tell
        return []
    numbers = list(range(last - len(foci) + 1, last + 1))
    conn.execute(insert(subscription_event), [
        {"subscription_id": sid, "number": n, "patient_key": patient_key, "focus": f, "occurred": when}
        for n, f in zip(numbers, foci, strict=True)])
    return numbers


def _due(now: datetime) -> Any:
    """Work due (a handshake, events to deliver, a heartbeat), not leased by another worker, past its back-off."""
    free = or_(subscription.c.lease_until.is_(None), subscription.c.lease_until < now)
    rested = or_(subscription.c.next_attempt.is_(None), subscription.c.next_attempt <= now)
    due = or_(subscription.c.status == "requested",
              and_(subscription.c.status == "active",
                   or_(subscription.c.delivered < subscription.c.events, subscription.c.heartbeat_at <= now)))
    return and_(due, free, rested)


def anything_due(conn: Connection, now: datetime) -> bool:
    """Whether `claim` would find work: asked in a read transaction first, so an idle worker never takes SQLite's
    write lock."""
    return conn.execute(select(subscription.c.id).where(_due(now)).limit(1)).first() is not None


def number_many(conn: Connection, events: Sequence[tuple[str, str, Sequence[str]]], when: datetime) -> list[int]:
    """`number_events` for several subscriptions at once (subscription id, patient key, foci): one UPDATE moving
    every counter, one INSERT of every event, whatever their number."""
    wanted = {sid: (key, list(foci)) for sid, key, foci in events if foci}
    if len(wanted) <= 1:
        return [n for sid, (key, foci) in wanted.items() for n in number_events(conn, sid, key, foci, when)]
    if conn.dialect.name == "postgresql":  # counters locked in id order: two writers never wait on each other
        conn.execute(select(subscription.c.id).where(subscription.c.id.in_(sorted(wanted)))
                     .order_by(subscription.c.id).with_for_update())
    step = case({sid: len(foci) for sid, (_, foci) in wanted.items()}, value=subscription.c.id, else_=0)
    moved = conn.execute(update(subscription).where(subscription.c.id.in_(sorted(wanted)))
                         .values(events=subscription.c.events + step)
                         .returning(subscription.c.id, subscription.c.events)).all()
    rows, numbers = [], []
    for sid, last in moved:
        key, foci = wanted[sid]
        first = last - len(foci) + 1
        numbers += range(first, last + 1)
        rows += [{"subscription_id": sid, "number": first + i, "patient_key": key, "focus": f, "occurred": when}
                 for i, f in enumerate(foci)]
    if rows:
        conn.execute(insert(subscription_event), rows)
    return numbers


def claim(conn: Connection, now: datetime, margin: float, limit: int) -> list[SubscriptionRow]:
    """Subscriptions with work due, leased to this worker (row locks held by another worker's claim are skipped on
    PostgreSQL). The worker serves them one after the other: each lease lasts until the endpoints before it and its
    own may all have timed out, plus `margin` seconds."""
    query = select(*_COLUMNS).where(_due(now)).order_by(subscription.c.next_attempt, subscription.c.id)
    query = query.limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=subscription)
    rows = [_row(r) for r in conn.execute(query)]
    waited = margin
    for row in rows:
        waited += 2 * row.timeout  # the connection's timeout, then the answer's
        conn.execute(update(subscription).where(subscription.c.id == row.id)
                     .values(lease_until=now + timedelta(seconds=waited)))
    return rows


def pending(conn: Connection, sid: str, after: int, limit: int) -> list[Event]:
    """The events after number `after`, in order."""
    query = (select(*_EVENT_COLUMNS)
             .where(subscription_event.c.subscription_id == sid, subscription_event.c.number > after)
             .order_by(subscription_event.c.number).limit(limit))
    return [Event(*r) for r in conn.execute(query)]


def between(conn: Connection, sid: str, low: int, high: int, limit: int) -> list[Event]:
    """The events numbered `low` to `high` (inclusive), in order (`$events`)."""
    query = (select(*_EVENT_COLUMNS)
             .where(subscription_event.c.subscription_id == sid, subscription_event.c.number >= low,
                    subscription_event.c.number <= high)
             .order_by(subscription_event.c.number).limit(limit))
    return [Event(*r) for r in conn.execute(query)]


def acknowledge(conn: Connection, sid: str, numbers: Sequence[int], when: datetime, values: dict[str, Any]) -> None:
    """The endpoint took these events: the subscription's delivered mark moves to the last one."""
    if numbers:
        conn.execute(update(subscription_event)
                     .where(subscription_event.c.subscription_id == sid,
                            subscription_event.c.number.in_(list(numbers)))
                     .values(delivered_at=when))
        values = {**values, "delivered": max(numbers)}
    conn.execute(update(subscription).where(subscription.c.id == sid).values(**values))


def remove(conn: Connection, sid: str) -> None:
    """A deleted subscription: gone, with its outbox."""
    conn.execute(delete(subscription_event).where(subscription_event.c.subscription_id == sid))
    conn.execute(delete(subscription).where(subscription.c.id == sid))
