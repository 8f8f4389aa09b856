"""Subscription resources: what may be subscribed to, by whom, to which endpoint; who sees which subscription."""

from __future__ import annotations

import pytest

from tests.fhirclient import DOCTOR, json_of
from tests.receiver import Receiver
from tests.services import subscribing
from tests.services.subscribing import (
    DOC_TOPIC_MULTI,
    KINE,
    OTHER_DOCTOR,
    PATIENT,
    SS_TOPIC,
    World,
    block,
    subscription,
)

world = subscribing.world
receiver = subscribing.receiver


def test_a_subscription_starts_requested_and_the_handshake_makes_it_active(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    assert world.status(sid) == "requested"
    world.deliver()
    assert world.status(sid) == "active"
    [handshake] = receiver.of_type("handshake")
    assert handshake["type"] == "history"
    params = handshake["entry"][0]["resource"]
    assert params["resourceType"] == "Parameters"
    assert {p["name"]: p.get("valueString") for p in params["parameter"]}["events-since-subscription-start"] == "0"


@pytest.mark.parametrize("change, where", [
    (lambda s: {**s, "criteria": "https://example.org/SubscriptionTopic/other"}, "Subscription.criteria"),
    (lambda s: {**s, "channel": {**s["channel"], "type": "websocket"}}, "Subscription.channel.type"),
    (lambda s: {**s, "channel": {**s["channel"], "endpoint": "http://10.0.0.1/hook"}}, "Subscription.channel.endpoint"),
    (lambda s: {**s, "channel": {**s["channel"], "endpoint": "file:///etc/passwd"}}, "Subscription.channel.endpoint"),
    (lambda s: {**s, "_criteria": {"extension": [{**s["_criteria"]["extension"][0],
                                                   "valueString": "DocumentReference?type=11488-4"}]}},
     "Subscription.criteria"),  # patient-dependent without a patient
    (lambda s: {**s, "_criteria": {"extension": [{**s["_criteria"]["extension"][0],
                                                   "valueString": "Patient?name=x"}]}}, "Subscription.criteria"),
    (lambda s: {**s, "_criteria": {"extension": [{**s["_criteria"]["extension"][0], "valueString":
                                                   s["_criteria"]["extension"][0]["valueString"] + "&_text=x"}]}},
     "Subscription.criteria"),  # a parameter the topic does not filter by
    (lambda s: {k: v for k, v in s.items() if k != "_criteria"}, "Subscription.criteria"),
    (lambda s: {**s, "channel": {**s["channel"], "header": ["Host: 10.0.0.1"]}}, "Subscription.channel.header"),
    (lambda s: {**s, "channel": {**s["channel"], "header": ["X-A: 1\r\nHost: x"]}}, "Subscription.channel.header"),
    (lambda s: {**s, "channel": {**s["channel"], "header": ["no colon"]}}, "Subscription.channel.header"),
    (lambda s: {**s, "channel": {**s["channel"], "header": ["Bad Name: 1"]}}, "Subscription.channel.header"),
    (lambda s: {**s, "channel": {**s["channel"], "_payload": {"extension": [
        {**s["channel"]["_payload"]["extension"][0], "valueCode": "everything"}]}}}, "Subscription.channel.payload"),
])
def test_a_subscription_the_server_cannot_honour_is_refused_422(world: World, receiver: Receiver, change, where):
    body = change(subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}"))
    response = world.as_(DOCTOR).post("Subscription", body)
    assert response.status_code == 422, response.data
    assert where in str(json_of(response))


@pytest.mark.parametrize("endpoint, prefixes, allowed", [
    ("https://ehr.example.org/hook", None, True),
    ("http://ehr.example.org/hook", None, False),
    ("HTTP://ehr.example.org/hook", None, False),
    ("ftp://ehr.example.org/hook", "ftp://", False),
    ("http://169.254.169.254/latest/meta-data", "https://,http://127.0.0.1", False),
    ("http://127.0.0.1:8081/hook", "https://, http://127.0.0.1", True),
    ("http://127.0.0.1", "http://127.0.0.1", True),
    ("http://127.0.0.1.evil.example/hook", "http://127.0.0.1", False),  # the prefix is not a boundary there
    ("http://127.0.0.1@10.0.0.1/hook", "http://127.0.0.1", False),  # user info: the host is 10.0.0.1
    ("http://127.0.0.1:80@10.0.0.1/hook", "http://127.0.0.1", False),
    ("http://127.0.0.1\\@10.0.0.1/hook", "http://127.0.0.1", False),
    ("http://127.0.0.1 /hook", "http://127.0.0.1", False),
    ("http://127.0.0.1\t.evil/hook", "http://127.0.0.1", False),
    ("http://127.0.0.1:x/hook", "http://127.0.0.1", False),
    ("https://", None, False),
    ("https://ehr.example.org/hook", "https://ehr.example.org/", True),
    ("https://ehr.example.org.evil/hook", "https://ehr.example.org", False),
])
def test_endpoints_are_https_only_unless_allowed_and_prefixes_do_not_leak(endpoint, prefixes, allowed):
    from fhir_dmp.services.subscriptions import allowed_endpoint

    assert allowed_endpoint(endpoint, prefixes) is allowed


def test_a_professional_subscribes_only_to_a_dmp_they_may_open(world: World, receiver: Receiver):
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}")
    assert world.as_(OTHER_DOCTOR).post("Subscription", body).status_code == 403  # not authorised
    assert world.as_({**OTHER_DOCTOR, "purpose_of_use": "BTG", "access_reason": "urgence"}).post(
        "Subscription", body).status_code == 403  # an emergency does not last months
    assert world.client.post("Consent", block(world.pid, DOCTOR["sub"])).status_code == 201
    assert world.as_(DOCTOR).post("Subscription", body).status_code == 403  # blocked
    other = {**PATIENT, "sub": "2800175123456", "patient": "2800175123456"}
    assert world.as_(other).post("Subscription", body).status_code == 403  # another patient's DMP
    assert world.as_(PATIENT).post("Subscription", body).status_code == 201


def test_a_multi_patient_topic_is_for_professionals(world: World, receiver: Receiver):
    body = subscription(receiver.url, "DocumentReference?type=11488-4", topic=DOC_TOPIC_MULTI)
    assert world.as_(PATIENT).post("Subscription", body).status_code == 403
    assert world.as_(DOCTOR).post("Subscription", body).status_code == 201
    with_patient = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}", topic=DOC_TOPIC_MULTI)
    assert world.as_(DOCTOR).post("Subscription", with_patient).status_code == 422


def test_the_patient_sees_every_subscription_on_their_dmp_and_others_only_their_own(world: World,
                                                                                     receiver: Receiver):
    mine = world.subscribe(DOCTOR, receiver.url)
    kine = world.subscribe(KINE, receiver.url)
    listed = json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}"))
    assert {e["resource"]["id"] for e in listed["entry"]} == {mine, kine}
    assert {e["resource"]["id"] for e in json_of(world.as_(DOCTOR).get("Subscription"))["entry"]} == {mine}
    assert world.as_(PATIENT).get(f"Subscription/{kine}").status_code == 200
    assert world.as_(KINE).get(f"Subscription/{mine}").status_code == 404  # not theirs: as absent
    assert world.as_(PATIENT).get("Subscription?patient=someone-else").status_code == 403
    assert world.as_(PATIENT).delete(f"Subscription/{mine}").status_code == 403  # reads it, does not manage it
    assert world.as_(KINE).delete(f"Subscription/{mine}").status_code == 204  # as absent: nothing deleted
    assert world.as_(DOCTOR).get(f"Subscription/{mine}").status_code == 200


def test_the_patient_reads_a_subscription_without_the_receivers_credentials(world: World, receiver: Receiver):
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}",
                        channel_header=["Authorization: Bearer receiver-secret"])
    sid = json_of(world.as_(DOCTOR).post("Subscription", body))["id"]
    assert "receiver-secret" in str(json_of(world.as_(DOCTOR).get(f"Subscription/{sid}")))
    assert "receiver-secret" not in str(json_of(world.as_(PATIENT).get(f"Subscription/{sid}")))
    assert "receiver-secret" not in str(json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}")))


def test_the_owner_turns_a_subscription_off_or_deletes_it(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    assert world.client.post("Consent", block(world.pid, DOCTOR["sub"])).status_code == 201
    again = {**json_of(world.as_(DOCTOR).get(f"Subscription/{sid}")), "status": "requested"}
    assert world.as_(DOCTOR).put(f"Subscription/{sid}", again).status_code == 403  # blocked: not asked for again
    body = {**again, "status": "off"}  # but turned off, yes
    response = world.as_(DOCTOR).put(f"Subscription/{sid}", body)
    assert response.status_code == 200, response.data
    assert json_of(response)["status"] == "off" and json_of(response)["meta"]["versionId"] == "2"
    assert world.as_(KINE).put(f"Subscription/{sid}", body).status_code == 404
    assert world.as_(DOCTOR).delete(f"Subscription/{sid}").status_code == 204
    assert world.as_(DOCTOR).get(f"Subscription/{sid}").status_code == 404


def test_the_topics_are_served_as_basic_and_listed_in_the_capability_statement(world: World):
    found = json_of(world.client.get("Basic?code=SubscriptionTopic"))
    assert found["total"] == 4
    assert world.client.get("Basic/DSUBm-SubscriptionTopic-SubmissionSet-PatientDependent").status_code == 200
    statement = json_of(world.client.get("metadata", auth=False))
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription")
    assert SS_TOPIC in {e["valueCanonical"] for e in entry["extension"]}
    assert {"status", "events"} <= {o["name"] for o in entry["operation"]}


def test_a_subscription_is_no_transaction_entry(world: World, receiver: Receiver):
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}")
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": body, "request": {"method": "POST", "url": "Subscription"}}]}
    assert world.as_(DOCTOR).post("/fhir", bundle).status_code == 405


def test_a_token_whose_scopes_do_not_grant_the_topic_type_may_not_subscribe(world: World, receiver: Receiver):
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}")
    narrow = world.as_({**DOCTOR, "scope": "user/Subscription.cruds"})
    refused = narrow.post("Subscription", body)
    assert refused.status_code == 403 and "DocumentReference" in str(json_of(refused))
    wide = world.as_({**DOCTOR, "scope": "user/Subscription.cruds user/DocumentReference.rs"})
    assert wide.post("Subscription", body).status_code == 201
