"""A Subscription as a way around a SMART scope (services/scoping.py, services/notifications.py): it is a standing
search whose results the server sends long after the token is gone, so creating or changing one needs search on its
topic's type and on what its filter's chains reach; replaying its events (`$events`) or reading their count
(`$status`) needs search on that type from the token asking now, whatever the creator's token granted. Without a
`scope` claim the DMP rules alone decide."""

from __future__ import annotations

from tests.fhirclient import DOCTOR, json_of
from tests.receiver import Receiver
from tests.services.subscribing import INS, World, receiver, subscription, world  # noqa: F401 - fixtures

FEED = "user/Subscription.cruds"


def test_subscribing_needs_the_topic_type_s_scopes(world: World, receiver: Receiver) -> None:  # noqa: F811
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}", content="full-resource")
    refused = world.as_({**DOCTOR, "scope": FEED}).post("Subscription", body)
    assert refused.status_code == 403, refused.data
    assert "user/DocumentReference.s" in json_of(refused)["issue"][0]["diagnostics"]
    chained = subscription(receiver.url, f"DocumentReference?patient.identifier={INS}")
    refused = world.as_({**DOCTOR, "scope": FEED + " user/DocumentReference.rs"}).post("Subscription", chained)
    assert refused.status_code == 403 and "user/Patient.s" in json_of(refused)["issue"][0]["diagnostics"]
    allowed = world.as_({**DOCTOR, "scope": FEED + " user/DocumentReference.rs"}).post("Subscription", body)
    assert allowed.status_code == 201, allowed.data
    sid = json_of(allowed)["id"]
    changed = world.as_({**DOCTOR, "scope": FEED}).put(f"Subscription/{sid}", {**body, "id": sid})
    assert changed.status_code == 403  # nor turned into another search by an update


def test_replaying_events_and_reading_the_status_need_the_topic_type_too(world: World,  # noqa: F811
                                                                         receiver: Receiver) -> None:  # noqa: F811
    sid = world.subscribe(DOCTOR, receiver.url)
    only = world.as_({**DOCTOR, "scope": FEED})
    events = only.get(f"Subscription/{sid}/$events?content=full-resource")
    assert events.status_code == 403 and "user/DocumentReference.s" in json_of(events)["issue"][0]["diagnostics"]
    status = only.get(f"Subscription/{sid}/$status")
    assert status.status_code == 403 and "user/DocumentReference.s" in json_of(status)["issue"][0]["diagnostics"]
    assert only.get("Subscription/$status").status_code == 403
    both = world.as_({**DOCTOR, "scope": FEED + " user/DocumentReference.rs"})
    assert both.get(f"Subscription/{sid}/$events").status_code == 200
    assert both.get(f"Subscription/{sid}/$status").status_code == 200
    assert world.as_(DOCTOR).get(f"Subscription/{sid}/$events").status_code == 200  # no scope claim
