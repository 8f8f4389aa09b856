"""The delivery worker: handshakes, notifications and heartbeats POSTed to the subscriptions' rest-hook endpoints
(docs/subscriptions.md).

It claims subscriptions with work due, each with a lease (storage/subscriptions.py `claim`: row locks skipped by
other workers on PostgreSQL, SQLite's write lock elsewhere), so several workers never deliver one subscription at
once and its events leave in order. No transaction is open while an endpoint is called: a slow or dead receiver
holds nobody's lock and never slows a write. Delivered means acknowledged (2xx): at least once, numbered, so the
receiver deduplicates. Failures back off exponentially; after `subscription_max_failures` in a row (or a failed
handshake) the subscription goes to `error` until its owner asks its `$status` or updates it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import replace
from datetime import datetime, timedelta

from fhir_dmp import fhirjson
from fhir_dmp.policy import subscriptions as rules
from fhir_dmp.search.dates import now_utc
from fhir_dmp.services import audit, endpoints, notifications, wakeup
from fhir_dmp.services.endpoints import Sent
from fhir_dmp.services.requests import FhirRequest
from fhir_dmp.services.runtime import Runtime
from fhir_dmp.services.subscriptions import channel_headers
from fhir_dmp.services.unit import Touched, Unit
from fhir_dmp.storage import subscriptions as store
from fhir_dmp.storage.db import TransientConflict, Unavailable
from fhir_dmp.storage.subscriptions import SubscriptionRow

log = logging.getLogger(__name__)
LEASE_MARGIN = 30  # seconds beyond the endpoint's timeout before another worker may take a subscription over
CLAIM = 8  # subscriptions served at once by one worker (each endpoint in a thread of its own)
PER_OWNER = CLAIM // 2  # of which one owner's, at most
DEFER = 1  # seconds an owner's subscription waits for a slot of theirs


class Worker:
    """One delivery worker (a thread of `serve`, or `fhir-dmp worker`); `run_once` is one round.
    Each claimed subscription is served in a thread of its own (a daemon: a process that stops never waits for a
    receiver), at most CLAIM at once: a receiver that is slow, or never answers, holds one of CLAIM slots until its
    deadline, never the others' deliveries (the loop claims again as soon as a slot is free; a subscription's own
    events still leave in order, one exchange at a time)."""

    def __init__(self, rt: Runtime, *, poll: float = 0.5) -> None:
        self.rt = rt
        self.poll = poll
        self.busy: dict[Future, str] = {}  # in flight, with their owner
        self.owners: Counter[str] = Counter()
        self.lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.run_once(wait=False)
            except (Unavailable, TransientConflict) as exc:
                log.warning("subscription delivery: database unavailable (%s)", exc)
                busy = 0
            except Exception as exc:  # noqa: BLE001 - a worker thread must outlive one bad round (a database that
                # goes away mid-round may raise anything its driver raises): said in one line, tried again
                log.error("subscription delivery round failed: %s: %s", type(exc).__name__, str(exc)[:300])
                busy = 0
            if not busy:
                wakeup.NUDGE.wait(self.poll)
                wakeup.NUDGE.clear()

    def run_once(self, *, wait: bool = True) -> int:
        """Claim what is due (as many as free slots) and serve it, each in a thread of its own; `wait`: until all
        are served (a database away in one of them is raised here). Not waited for (the `run` loop), an owner holds
        at most PER_OWNER slots: one whose subscriptions all point to receivers that never answer cannot take every
        slot; the rest of theirs is leased back for DEFER seconds. Returns how many subscriptions were claimed."""
        with self.lock:
            free = CLAIM - len(self.busy)
        if free <= 0:
            return 0
        now = now_utc()
        with self.rt.db.transaction() as tx:
            if not store.anything_due(tx, now):
                return 0
        with self.rt.db.transaction(write=True) as tx:
            claimed = store.claim(tx, now, LEASE_MARGIN, free)
        futures, deferred = [], []
        with self.lock:
            for row in claimed:
                if not wait and self.owners[row.owner] >= PER_OWNER:  # waited for, a round holds nobody
                    deferred.append(row.id)
                    continue
                self.owners[row.owner] += 1
                future = self._submit(row)
                self.busy[future] = row.owner
                futures.append(future)
        for future in futures:
            future.add_done_callback(self._done)
        if deferred:
            with self.rt.db.transaction(write=True) as tx:
                for sid in deferred:
                    store.change(tx, sid, {"lease_until": now + timedelta(seconds=DEFER)})
        if wait:
            for future in futures:
                fault = future.result()
                if fault is not None:
                    raise fault
        return len(claimed)

    def _submit(self, row: SubscriptionRow) -> Future:
        future: Future = Future()

        def serve() -> None:
            future.set_result(self._serve_one(row))

        threading.Thread(target=serve, name=f"fhir-dmp-endpoint-{row.id}", daemon=True).start()
        return future

    def _done(self, future: Future) -> None:
        with self.lock:
            owner = self.busy.pop(future, None)
            if owner is not None:
                self.owners[owner] -= 1

    def _serve_one(self, row: SubscriptionRow) -> Exception | None:
        """Serve one subscription; the database's absence is returned (its lease ends by itself), any other fault
        backs the subscription off like a failed delivery."""
        try:
            self.serve(row)
        except (Unavailable, TransientConflict) as exc:
            log.warning("subscription %s: database unavailable (%s)", row.id, exc)
            return exc
        except Exception:  # noqa: BLE001 - the other subscriptions must not wait for this one's fault
            log.exception("subscription %s: delivery failed", row.id)
            self._failed(row, Sent(False, "the server could not prepare the notification"), now_utc())
        return None

    def serve(self, row: SubscriptionRow) -> None:
        if row.status == "requested":
            self._handshake(row)
        elif row.delivered < row.events:
            self._notify(row)
        else:
            self._heartbeat(row)

    # -- the three kinds of POST -------------------------------------------------------------------------------
    def _handshake(self, row: SubscriptionRow) -> None:
        sent = self.post(row, notifications.bundle(None, row, "handshake"))
        now = now_utc()
        if sent.ok:
            values = {"status": "active", "failures": 0, "next_attempt": None, "error": None, **self._sent(row, now)}
        else:
            values = {"status": "error", "error": f"handshake failed: {sent.error}"}
        with self.rt.db.transaction(write=True) as tx:  # unless its owner changed it meanwhile
            store.change(tx, row.id, {**values, "lease_until": None}, version_id=row.version_id)
            store.change(tx, row.id, {"lease_until": None})

    def _notify(self, row: SubscriptionRow) -> None:
        active = replace(row, status="active")
        with self.rt.db.transaction() as tx:
            sub = Unit(self.rt, rules.load_subscriber(row.subscriber), _request(row), tx=tx)
            shown = notifications.shown(sub, store.pending(tx, row.id, row.delivered, row.max_count))
            body = notifications.bundle(sub, active, "event-notification", shown)
        if not shown:  # its events are gone (their DMP was purged): nothing left to deliver
            self._release(row.id, {"delivered": row.events})
            return
        sent = self.post(row, body)
        now = now_utc()
        if not sent.ok:
            self._failed(row, sent, now)
            return
        with self.rt.db.transaction(write=True) as tx:
            store.acknowledge(tx, row.id, [s.event.number for s in shown], now,
                              {"failures": 0, "next_attempt": None, "lease_until": None, **self._sent(row, now)})
            self._trace(tx, row, sub.caller, sub.touched, now)

    def _heartbeat(self, row: SubscriptionRow) -> None:
        sent = self.post(row, notifications.bundle(None, row, "heartbeat"))
        now = now_utc()
        if not sent.ok:
            self._failed(row, sent, now)
            return
        self._release(row.id, {"failures": 0, "next_attempt": None, **self._sent(row, now)})

    def post(self, row: SubscriptionRow, body: dict) -> Sent:
        """POST a Bundle to the endpoint through the guarded client (services/endpoints.py: public addresses
        unless the operator named the host, no redirect, a deadline for the whole exchange, uniform errors)."""
        headers = {**channel_headers(fhirjson.loads(row.body)), "Content-Type": "application/fhir+json"}
        return endpoints.post(row.endpoint, fhirjson.dumps(body).encode(), headers, row.timeout,
                              self.rt.settings.subscription_endpoints)

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    def _sent(self, row: SubscriptionRow, now: datetime) -> dict:
        beat = now + timedelta(seconds=row.heartbeat) if row.heartbeat else None
        return {"last_sent": now, "heartbeat_at": beat}

    def _failed(self, row: SubscriptionRow, sent: Sent, now: datetime) -> None:
        failures = row.failures + 1
        settings = self.rt.settings
        values: dict = {"failures": failures, "error": sent.error,
                        "next_attempt": now + timedelta(seconds=settings.subscription_retry_base * 2 ** (failures - 1))}
        log.warning("subscription %s: delivery failed (%d in a row): %s", row.id, failures, sent.error)
        if failures >= settings.subscription_max_failures:
            with self.rt.db.transaction(write=True) as tx:
                store.change(tx, row.id, {"status": "error"}, version_id=row.version_id)
        self._release(row.id, values)

    def _release(self, sid: str, values: dict) -> None:
        with self.rt.db.transaction(write=True) as tx:
            store.change(tx, sid, {**values, "lease_until": None})

    def _trace(self, tx: object, row: SubscriptionRow, subscriber: object, touched: dict[str, Touched],
               now: datetime) -> None:
        """The delivered notification, traced as the subscriber's read: one AuditEvent in each DMP's chain it
        named (the patient's trail, and the subscriber's own: they are its agent)."""
        marks = {k: Touched(list(t.references)) for k, t in touched.items()} or {row.patient_key: Touched()}
        for entry in marks.values():
            entry.references.insert(0, f"Subscription/{row.id}")
        u = Unit(self.rt, subscriber, _request(row), tx=tx, now=now, touched=marks)  # type: ignore[arg-type]
        audit.record(u, 200, None)


def _request(row: SubscriptionRow) -> FhirRequest:
    return FhirRequest("POST", "Subscription", row.id, operation="$notify", base_url=row.base_url)


def start(rt: Runtime, *, poll: float = 0.5) -> threading.Event:
    """Run a worker in a daemon thread of this process; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=Worker(rt, poll=poll).run, args=(stop,), name="fhir-dmp-delivery", daemon=True).start()
    return stop
