"""ITI-65 Provide Document Bundle and ITI-105 simplified publish (dmp-reference.md 5, pdsm4dmp TD2 and TD2.1):
the transaction-response, replacement, and refusals that write nothing. Through the HTTP API, on both stores."""

from __future__ import annotations

import pytest

from fhir_dmp.policy.consents import authorisation
from fhir_dmp.validation.structure import validate_structure
from tests.fhirclient import DOCTOR, attachment, document, json_of, written
from tests.mhd.helpers import TRE_A07, iti65, location_id, open_dmp, provide

ORTHOPHONISTE = {"actor": "professional", "sub": "810000000391", "profession": "91"}


def _replacing(pid: str, target: dict) -> dict:
    return document(pid, relatesTo=[{"code": "replaces", "target": target}])


def test_every_response_entry_carries_its_location_and_etag(client):
    pid, _ = open_dmp(client)
    body = provide(client, pid, [(document(pid), b"CR 1"), (document(pid), b"CR 2")])
    assert body["type"] == "transaction-response"
    for entry, rtype in zip(body["entry"], ["List", "DocumentReference", "DocumentReference", "Binary", "Binary"],
                            strict=True):
        response = entry["response"]
        assert response["status"] == "201 Created"
        assert response["location"].startswith(f"http://localhost/fhir/{rtype}/")
        assert response["location"].endswith("/_history/1") and response["etag"] == 'W/"1"'
        assert response["lastModified"] == entry["resource"]["meta"]["lastUpdated"]
        assert client.get(response["location"].removeprefix("http://localhost")).status_code == 200
    ss = body["entry"][0]["resource"]
    assert [e["item"]["reference"] for e in ss["entry"]] == [
        f"DocumentReference/{location_id(e)}" for e in body["entry"][1:3]]


def test_prefer_minimal_answers_each_entry_without_its_resource(client):
    """An MHD Document Source needs no echo of what it sent: with `Prefer: return=minimal` every entry of the
    transaction-response is its `response` alone (R4 http.html#ops), and the Bundle is still a valid one."""
    pid, _ = open_dmp(client)
    sent = iti65(pid, [(document(pid), b"CR 1"), (document(pid), b"CR 2")])
    response = client.post("/fhir", sent, headers={"Prefer": "return=minimal"})
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert body["type"] == "transaction-response" and len(body["entry"]) == len(sent["entry"])
    assert validate_structure(body) == []
    for entry in body["entry"]:
        assert set(entry) == {"response"}
        assert entry["response"]["status"] == "201 Created" and entry["response"]["etag"] == 'W/"1"'
        stored = json_of(client.get(entry["response"]["location"].removeprefix("http://localhost")))
        assert entry["response"]["lastModified"] == stored["meta"]["lastUpdated"]
    ss = json_of(client.get(body["entry"][0]["response"]["location"].removeprefix("http://localhost")))
    assert [e["item"]["reference"] for e in ss["entry"]] == [
        f"DocumentReference/{location_id(e)}" for e in body["entry"][1:3]]


def test_prefer_operation_outcome_answers_an_outcome_per_entry(client):
    pid, _ = open_dmp(client)
    response = client.post("/fhir", iti65(pid, [(document(pid), b"CR")]), headers={"Prefer": "return=OperationOutcome"})
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert validate_structure(body) == []
    for entry in body["entry"]:
        assert "resource" not in entry
        assert entry["response"]["outcome"]["resourceType"] == "OperationOutcome"
        assert entry["response"]["outcome"]["issue"][0]["severity"] == "information"


def test_the_resource_answered_is_the_one_stored(client):
    """Without a preference each entry answers its resource: the text stored, ids and references resolved."""
    pid, _ = open_dmp(client)
    body = provide(client, pid, [(document(pid), b"CR")])
    for entry in body["entry"]:
        assert entry["resource"] == json_of(client.get(entry["response"]["location"].removeprefix(
            "http://localhost")))


def test_simplified_publish_is_a_validated_create(client):
    pid, _ = open_dmp(client)
    response = client.as_(**DOCTOR).post("DocumentReference", document(pid))
    assert response.status_code == 201, response.data
    created = json_of(response)
    assert response.headers["Location"].endswith(f"/DocumentReference/{created['id']}/_history/1")
    assert response.headers["ETag"] == 'W/"1"' and created["meta"]["versionId"] == "1"
    before = written(client)
    wrong = document(pid, content=[{"attachment": {**attachment(b"texte"), "size": 3}}])
    refused = client.post("DocumentReference", wrong)
    assert refused.status_code == 422
    assert [i["expression"] for i in json_of(refused)["issue"]] == [["DocumentReference.content[0].attachment.size"]]
    assert written(client) == before


@pytest.mark.parametrize("breakage", ["hash", "class"])
def test_an_invalid_last_entry_writes_nothing(client, breakage):
    pid, _ = open_dmp(client)
    bundle = iti65(pid, [(document(pid), b"premier"), (document(pid), b"second")])
    last_doc = bundle["entry"][2]["resource"]
    if breakage == "hash":  # the Binary's bytes are not the ones the DocumentReference describes
        bundle["entry"][-1]["resource"]["data"] = "c2Vjb25kIQ=="  # "second!"
        expected = {"Bundle.entry[2].resource.content[0].attachment.size",
                    "Bundle.entry[2].resource.content[0].attachment.hash"}
    else:  # a biology report (11502-2, class 10) filed as a prescription (class 42)
        last_doc["type"] = {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]}
        last_doc["category"][0]["coding"][0]["code"] = "42"
        expected = {"Bundle.entry[2].resource.category"}
    before = written(client)
    response = client.post("/fhir", bundle)
    assert response.status_code == 422, response.data
    where = {e for issue in json_of(response)["issue"] for e in issue.get("expression", [])}
    assert expected <= where, where
    assert written(client) == before
    assert json_of(client.get(f"DocumentReference?patient={pid}"))["total"] == 0


def test_a_replacement_supersedes_its_target_in_the_same_transaction(client):
    pid, _ = open_dmp(client)
    doctor = client.as_(**DOCTOR)
    assert client.post("Consent", authorisation(pid, DOCTOR["sub"])).status_code == 201
    first = provide(doctor, pid, [(document(pid), b"version 1")])
    old = location_id(first["entry"][1])
    body = provide(doctor, pid, [(_replacing(pid, {"reference": f"DocumentReference/{old}"}), b"version 2")])
    new = location_id(body["entry"][1])
    target = json_of(client.get(f"DocumentReference/{old}"))
    assert target["status"] == "superseded" and target["meta"]["versionId"] == "2"
    assert json_of(client.get(f"DocumentReference/{new}"))["relatesTo"][0]["target"]["reference"] == \
        f"DocumentReference/{old}"
    current = json_of(doctor.get(f"DocumentReference?patient={pid}&status=current"))
    assert [e["resource"]["id"] for e in current["entry"]] == [new]
    # the replaced one's trace is in the transaction's AuditEvent
    events = json_of(client.get(f"AuditEvent?patient={pid}&subtype=transaction&_sort=-date&_count=1"))["entry"]
    what = {e["what"]["reference"] for e in events[0]["resource"]["entity"] if "what" in e}
    assert f"DocumentReference/{old}/_history/2" in what
    # replacing it again: it is not current any more
    before = written(client)
    again = doctor.post("/fhir", iti65(pid, [(_replacing(pid, {"reference": f"DocumentReference/{old}"}), b"v3")]))
    assert again.status_code == 409, again.data
    assert written(client) == before


@pytest.mark.parametrize("how", ["conditional", "identifier"])
def test_the_target_may_be_named_by_its_identifier(client, how):
    pid, _ = open_dmp(client)
    first = provide(client, pid, [(document(pid), b"v1")])
    ident = first["entry"][1]["resource"]["identifier"][0]
    target = ({"reference": f"DocumentReference?identifier={ident['system']}|{ident['value']}"} if how == "conditional"
              else {"identifier": ident})
    provide(client, pid, [(_replacing(pid, target), b"v2")])
    assert json_of(client.get(f"DocumentReference/{location_id(first['entry'][1])}"))["status"] == "superseded"


def test_a_simplified_publish_replaces_too(client):
    pid, _ = open_dmp(client)
    old = json_of(client.post("DocumentReference", document(pid)))["id"]
    assert client.post("DocumentReference", _replacing(pid, {"reference": f"DocumentReference/{old}"})).status_code \
        == 201
    assert json_of(client.get(f"DocumentReference/{old}"))["status"] == "superseded"


def test_an_invisible_target_answers_like_a_missing_one(client):
    pid, _ = open_dmp(client)
    assert client.post("Consent", authorisation(pid, ORTHOPHONISTE["sub"])).status_code == 201
    biology = document(pid, type={"coding": [{"system": "http://loinc.org", "code": "11502-2"}]})
    hidden = json_of(client.post("DocumentReference", biology))["id"]  # orthophonistes never see biology
    masked = json_of(client.post("DocumentReference", document(
        pid, securityLabel=[{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}])))["id"]
    ortho = client.as_(**ORTHOPHONISTE)
    before = written(client)
    answers = []
    for target in (hidden, masked, "does-not-exist"):
        response = ortho.post("/fhir", iti65(pid, [(_replacing(pid, {"reference": f"DocumentReference/{target}"}),
                                                    b"v2")]))
        assert response.status_code == 422, response.data
        answers.append(json_of(response)["issue"][0]["diagnostics"].replace(target, "X"))
    assert len(set(answers)) == 1, answers
    assert written(client) == before
    assert json_of(client.get(f"DocumentReference/{hidden}"))["status"] == "current"


def test_a_target_in_another_dmp_is_refused(client):
    pid, _ = open_dmp(client)
    other, _ = open_dmp(client)
    foreign = json_of(client.post("DocumentReference", document(other)))["id"]
    response = client.post("/fhir", iti65(pid, [(_replacing(pid, {"reference": f"DocumentReference/{foreign}"}),
                                                 b"v2")]))
    assert response.status_code == 422
    assert json_of(client.get(f"DocumentReference/{foreign}"))["status"] == "current"


@pytest.mark.parametrize("who", ["another médecin", "médecin traitant", "patient"])
def test_only_the_depositor_replaces(client, who):
    pid, ins = open_dmp(client)
    depositor = client.as_(**DOCTOR)
    assert client.post("Consent", authorisation(pid, DOCTOR["sub"])).status_code == 201
    old = location_id(provide(depositor, pid, [(document(pid), b"v1")])["entry"][1])
    if who == "patient":
        caller = client.as_(actor="patient", sub=ins, patient=ins)
        new = _replacing(pid, {"reference": f"DocumentReference/{old}"})
        new["type"] = {"coding": [{"system": "http://loinc.org", "code": "74465-6"}]}  # a patient questionnaire
        new["category"][0]["coding"][0]["code"] = "90"
    else:
        sub = "810000000392"
        assert client.post("Consent", authorisation(pid, sub)).status_code == 201
        caller = client.as_(actor="professional", sub=sub, profession="10")
        new = _replacing(pid, {"reference": f"DocumentReference/{old}"})
    before = written(client)
    response = caller.post("/fhir", iti65(pid, [(new, b"v2")]))
    assert response.status_code == 403, response.data
    assert written(client) == before
    assert json_of(client.get(f"DocumentReference/{old}"))["status"] == "current"
