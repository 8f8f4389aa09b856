"""The outbox's SQL: event numbers without gaps (a rolled-back write leaves none), and claims that two workers
never share."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from fhir_dmp.search.dates import now_utc
from fhir_dmp.storage import subscriptions as store
from fhir_dmp.storage.subscriptions import SubscriptionRow


def _row(sid: str, status: str = "active") -> SubscriptionRow:
    return SubscriptionRow(sid, "A", "professional|1", "{}", status, "topic", "DocumentReference", "patient=A",
                           "https://ehr.example.org/hook", "id-only", None, 10, 20, "", "{}", 1, now_utc())


def test_numbers_have_no_gap_when_a_write_rolls_back(database):  # type: ignore[no-untyped-def]
    with database.transaction(write=True) as tx:
        store.insert_subscription(tx, _row("s1"))
        assert store.number_events(tx, "s1", "A", ["DocumentReference/a/_history/1"], now_utc()) == [1]
    with pytest.raises(RuntimeError), database.transaction(write=True) as tx:
        store.number_events(tx, "s1", "A", ["DocumentReference/b/_history/1"], now_utc())
        raise RuntimeError("the document's write failed")
    with database.transaction(write=True) as tx:
        assert store.number_events(tx, "s1", "A", ["DocumentReference/c/_history/1",
                                                   "DocumentReference/d/_history/1"], now_utc()) == [2, 3]
        assert [e.focus.split("/")[1] for e in store.pending(tx, "s1", 0, 10)] == ["a", "c", "d"]


def test_a_subscription_deleted_meanwhile_numbers_nothing_and_fails_no_write(database):  # type: ignore[no-untyped-def]
    with database.transaction(write=True) as tx:
        assert store.number_events(tx, "gone", "A", ["DocumentReference/a/_history/1"], now_utc()) == []
        assert store.number_many(tx, [("gone", "A", ["DocumentReference/a/_history/1"]),
                                      ("gone2", "A", ["DocumentReference/a/_history/1"])], now_utc()) == []


def test_several_subscriptions_are_numbered_together(database):  # type: ignore[no-untyped-def]
    with database.transaction(write=True) as tx:
        for sid in ("s1", "s2", "s3"):
            store.insert_subscription(tx, _row(sid))
        store.number_events(tx, "s2", "A", ["DocumentReference/x/_history/1"], now_utc())
        a, b = "DocumentReference/a/_history/1", "DocumentReference/b/_history/1"
        numbers = store.number_many(tx, [("s1", "A", [a, b]), ("s2", "A", [a]), ("s3", "A", [])], now_utc())
        assert sorted(numbers) == [1, 2, 2]
        assert [(e.number, e.focus[18]) for e in store.pending(tx, "s1", 0, 10)] == [(1, "a"), (2, "b")]
        assert [(e.number, e.focus[18]) for e in store.pending(tx, "s2", 0, 10)] == [(1, "x"), (2, "a")]
        assert store.pending(tx, "s3", 0, 10) == [] and store.get(tx, "s3").events == 0


def test_a_claimed_subscription_is_not_claimed_again_until_its_lease_ends(database):  # type: ignore[no-untyped-def]
    now = now_utc()
    with database.transaction(write=True) as tx:
        for i in range(6):
            store.insert_subscription(tx, _row(f"s{i}", "requested"))
    with database.transaction(write=True) as tx:
        first = store.claim(tx, now, 30, 4)
    with database.transaction(write=True) as tx:
        second = store.claim(tx, now, 30, 4)
    assert len(first) == 4 and len(second) == 2 and not {r.id for r in first} & {r.id for r in second}
    with database.transaction(write=True) as tx:
        assert store.claim(tx, now, 30, 4) == []
        assert len(store.claim(tx, now + timedelta(seconds=300), 30, 10)) == 6  # leases expired: taken over


def test_concurrent_claims_never_share_a_subscription(database):  # type: ignore[no-untyped-def]
    with database.transaction(write=True) as tx:
        for i in range(40):
            store.insert_subscription(tx, _row(f"s{i:02d}", "requested"))
    got: list[list[str]] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        while True:
            with database.transaction(write=True) as tx:
                claimed = store.claim(tx, now_utc(), 30, 3)
            if not claimed:
                break
            mine += [r.id for r in claimed]
        with lock:
            got.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [sid for mine in got for sid in mine]
    assert sorted(every) == [f"s{i:02d}" for i in range(40)]  # each once
