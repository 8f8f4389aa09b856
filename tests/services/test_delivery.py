"""Delivery end to end, in-process: the app writes, a worker delivers to a real HTTP receiver started by the test.
A subscriber hears of a document only if they may see it at that moment, and of nothing else."""

from __future__ import annotations

import threading

from tests.fhirclient import DOCTOR, document, json_of
from tests.mhd.helpers import provide
from tests.receiver import Receiver, status_of
from tests.services import subscribing
from tests.services.subscribing import (
    DOC_TOPIC_MULTI,
    KINE,
    PATIENT,
    SS_TOPIC,
    World,
    block,
    masked,
)
from tests.serving import free_port

DISCHARGE = {"type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]}}  # a kiné sees it

world = subscribing.world
receiver = subscribing.receiver


def file(world: World, **extra: object) -> str:
    response = world.client.post("DocumentReference", document(world.pid, **extra))
    assert response.status_code == 201, response.data
    return json_of(response)["id"]


def notified(receiver: Receiver) -> list[str]:
    return [focus.rsplit("/", 1)[-1] for _, focus in receiver.events() if focus]


def test_each_subscriber_hears_of_what_they_may_see_and_nothing_else(world: World):
    with Receiver() as doctor, Receiver() as kine:
        world.subscribe(DOCTOR, doctor.url)
        world.subscribe(KINE, kine.url)
        world.deliver()
        consultation = file(world)
        discharge = file(world, **DISCHARGE)
        hidden = file(world, **masked())  # MASQUE_PS: neither is médecin traitant nor granted it
        world.deliver()
        assert notified(doctor) == [consultation, discharge]
        assert notified(kine) == [discharge]  # the matrix hides a consultation report from a kiné
        assert [n for n, _ in doctor.events()] == [1, 2] and [n for n, _ in kine.events()] == [1]
        assert hidden not in str(doctor.received) + str(kine.received)


def test_no_notification_after_a_block_or_once_the_dmp_is_closed(world: World):
    with Receiver() as doctor, Receiver() as patient:
        world.subscribe(DOCTOR, doctor.url)
        world.subscribe(PATIENT, patient.url)
        world.deliver()
        first = file(world)
        world.deliver()
        pending = file(world)  # numbered while the doctor may see it, delivered after the block
        assert world.client.post("Consent", block(world.pid, DOCTOR["sub"])).status_code == 201
        after_block = file(world)
        closed = world.as_(PATIENT).post(f"Patient/{world.pid}/$close", {
            "resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "déménagement"}]})
        assert closed.status_code == 200, closed.data
        after_closure = file(world)
        world.deliver()
        assert doctor.events()[0][1].endswith(first)
        assert [n for n, _ in doctor.events()] == [1, 2]  # no number for what they could not see then
        assert doctor.events()[1][1] is None  # and the one delivered after the block names nothing
        assert pending not in str(doctor.received) and after_block not in str(doctor.received)
        assert notified(patient) == [first, pending, after_block, after_closure]  # the patient still sees them


def test_payload_shapes(world: World):
    with Receiver() as empty, Receiver() as ids, Receiver() as full:
        for r, content in ((empty, "empty"), (ids, "id-only"), (full, "full-resource")):
            world.subscribe(DOCTOR, r.url, content=content)
        world.deliver()
        doc = file(world)
        world.deliver()
        [e], [i], [f] = (r.of_type("event-notification") for r in (empty, ids, full))
        assert [len(b["entry"]) for b in (e, i, f)] == [1, 2, 2]
        assert status_of(e)["events"] == [(1, None)]
        assert status_of(i)["events"][0][1].endswith(f"DocumentReference/{doc}")
        assert "resource" not in i["entry"][1] and i["entry"][1]["fullUrl"].endswith(doc)
        read = json_of(world.as_(DOCTOR).get(f"DocumentReference/{doc}"))
        assert f["entry"][1]["resource"] == read  # what a read of theirs returns
        assert all(b["type"] == "history" and b["entry"][0]["resource"]["resourceType"] == "Parameters"
                   for b in (e, i, f))


def test_events_are_numbered_without_gaps_and_replayed_by_events(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    world.deliver()
    docs = [file(world) for _ in range(3)]
    file(world, **masked())  # not theirs to see: no number
    docs.append(file(world))
    world.deliver()
    assert [n for n, _ in receiver.events()] == [1, 2, 3, 4]
    replay = json_of(world.as_(DOCTOR).get(f"Subscription/{sid}/$events?eventsSinceNumber=2&eventsUntilNumber=3"))
    assert replay["type"] == "history"
    assert status_of(replay)["type"] == "query-event"
    assert [f.rsplit("/", 1)[1] for _, f in status_of(replay)["events"]] == docs[1:3]
    assert world.as_(KINE).get(f"Subscription/{sid}/$events").status_code == 404
    assert world.as_(PATIENT).get(f"Subscription/{sid}/$events").status_code == 403
    status = json_of(world.as_(DOCTOR).get(f"Subscription/{sid}/$status"))
    assert status["type"] == "searchset" and status_of(status)["events-since-subscription-start"] == "4"


def test_a_receiver_down_then_up_loses_nothing_and_gets_each_number_once(world: World):
    receiver = Receiver().up()
    sid = world.subscribe(DOCTOR, receiver.url)
    world.deliver()
    receiver.down()
    docs = [file(world) for _ in range(3)]
    world.deliver()  # fails, backs off
    assert world.status(sid) == "active"
    receiver.up()
    try:
        world.deliver_until(lambda: len(receiver.events()) >= 3)
        docs.append(file(world))
        world.deliver_until(lambda: len(receiver.events()) >= 4)
        assert [n for n, _ in receiver.events()] == [1, 2, 3, 4]
        assert notified(receiver) == docs
    finally:
        receiver.down()


def test_an_endpoint_that_keeps_failing_goes_to_error_and_recovers_on_status(world: World):
    receiver = Receiver(free_port())
    sid = world.subscribe(DOCTOR, receiver.url)
    world.deliver()
    assert world.status(sid) == "error"  # the handshake failed
    file(world)  # kept meanwhile
    receiver.up()
    try:
        assert status_of(json_of(world.as_(DOCTOR).get(f"Subscription/{sid}/$status")))["status"] == "requested"
        world.deliver_until(lambda: len(receiver.events()) == 1)
        assert world.status(sid) == "active"
        receiver.status = 500  # now it fails at every notification: error after the allowed failures
        file(world)
        world.deliver_until(lambda: world.status(sid) == "error")
        receiver.status = 200
        assert world.as_(DOCTOR).get(f"Subscription/{sid}/$status").status_code == 200
        world.deliver_until(lambda: [n for n, _ in receiver.events()][-1:] == [2])
    finally:
        receiver.down()


def test_two_workers_racing_deliver_each_event_once_in_order(world: World, receiver: Receiver):
    from fhir_dmp.services.delivery import Worker

    sid = world.subscribe(DOCTOR, receiver.url, heartbeat=None)
    world.deliver()
    docs = [file(world) for _ in range(12)]
    stop = threading.Event()
    workers = [threading.Thread(target=Worker(world.worker.rt, poll=0.01).run, args=(stop,)) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        receiver.wait_for(lambda: len(receiver.events()) >= 12, 30)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert [n for n, _ in receiver.events()] == list(range(1, 13))
    assert notified(receiver) == docs
    assert world.status(sid) == "active"


def test_a_delivered_notification_is_traced_for_the_patient_and_the_subscriber(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    world.deliver()
    doc = file(world)
    world.deliver()
    def traced(who: dict, query: str) -> list[dict]:
        found = json_of(world.as_(who).get(f"AuditEvent?{query}&_count=100"))
        return [e["resource"] for e in found.get("entry", [])
                if any(x.get("what", {}).get("reference") == f"Subscription/{sid}"
                       for x in e["resource"].get("entity", []))
                and any(f"DocumentReference/{doc}" in x.get("what", {}).get("reference", "")
                        for x in e["resource"].get("entity", []))]
    [seen] = traced(PATIENT, f"patient={world.pid}")
    assert seen["agent"][0]["who"]["identifier"]["value"] == DOCTOR["sub"]
    assert traced(DOCTOR, f"patient={world.pid}")  # the subscriber's own trail


def test_a_multi_patient_subscription_hears_of_the_dmps_its_subscriber_may_open(world: World, receiver: Receiver):
    from tests.fhirclient import patient

    other = json_of(world.client.post("Patient", patient("2800175123456")))["id"]  # DOCTOR is not authorised there
    world.subscribe(DOCTOR, receiver.url, "DocumentReference?type=11488-4", topic=DOC_TOPIC_MULTI)
    world.deliver()
    mine = file(world)
    assert world.client.post("DocumentReference", document(other)).status_code == 201
    file(world, **DISCHARGE)  # filtered out by type
    world.deliver()
    assert notified(receiver) == [mine]
    # the patient sees who hears of their DMP; the other patient, whose DMP it told nobody about, does not
    listed = json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}"))
    assert [e["resource"]["criteria"] for e in listed["entry"]] == [DOC_TOPIC_MULTI]
    sid = listed["entry"][0]["resource"]["id"]
    assert world.as_(PATIENT).get(f"Subscription/{sid}").status_code == 200
    them = {"actor": "patient", "sub": "2800175123456", "patient": "2800175123456"}
    assert "entry" not in json_of(world.as_(them).get(f"Subscription?patient={other}"))
    assert world.as_(them).get(f"Subscription/{sid}").status_code == 404


def test_a_submission_set_subscription_hears_of_an_iti65(world: World, receiver: Receiver):
    world.subscribe(DOCTOR, receiver.url, f"List?patient=Patient/{world.pid}&code=submissionset", topic=SS_TOPIC)
    world.deliver()
    answer = provide(world.client, world.pid, [(document(world.pid), b"Compte rendu")])
    world.deliver()
    [(number, focus)] = receiver.events()
    assert number == 1 and "/List/" in focus
    assert any(focus.endswith(e["response"]["location"].split("/_history/")[0].split("/fhir/")[-1])
               for e in answer["entry"])


def test_heartbeats_arrive_on_an_idle_subscription(world: World, receiver: Receiver):
    world.subscribe(DOCTOR, receiver.url, heartbeat=1)
    world.deliver()
    world.deliver_until(lambda: len(receiver.of_type("heartbeat")) >= 1, 5)
    assert status_of(receiver.of_type("heartbeat")[0])["events-since-subscription-start"] == "0"


def test_a_subscription_past_its_end_hears_of_nothing_more(world: World, receiver: Receiver):
    world.subscribe(DOCTOR, receiver.url, end="2020-01-01T00:00:00Z")
    world.deliver()
    file(world)
    world.deliver()
    assert receiver.of_type("handshake") and not receiver.events()


def test_a_filter_naming_the_patient_by_ins_works_as_the_pdsm_search_does(world: World, receiver: Receiver):
    from tests.services.subscribing import INS

    world.subscribe(DOCTOR, receiver.url, f"DocumentReference?patient.identifier=urn:oid:1.2.250.1.213.1.4.10|{INS}"
                                          "&type=http://loinc.org|11488-4")
    world.deliver()
    wanted = file(world)
    file(world, **DISCHARGE)  # another type
    world.deliver()
    assert notified(receiver) == [wanted]


def test_status_lists_the_callers_subscriptions_by_status(world: World):
    status = status_of
    up = Receiver().up()
    try:
        good = world.subscribe(DOCTOR, up.url)
        bad = world.subscribe(DOCTOR, Receiver(free_port()).url)  # nobody listens: its handshake fails
        world.subscribe(KINE, up.url)
        world.deliver()
        found = json_of(world.as_(DOCTOR).get("Subscription/$status?status=error"))
        assert [status({"entry": [e]})["subscription"]["reference"].rsplit("/", 1)[1]
                for e in found["entry"]] == [bad]
        every = json_of(world.as_(DOCTOR).get("Subscription/$status"))
        assert len(every["entry"]) == 2 and good in str(every)  # the kiné's is not theirs
    finally:
        up.down()


def test_a_redirecting_endpoint_is_not_followed(world: World, receiver: Receiver):
    elsewhere = Receiver().up()
    try:
        receiver.status = 307  # a redirect (to anywhere): refused, never followed
        sid = world.subscribe(DOCTOR, receiver.url)
        world.deliver()
        assert world.status(sid) == "error" and not elsewhere.received
    finally:
        elsewhere.down()


def test_the_channel_headers_go_with_every_notification(world: World, receiver: Receiver):
    world.subscribe(DOCTOR, receiver.url, channel_header=["Authorization: Bearer receiver-secret"])
    world.deliver()
    file(world)
    world.deliver()
    assert len(receiver.headers) == 2
    assert all(h.get("Authorization") == "Bearer receiver-secret" for h in receiver.headers)
