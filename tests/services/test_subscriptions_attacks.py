"""Attacks on subscriptions: what a subscription, its status, its replay or its endpoint could tell anybody beyond
what a read or an ITI-67 of theirs would. Hidden is absent: nobody may tell through a subscription that a document
they may not see was filed (docs/subscriptions.md)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.fhirclient import DOCTOR, document, json_of
from tests.receiver import Receiver
from tests.services import subscribing
from tests.services.subscribing import DOC_TOPIC_MULTI, PATIENT, TRE_A07, World, subscription

world = subscribing.world
receiver = subscribing.receiver


def invisible_to_patient() -> dict:
    return {"securityLabel": [{"coding": [{"system": TRE_A07, "code": "INVISIBLE_PATIENT"}]}]}


def file(world: World, **extra: object) -> str:
    response = world.client.post("DocumentReference", document(world.pid, **extra))
    assert response.status_code == 201, response.data
    return json_of(response)["id"]


def status_values(bundle: dict) -> dict[str, str]:
    params = bundle["entry"][0]["resource"]["parameter"]
    return {p["name"]: next((v for k, v in p.items() if k.startswith("value")), None) for p in params}


def test_the_patient_cannot_count_a_document_hidden_from_them_through_a_subscription_on_their_dmp(
        world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    world.deliver()
    hidden = file(world, **invisible_to_patient())  # the doctor sees it; the patient must not tell it exists
    world.deliver()
    assert [n for n, _ in receiver.events()] == [1]  # the doctor heard of it
    mine = json_of(world.as_(PATIENT).get(f"DocumentReference?patient={world.pid}"))
    assert hidden not in str(mine)
    as_patient = [json_of(world.as_(PATIENT).get(f"Subscription/{sid}/$status")),
                  json_of(world.as_(PATIENT).get("Subscription/$status")),
                  json_of(world.as_(PATIENT).get(f"Subscription/{sid}")),
                  json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}"))]
    for answer in as_patient:
        assert hidden not in str(answer)
        for entry in answer.get("entry", []):
            if entry["resource"]["resourceType"] == "Parameters":
                assert "events-since-subscription-start" not in status_values({"entry": [entry]})
    owner = status_values(json_of(world.as_(DOCTOR).get(f"Subscription/{sid}/$status")))
    assert owner["events-since-subscription-start"] == "1"  # its owner still counts what they heard of


def test_a_multi_patient_subscription_shows_the_patient_nothing_of_other_dmps(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url, "DocumentReference?type=11488-4", topic=DOC_TOPIC_MULTI)
    world.deliver()
    file(world)
    world.deliver()
    shown = json_of(world.as_(PATIENT).get(f"Subscription/{sid}/$status"))
    assert "events-since-subscription-start" not in status_values(shown)


def test_events_replay_is_held_to_the_token_asking_for_it(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url, content="full-resource")
    world.deliver()
    filed = file(world)
    world.deliver()
    narrow = world.as_({**DOCTOR, "scope": "user/Subscription.cruds"})  # no DocumentReference any more
    assert narrow.get(f"DocumentReference/{filed}").status_code == 403
    replay = narrow.get(f"Subscription/{sid}/$events?content=full-resource")
    assert replay.status_code in (200, 403), replay.data
    assert filed not in str(json_of(replay))
    assert filed in str(json_of(world.as_(DOCTOR).get(f"Subscription/{sid}/$events?content=full-resource")))


@pytest.mark.parametrize("value", ["²", "٣", "1" * 30, "-1", " 1"])
def test_a_bad_event_number_is_a_400_not_a_fault(world: World, receiver: Receiver, value: str):
    sid = world.subscribe(DOCTOR, receiver.url)
    for name in ("eventsSinceNumber", "eventsUntilNumber"):
        answer = world.as_(DOCTOR).get(f"Subscription/{sid}/$events?{urlencode({name: value})}")
        assert answer.status_code == 400, (name, value, answer.data)
        assert json_of(answer)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("filter_", [
    "DocumentReference?patient:Patient.name=martin",  # a chain behind a modifier is not the topic's `patient`
    "DocumentReference?patient:Patient.birthdate=1980-01-01",
    "DocumentReference?patient:Patient._has:Consent:patient:status=active",
])
def test_a_filter_cannot_name_the_patient_by_what_the_topic_does_not_filter_by(world: World, receiver: Receiver,
                                                                                  filter_: str):
    answer = world.as_(DOCTOR).post("Subscription", subscription(receiver.url, filter_))
    assert answer.status_code == 422, answer.data
    assert "Subscription.criteria" in str(json_of(answer))


def test_a_dmp_the_caller_may_not_open_answers_as_an_absent_one(world: World, receiver: Receiver):
    stranger = {"actor": "professional", "sub": "810000000555", "profession": "10"}
    there = stranger_answer = world.as_(stranger).post(
        "Subscription", subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}"))
    absent = world.as_(stranger).post("Subscription", subscription(receiver.url,
                                                                   "DocumentReference?patient=Patient/nobody"))
    assert there.status_code == absent.status_code == 403, (stranger_answer.data, absent.data)
    assert (json_of(there)["issue"][0]["diagnostics"] == json_of(absent)["issue"][0]["diagnostics"])
    for who in (PATIENT, {**PATIENT, "actor": "representative", "sub": "rep-1"}):
        absent = world.as_(who).post("Subscription", subscription(receiver.url,
                                                                  "DocumentReference?patient=Patient/nobody"))
        assert absent.status_code == 403, absent.data


@pytest.mark.parametrize("claims", [
    {"actor": "insurer", "sub": "cpam"}, {"actor": "employer", "sub": "acme"},
    {"actor": "professional", "sub": "810000000777", "profession": "10", "specialty": "SM25"}])
def test_refused_actors_are_refused_subscriptions_too(world: World, receiver: Receiver, claims: dict):
    sid = world.subscribe(DOCTOR, receiver.url)
    who = world.as_(claims)
    for answer in (who.post("Subscription", subscription(receiver.url, f"DocumentReference?patient=Patient/"
                                                                       f"{world.pid}")),
                   who.get(f"Subscription/{sid}"), who.get("Subscription"), who.get(f"Subscription/{sid}/$status"),
                   who.get(f"Subscription/{sid}/$events"), who.delete(f"Subscription/{sid}")):
        assert answer.status_code in (401, 403), answer.data
        assert json_of(answer)["resourceType"] == "OperationOutcome"


def test_another_professionals_subscription_is_absent_to_every_operation(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    other = world.as_({"actor": "professional", "sub": "810000000555", "profession": "10"})
    body = json_of(world.as_(DOCTOR).get(f"Subscription/{sid}"))
    for path in (f"Subscription/{sid}", f"Subscription/{sid}/$status", f"Subscription/{sid}/$events"):
        mine, absent = other.get(path), other.get(path.replace(sid, "nobody"))
        assert mine.status_code == absent.status_code == 404, (path, mine.data)
    mine = other.put(f"Subscription/{sid}", body)
    absent = other.put("Subscription/nobody", {**body, "id": "nobody"})
    assert mine.status_code == absent.status_code == 404
    assert other.get("Subscription/$status").status_code == 200
    assert json_of(other.get(f"Subscription/$status?id={sid}")).get("entry", []) == []
    assert json_of(other.get(f"Subscription?_id={sid}")).get("entry", []) == []


def test_a_multi_patient_subscription_appears_to_the_patient_by_standing_not_by_a_hidden_event(
        world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url, "DocumentReference?type=11488-4", topic=DOC_TOPIC_MULTI)
    world.deliver()
    before = json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}"))
    before_read = world.as_(PATIENT).get(f"Subscription/{sid}").status_code
    file(world, **invisible_to_patient())  # numbered for the doctor: the patient must not tell it was filed
    world.deliver()
    assert [n for n, _ in receiver.events()] == [1]
    after = json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}"))
    assert [e["resource"]["id"] for e in after.get("entry", [])] == [e["resource"]["id"]
                                                                     for e in before.get("entry", [])]
    assert world.as_(PATIENT).get(f"Subscription/{sid}").status_code == before_read


def test_a_representative_hears_nothing_of_what_is_hidden_from_representatives(world: World):
    representative = {"actor": "representative", "sub": "rep-1", "patient": PATIENT["patient"]}
    with Receiver() as rep, Receiver() as patient:
        world.subscribe(representative, rep.url, content="full-resource")
        world.subscribe(PATIENT, patient.url, content="full-resource")
        world.deliver()
        hidden = file(world, securityLabel=[{"coding": [{"system": TRE_A07,
                                                          "code": "INVISIBLE_REPRESENTANTS_LEGAUX"}]}])
        seen = file(world)
        world.deliver()
        assert [f.rsplit("/", 1)[-1] for _, f in rep.events()] == [seen]
        assert hidden not in str(rep.received)
        assert [f.rsplit("/", 1)[-1] for _, f in patient.events()] == [hidden, seen]


def test_no_notification_once_the_authorisation_is_withdrawn(world: World, receiver: Receiver):
    from tests.services.subscribing import KINE

    world.subscribe(KINE, receiver.url)
    world.deliver()
    consents = json_of(world.client.get(f"Consent?patient={world.pid}"))
    [kine] = [e["resource"] for e in consents["entry"] if KINE["sub"] in str(e["resource"]["provision"])]
    assert world.client.put(f"Consent/{kine['id']}", {**kine, "status": "inactive"}).status_code == 200
    discharge = file(world, type={"coding": [{"system": "http://loinc.org", "code": "11490-0"}]})
    world.deliver()
    assert receiver.events() == [] and discharge not in str(receiver.received)
    assert world.as_(KINE).get(f"DocumentReference?patient={world.pid}").status_code == 403


@pytest.mark.parametrize("extra", ["&_include=DocumentReference:author", "&_revinclude=Provenance:target",
                                   "&_has:List:item:code=x", "&_sort=date", "&_count=1", "&_summary=count",
                                   "&_elements=id", "&_total=accurate", "&_filter=x", "&_id=1"])
def test_a_filter_is_a_filter_not_a_query_with_results_of_its_own(world: World, receiver: Receiver, extra: str):
    body = subscription(receiver.url, f"DocumentReference?patient=Patient/{world.pid}{extra}")
    answer = world.as_(DOCTOR).post("Subscription", body)
    assert answer.status_code == 422, answer.data
    assert "Subscription.criteria" in str(json_of(answer))


@pytest.mark.parametrize("filter_", [
    "DocumentReference?patient=Patient/{pid}&patient=Patient/{pid}x",  # two DMPs
    "DocumentReference?patient=Patient/{pid},Patient/other",
    "DocumentReference?patient:missing=false",
    "DocumentReference?patient=Patient/{pid}&date=yesterday",
])
def test_a_filter_the_search_engine_refuses_is_a_422_of_the_subscription(world: World, receiver: Receiver,
                                                                          filter_: str):
    answer = world.as_(DOCTOR).post("Subscription", subscription(receiver.url, filter_.format(pid=world.pid)))
    assert answer.status_code == 422, answer.data
    assert json_of(answer)["resourceType"] == "OperationOutcome"


def test_the_patient_cannot_tell_a_hidden_document_by_a_delivery_that_failed(world: World):
    down = Receiver()  # never brought up: every delivery fails
    sid = world.subscribe(DOCTOR, down.url)
    with Receiver() as up:  # the handshake succeeds there, then the endpoint goes away
        body = json_of(world.as_(DOCTOR).get(f"Subscription/{sid}"))
        body["channel"]["endpoint"] = up.url
        assert world.as_(DOCTOR).put(f"Subscription/{sid}", body).status_code == 200
        world.deliver()
    assert world.status(sid) == "active"
    file(world, **invisible_to_patient())
    world.deliver_until(lambda: world.status(sid) == "error")  # the owner sees it fail
    shown = json_of(world.as_(PATIENT).get(f"Subscription/{sid}"))
    assert shown["status"] == "active" and "error" not in shown
    status = status_values(json_of(world.as_(PATIENT).get(f"Subscription/{sid}/$status")))
    assert status["status"] == "active" and "error" not in status
    listed = json_of(world.as_(PATIENT).get(f"Subscription?patient={world.pid}"))
    assert [e["resource"]["status"] for e in listed["entry"]] == ["active"]
    assert status_values(json_of(world.as_(DOCTOR).get(f"Subscription/{sid}/$status")))["status"] in (
        "error", "requested")  # its owner's $status asks for it again


def test_a_document_masked_or_retyped_after_its_event_is_named_by_no_notification_nor_replay(world: World):
    from tests.services.subscribing import KINE, masked

    discharge = {"type": {"coding": [{"system": "http://loinc.org", "code": "11490-0"}]}}
    with Receiver() as doctor, Receiver() as kine:
        world.subscribe(DOCTOR, doctor.url, content="full-resource")
        kine_sid = world.subscribe(KINE, kine.url, content="full-resource")
        world.deliver()
        first = file(world, **discharge)  # both may see it when it is filed: both get an event number
        stored = json_of(world.client.get(f"DocumentReference/{first}"))
        hidden = {**stored, "securityLabel": stored["securityLabel"] + masked()["securityLabel"]}  # before delivery
        assert world.client.put(f"DocumentReference/{first}", hidden).status_code == 200
        second = file(world, **discharge)
        retyped = {**json_of(world.client.get(f"DocumentReference/{second}")),
                   "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
                   "category": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/"
                                             "TRE-A03-ClasseDocument", "code": "10"}]}]}
        assert world.client.put(f"DocumentReference/{second}", retyped).status_code == 200
        world.deliver()
        assert [n for n, _ in kine.events()] == [1, 2] and all(f is None for _, f in kine.events())
        assert first not in str(kine.received) and second not in str(kine.received)
        assert [n for n, _ in doctor.events()] == [1, 2] and doctor.events()[0][1] is None  # masked: nobody's
        replay = json_of(world.as_(KINE).get(f"Subscription/{kine_sid}/$events?content=full-resource"))
        assert first not in str(replay) and second not in str(replay)


def test_an_emergency_callers_multi_patient_subscription_hears_only_where_they_stand_normally(world: World,
                                                                                               receiver: Receiver):
    emergency = {"actor": "professional", "sub": "810000000555", "profession": "10", "purpose_of_use": "BTG",
                 "access_reason": "urgence"}
    assert world.as_(emergency).get(f"DocumentReference?patient={world.pid}").status_code == 200  # opens it now
    world.subscribe(emergency, receiver.url, "DocumentReference?type=11488-4", topic=DOC_TOPIC_MULTI)
    world.deliver()
    filed = file(world)
    world.deliver()
    assert receiver.events() == [] and filed not in str(receiver.received)


def test_a_patient_without_a_dmp_and_control_characters_get_answers_not_faults(world: World, receiver: Receiver):
    sid = world.subscribe(DOCTOR, receiver.url)
    nobody = world.as_({"actor": "patient", "sub": "2990175123456", "patient": "2990175123456"})
    for path in ("Subscription", "Subscription/$status", "Subscription?patient=x"):
        answer = nobody.get(path)
        assert answer.status_code in (200, 403), (path, answer.data)
        assert sid not in str(json_of(answer).get("entry", []))
    assert nobody.get(f"Subscription/{sid}").status_code == 404
    for path in ("Subscription/$status?id=%00", "Subscription?_id=%00", "Subscription?status=a%01",
                 f"Subscription/{sid}/$events?content=%00"):
        answer = world.as_(DOCTOR).get(path)
        assert answer.status_code == 400, (path, answer.data)
        assert json_of(answer)["resourceType"] == "OperationOutcome"
