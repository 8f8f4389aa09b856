"""Property: what a subscriber is notified of is exactly what an ITI-67 of theirs returns for the same events.

Random subscribers (a médecin and a kiné authorised, a médecin granted the masked documents, the patient), random
filters, random documents (types, visibility labels) and random consents (blocks, grants) between them; after
each document, each subscriber's ITI-67 for it (`DocumentReference?patient=...&_id=...&<filter>`) is the oracle.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_dmp.policy.consents import authorisation
from tests.fhirclient import DOCTOR, FhirTestClient, document, json_of, patient
from tests.receiver import Receiver, status_of
from tests.services import subscribing
from tests.services.subscribing import KINE, TRE_A07, World, block, subscription

GRANTED = {"actor": "professional", "sub": "810000000555", "profession": "10"}
TYPES = ("11488-4", "11490-0", "11502-2")
LABELS = ((), ("MASQUE_PS",), ("INVISIBLE_PATIENT",))
SUBSCRIBERS = ("doctor", "kine", "granted", "patient")

world = subscribing.world

documents = st.tuples(st.just("file"), st.sampled_from(TYPES), st.sampled_from(LABELS))
consents = st.tuples(st.just("block"), st.sampled_from(("doctor", "kine", "granted")), st.just(()))
steps = st.lists(st.one_of(documents, documents, consents), min_size=1, max_size=6)
filters = st.dictionaries(st.sampled_from(SUBSCRIBERS), st.sampled_from((None, *TYPES)), min_size=1)


def _claims(who: str, ins: str) -> dict:
    return {"doctor": DOCTOR, "kine": KINE, "granted": GRANTED,
            "patient": {"actor": "patient", "sub": ins, "patient": ins}}[who]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subscribed=filters, script=steps)
def test_notifications_are_what_the_subscribers_iti67_returns(world: World, subscribed: dict, script: list):
    client: FhirTestClient = world.client
    ins = "1" + str(uuid.uuid4().int)[:12]
    pid = json_of(client.post("Patient", patient(ins)))["id"]
    for who in ("doctor", "kine", "granted"):
        assert client.post("Consent", authorisation(pid, _claims(who, ins)["sub"])).status_code == 201
    grant = authorisation(pid, GRANTED["sub"])
    grant["provision"]["securityLabel"] = [{"system": TRE_A07, "code": "MASQUE_PS"}]
    assert client.post("Consent", grant).status_code == 201
    with Receiver() as receiver:
        subs: dict[str, tuple[str, str]] = {}
        for who, type_ in subscribed.items():
            query = f"patient=Patient/{pid}" + (f"&type={type_}" if type_ else "")
            response = client.as_(**_claims(who, ins)).post("Subscription",
                                                            subscription(receiver.url, f"DocumentReference?{query}"))
            assert response.status_code == 201, response.data
            subs[who] = (json_of(response)["id"], query)
        world.deliver()
        expected: dict[str, list[str]] = {who: [] for who in subs}
        for kind, what, labels in script:
            if kind == "block":
                assert client.post("Consent", block(pid, _claims(what, ins)["sub"])).status_code == 201
                continue
            extra: dict = {"type": {"coding": [{"system": "http://loinc.org", "code": what}]}}
            if labels:
                extra["securityLabel"] = [{"coding": [{"system": TRE_A07, "code": code}]} for code in labels]
            response = client.post("DocumentReference", document(pid, **extra))
            assert response.status_code == 201, response.data
            doc = json_of(response)["id"]
            for who, (_sid, query) in subs.items():
                found = client.as_(**_claims(who, ins)).get(f"DocumentReference?{query}&_id={doc}")
                if found.status_code == 200 and json_of(found).get("total"):
                    expected[who].append(doc)
            world.deliver()
        for who, (sid, _query) in subs.items():
            got = [focus.rsplit("/", 1)[-1]
                   for bundle in receiver.of_type("event-notification")
                   if status_of(bundle)["subscription"]["reference"].endswith(sid)
                   for _, focus in status_of(bundle)["events"] if focus]
            assert got == expected[who], (who, script)


# -- the decisions themselves ------------------------------------------------------------------------------------
def test_a_subscription_keeps_its_creator_at_normal_access_only():
    from fhir_dmp.policy.caller import Caller
    from fhir_dmp.policy.subscriptions import dump_subscriber, load_subscriber

    emergency = Caller("professional", "810000000108", "10", purpose_of_use="BTG", access_reason="urgence")
    kept = load_subscriber(dump_subscriber(emergency))
    assert kept.purpose_of_use == "TREAT" and kept.access_reason is None and kept.sub == emergency.sub
    assert kept.scopes is None  # no `scope` claim: the DMP rules alone


def test_a_subscription_keeps_its_creators_smart_scopes():
    from fhir_dmp.policy import scopes
    from fhir_dmp.policy.caller import Caller
    from fhir_dmp.policy.subscriptions import dump_subscriber, load_subscriber, scope_refusal

    narrow = Caller("professional", "810001234567", "10", scopes=scopes.parse("user/Subscription.cruds"))
    kept = load_subscriber(dump_subscriber(narrow))
    assert kept.scopes == narrow.scopes
    assert scope_refusal(kept, "DocumentReference") is not None and scope_refusal(kept, "Subscription") is None


def test_who_may_subscribe_and_who_lists_what():
    from fhir_dmp.errors import forbidden
    from fhir_dmp.policy.access import Access
    from fhir_dmp.policy.caller import Caller
    from fhir_dmp.policy.facts import owner_key
    from fhir_dmp.policy.subscriptions import creation_refusal, listing, may_manage, may_read

    pro = Caller("professional", "810001234567", "10")
    patient_ = Caller("patient", "1800175123456", patient="1800175123456")
    system = Caller("system", "feed")
    assert creation_refusal(pro, Access("professional", "A"), True) is None
    assert creation_refusal(pro, Access("identity", "A"), True) is not None  # the existence check only
    assert creation_refusal(pro, Access("emergency", "A"), True) is not None
    assert creation_refusal(pro, Access("none", "A", refusal=forbidden("blocked")), True) is not None
    assert creation_refusal(pro, None, True) is not None
    assert creation_refusal(patient_, None, False) is not None  # multi-patient: professionals and systems
    assert creation_refusal(pro, None, False) is None and creation_refusal(system, None, False) is None
    from fhir_dmp.policy.consents import Dmp, Terms
    from fhir_dmp.policy.subscriptions import Listing, hearers

    authorised = Terms(True, frozenset({pro.sub}), frozenset(), frozenset(), frozenset())
    dmp_a = Dmp("A", True, frozenset(), frozenset({"810000000001"}), (authorised,))
    dmp_b = Dmp("B", True, frozenset(), frozenset())
    assert hearers(dmp_a) == {owner_key(pro), "professional|810000000001"} and hearers(dmp_b) == frozenset()
    blocked = Terms(False, frozenset({pro.sub}), frozenset(), frozenset(), frozenset())
    assert hearers(Dmp("A", True, frozenset(), frozenset(), (authorised, blocked))) == frozenset()
    assert hearers(Dmp("A", False, frozenset(), frozenset({pro.sub}))) == frozenset()  # closed: nobody hears
    assert listing(system, None) == Listing(None, None)
    assert listing(pro, None) == Listing(owner_key(pro), None)
    assert listing(patient_, dmp_a) == Listing(None, "A", hearers(dmp_a))
    assert listing(patient_, None).nothing  # no DMP of theirs: nothing, not everything
    assert may_read(patient_, owner_key(pro), "A", dmp_a) and not may_read(patient_, owner_key(pro), "B", dmp_a)
    # a multi-patient one: the patient of a DMP its owner stands in (may hear of), whatever events it numbered
    assert may_read(patient_, owner_key(pro), "", dmp_a) and not may_read(patient_, owner_key(pro), "", dmp_b)
    assert may_read(patient_, owner_key(system), "", dmp_b)  # a system's may hear of every DMP
    assert not may_read(patient_, owner_key(pro), "", None)
    assert not may_manage(patient_, owner_key(pro)) and may_manage(pro, owner_key(pro))
