"""The INS ties a DMP to its patient (dmp-reference.md 4): only the patient, their representative or a system
changes it, traced; a professional's update touching it is refused (403), whatever their rights on the rest of
the Patient, and nothing is written. Tried through PUT, conditional PUT, JSON Patch and transactions, by the
médecin traitant and an authorised médecin, with INS spellings a lax reader would take for one."""

from __future__ import annotations

import copy
import uuid

import pytest

from fhir_dmp.policy.consents import IDNATPS, authorisation
from tests.fhirclient import json_of, patient, written

TREATING, DOCTOR = "810000000301", "810000000302"
INS_NIR, INS_TEST = "urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.10"


def _ins() -> str:
    return f"{uuid.uuid4().int % 10**13:013d}"


def _dmp(client):  # type: ignore[no-untyped-def]
    """(pid, ins, the stored Patient, callers by name): a DMP with a médecin traitant and an authorised médecin."""
    ins = _ins()
    body = patient(ins, generalPractitioner=[{"identifier": {"system": IDNATPS, "value": TREATING}}],
                   identifier=[{"system": INS_NIR, "use": "official", "value": ins}])
    pid = json_of(client.post("Patient", body))["id"]
    assert client.post("Consent", authorisation(pid, DOCTOR)).status_code == 201
    callers = {
        "médecin traitant": client.as_(actor="professional", sub=TREATING, profession="10", specialty="SM26"),
        "authorised médecin": client.as_(actor="professional", sub=DOCTOR, profession="10"),
        "emergency médecin": client.as_(actor="professional", sub="810000000303", profession="10",
                                        purpose_of_use="BTG", access_reason="urgence"),
        "patient": client.as_(actor="patient", sub=ins, patient=ins),
        "representative": client.as_(actor="representative", sub=f"rep-{ins}", patient=ins),
        "system": client,
    }
    return pid, ins, json_of(client.get(f"Patient/{pid}")), callers


def _changed_ins(current: dict, ins: str, other: str) -> dict[str, dict]:
    """Bodies that touch the INS, each differently."""
    def with_ids(idents: list[dict]) -> dict:
        return {**copy.deepcopy(current), "identifier": idents}

    mine = current["identifier"][0]
    return {
        "new value": with_ids([{**mine, "value": other}]),
        "another INS added": with_ids([mine, {"system": INS_NIR, "value": other}]),
        "INS removed, another identifier kept": with_ids([{"system": "http://example.test/mrn", "value": "42"}]),
        "INS deactivated (use old)": with_ids([{**mine, "use": "old"}, {"system": INS_NIR, "value": other}]),
        "INS system changed": with_ids([{**mine, "system": INS_TEST}]),
        "a look-alike INS system added": with_ids([mine, {"system": "URN:OID:1.2.250.1.213.1.4.8", "value": other}]),
        "a period ends it": with_ids([{**mine, "period": {"end": "2020-01-01"}}]),
    }


def _replaced(current: dict, new: str) -> list[dict]:
    """The identifiers once the INS-NIR `new` replaces the current one, kept as `old` (dmp-pat-1: one INS in use)."""
    return [{**current["identifier"][0], "use": "old"}, {"system": INS_NIR, "use": "official", "value": new}]


PROFESSIONALS = ["médecin traitant", "authorised médecin", "emergency médecin"]


@pytest.mark.parametrize("who", PROFESSIONALS)
def test_a_professionals_put_touching_the_ins_is_403_and_writes_nothing(client, who):
    pid, ins, current, callers = _dmp(client)
    before = written(client)
    for name, body in _changed_ins(current, ins, _ins()).items():
        response = callers[who].put(f"Patient/{pid}", body)
        assert response.status_code == 403, (name, response.data)
        issue = json_of(response)["issue"][0]
        assert issue["code"] == "forbidden" and "INS" in issue["diagnostics"], (name, issue)
    # conditional update on the INS, and the same PUT inside a transaction: the same answer
    body = _changed_ins(current, ins, _ins())["new value"]
    assert callers[who].put(f"Patient?identifier={INS_NIR}|{ins}", body).status_code == 403
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": body, "request": {"method": "PUT", "url": f"Patient/{pid}"}}]}
    assert callers[who].post("/fhir", bundle).status_code == 403
    assert written(client) == before
    assert json_of(client.get(f"Patient/{pid}"))["identifier"] == current["identifier"]
    # the patient still opens their DMP
    assert callers["patient"].get(f"Patient/{pid}").status_code == 200


@pytest.mark.parametrize("who", PROFESSIONALS)
@pytest.mark.parametrize("ops", [
    [{"op": "replace", "path": "/identifier/0/value", "value": "2990175123456"}],
    [{"op": "add", "path": "/identifier/-", "value": {"system": INS_NIR, "value": "2990175123456"}}],
    [{"op": "remove", "path": "/identifier/0"}],
    [{"op": "replace", "path": "/identifier", "value": [{"system": INS_NIR, "value": "2990175123456"}]}],
    [{"op": "add", "path": "/identifier/0/use", "value": "old"}],
    [{"op": "move", "from": "/identifier/0", "path": "/contained"}],
    [{"op": "copy", "from": "/identifier/0/value", "path": "/identifier/0/system"}],
], ids=["replace-value", "add-ins", "remove-ins", "replace-all", "deactivate", "move-away", "copy-over"])
def test_a_professionals_json_patch_touching_the_ins_is_refused(client, who, ops):
    pid, _, current, callers = _dmp(client)
    before = written(client)
    response = callers[who].patch(f"Patient/{pid}", ops)
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.data
    assert json_of(response)["resourceType"] == "OperationOutcome"
    assert written(client) == before
    assert json_of(client.get(f"Patient/{pid}"))["identifier"] == current["identifier"]


@pytest.mark.parametrize("who", PROFESSIONALS[:2])
def test_a_professional_still_edits_the_rest_of_the_patient(client, who):
    """What policy allowed before: the Patient but its `active`, `generalPractitioner` and now its INS."""
    pid, _, current, callers = _dmp(client)
    mrn = {"system": "http://example.test/mrn", "value": "A-7"}
    edited = {**current, "gender": "other", "identifier": [*current["identifier"], mrn]}
    response = callers[who].put(f"Patient/{pid}", edited)
    assert response.status_code == 200, response.data
    reordered = {**json_of(response), "identifier": list(reversed(json_of(response)["identifier"]))}
    assert callers[who].put(f"Patient/{pid}", reordered).status_code == 200  # the same INS, in another order
    patched = callers[who].patch(f"Patient/{pid}", [{"op": "replace", "path": "/birthDate", "value": "1980-01-02"}])
    assert patched.status_code == 200, patched.data
    assert callers[who].put(f"Patient/{pid}", {**json_of(patched), "active": False}).status_code == 403


@pytest.mark.parametrize("who", ["system", "patient", "representative"])
def test_the_patient_their_representative_and_a_system_change_it_traced(client, who):
    pid, ins, current, callers = _dmp(client)
    other = _ins()
    # the INS-NIR replaces the test INS, kept as `old` (one INS in use: dmp-pat-1); the patient and the
    # representative keep on the DMP the INS their token acts for
    body = {**current, "identifier": _replaced(current, other)}
    response = callers[who].put(f"Patient/{pid}", body)
    assert response.status_code == 200, response.data
    assert {i["value"] for i in json_of(client.get(f"Patient/{pid}"))["identifier"]} == {ins, other}
    assert callers["patient"].get(f"Patient/{pid}").status_code == 200
    assert client.as_(actor="patient", sub=other, patient=other).get(f"Patient/{pid}").status_code == 200
    trail = json_of(client.get(f"AuditEvent?patient={pid}&_count=100"))["entry"]
    updates = [e["resource"] for e in trail if e["resource"]["subtype"][0]["code"] == "update"
               and e["resource"]["outcome"] == "0"]
    assert any(f"Patient/{pid}/_history/2" in str(u.get("entity")) for u in updates), updates


@pytest.mark.parametrize("who", ["patient", "representative"])
def test_the_patient_cannot_drop_the_ins_their_token_acts_for(client, who):
    pid, ins, current, callers = _dmp(client)
    before = written(client)
    replaced = {**current, "identifier": [{"system": INS_TEST, "value": _ins()}]}
    response = callers[who].put(f"Patient/{pid}", replaced)
    assert response.status_code == 422, response.data
    assert "INS" in json_of(response)["issue"][0]["diagnostics"]
    assert written(client) == before


def test_the_system_replaces_the_ins_and_the_new_one_opens_the_dmp(client):
    pid, ins, current, callers = _dmp(client)
    new = _ins()
    assert client.put(f"Patient/{pid}", {**current, "identifier": [{"system": INS_TEST, "value": new}]}).status_code \
        == 200
    assert callers["patient"].get(f"Patient/{pid}").status_code == 403  # the old INS no longer names it
    assert client.as_(actor="patient", sub=new, patient=new).get(f"Patient/{pid}").status_code == 200


@pytest.mark.parametrize("who", ["system", "patient"])
def test_one_dmp_per_ins_still_holds_for_those_who_may_change_it(client, who):
    pid, ins, current, callers = _dmp(client)
    taken = _ins()
    other = json_of(client.post("Patient", patient(taken)))["id"]
    before = written(client)
    body = {**current, "identifier": _replaced(current, taken)}
    response = callers[who].put(f"Patient/{pid}", body)
    assert response.status_code == 409, response.data
    assert other in json_of(response)["issue"][0]["diagnostics"]
    patched = callers[who].patch(f"Patient/{pid}", [
        {"op": "add", "path": "/identifier/0/use", "value": "old"},
        {"op": "add", "path": "/identifier/-", "value": {"system": INS_NIR, "use": "official", "value": taken}}])
    assert patched.status_code == 409, patched.data
    assert written(client) == before


def test_the_refusal_is_traced(client):
    pid, ins, current, callers = _dmp(client)
    body = _changed_ins(current, ins, _ins())["new value"]
    assert callers["authorised médecin"].put(f"Patient/{pid}", body).status_code == 403
    trail = json_of(client.get(f"AuditEvent?patient={pid}&_count=100"))["entry"]
    refused = [e["resource"] for e in trail if e["resource"]["outcome"] == "4"
               and e["resource"]["subtype"][0]["code"] == "update"]
    assert refused and "INS" in refused[-1]["outcomeDesc"]
