"""`Patient/[id]/$close` and `$reopen` (dmp-reference.md 9, 6.2, 6.6, 6.7): every caller against both rules,
what each changes, and what a closed DMP refuses, end to end."""

from __future__ import annotations

import pytest

from fhir_dmp.policy.lifecycle import CLOSURE_URL
from tests.fhirclient import document, json_of, written
from tests.lifecycle.helpers import close_body, new_dmp, outcome

# Who may close (9: the patient, or the médecin traitant at the patient's request; 6.7 the representative as the
# patient; a system back office) and who may reopen (6.6: the patient; professionals cannot open a closed DMP).
MAY_CLOSE = {"system": 200, "patient": 200, "representative": 200, "treating": 200, "authorised": 403,
             "other": 403, "emergency": 403, "regulation": 403, "other-patient": 403, "insurer": 403,
             "occupational": 403}
MAY_REOPEN = {**MAY_CLOSE, "treating": 403}


def _closure(resource: dict) -> dict:
    (ext,) = [e for e in resource.get("extension", []) if e["url"] == CLOSURE_URL]
    return {e["url"]: e.get("valueDateTime", e.get("valueString")) for e in ext["extension"]}


@pytest.mark.parametrize("who", sorted(MAY_CLOSE))
def test_who_may_close(client, who):
    dmp = new_dmp(client)
    before = written(client)
    response = dmp.callers[who].post(f"Patient/{dmp.pid}/$close", close_body("Déménagement à l'étranger"))
    if MAY_CLOSE[who] != 200:
        outcome(response, MAY_CLOSE[who])
        assert written(client) == before  # nothing of a refusal is kept
        assert json_of(client.get(f"Patient/{dmp.pid}")).get("active") is not False
        return
    assert response.status_code == 200, response.data
    closed = json_of(response)
    assert closed["active"] is False and closed["meta"]["versionId"] == "2"
    assert _closure(closed)["reason"] == "Déménagement à l'étranger"
    assert _closure(closed)["date"].endswith("Z")
    assert response.headers["ETag"] == 'W/"2"'
    assert json_of(client.get(f"Patient/{dmp.pid}")) == closed


@pytest.mark.parametrize("who", sorted(MAY_REOPEN))
def test_who_may_reopen(client, who):
    dmp = new_dmp(client)
    assert dmp.callers["patient"].post(f"Patient/{dmp.pid}/$close", close_body()).status_code == 200
    before = written(client)
    response = dmp.callers[who].post(f"Patient/{dmp.pid}/$reopen")
    if MAY_REOPEN[who] != 200:
        outcome(response, MAY_REOPEN[who])
        assert written(client) == before
        assert json_of(client.get(f"Patient/{dmp.pid}"))["active"] is False
        return
    assert response.status_code == 200, response.data
    reopened = json_of(response)
    assert reopened["active"] is True and "extension" not in reopened
    assert reopened["meta"]["versionId"] == "3"
    # the history keeps the closed version, with its closure
    closed = json_of(client.get(f"Patient/{dmp.pid}/_history/2"))
    assert closed["active"] is False and _closure(closed)["reason"] == "Demande du patient"


def test_reopen_takes_an_empty_parameters_too_and_keeps_other_extensions(client):
    identity = {"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
                "extension": [{"url": "identityStatus", "valueCoding": {
                    "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-identity-status",
                    "code": "VALI"}}]}
    dmp = new_dmp(client, extension=[identity])
    closed = dmp.callers["patient"].post(f"Patient/{dmp.pid}/$close", close_body())
    assert closed.status_code == 200, closed.data
    assert [e["url"] for e in json_of(closed)["extension"]] == [identity["url"], CLOSURE_URL]
    reopened = dmp.callers["patient"].post(f"Patient/{dmp.pid}/$reopen", {"resourceType": "Parameters"})
    assert reopened.status_code == 200, reopened.data
    assert json_of(reopened)["extension"] == [identity]


def test_closing_twice_and_reopening_an_open_dmp_conflict(client):
    dmp = new_dmp(client)
    patient = dmp.callers["patient"]
    assert outcome(patient.post(f"Patient/{dmp.pid}/$reopen"), 409)["issue"][0]["code"] == "business-rule"
    assert patient.post(f"Patient/{dmp.pid}/$close", close_body()).status_code == 200
    before = written(client)
    outcome(patient.post(f"Patient/{dmp.pid}/$close", close_body("encore")), 409)
    outcome(client.post(f"Patient/{dmp.pid}/$close", close_body("encore")), 409)
    assert written(client) == before
    # the médecin traitant may no longer open it at all: 403, whatever its state
    outcome(dmp.callers["treating"].post(f"Patient/{dmp.pid}/$close", close_body()), 403)


@pytest.mark.parametrize(("body", "status"), [
    (None, 400),
    ({"resourceType": "Parameters"}, 400),
    ({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "  "}]}, 400),
    ({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueInteger": 3}]}, 400),
    ({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "a"},
                                                  {"name": "reason", "valueString": "b"}]}, 400),
    ({"resourceType": "Parameters", "parameter": [{"name": "motif", "valueString": "a"}]}, 400),
    ({"resourceType": "Parameters", "parameter": "reason"}, 400),
    ({"resourceType": "Patient"}, 400),
])
def test_close_needs_one_reason(client, body, status):
    dmp = new_dmp(client)
    before = written(client)
    outcome(dmp.callers["patient"].post(f"Patient/{dmp.pid}/$close", body), status)
    assert written(client) == before


def test_bad_requests(client):
    dmp = new_dmp(client)
    patient = dmp.callers["patient"]
    outcome(patient.get(f"Patient/{dmp.pid}/$close"), 405)
    outcome(patient.get(f"Patient/{dmp.pid}/$reopen"), 405)
    outcome(patient.post("Patient/$close", close_body()), 400)
    outcome(client.post("Patient/no-such-dmp/$close", close_body()), 404)
    outcome(patient.post(f"Patient/{dmp.pid}/$reopen", close_body()), 400)  # $reopen takes no parameter
    outcome(patient.post(f"Patient/{dmp.pid}/$close", close_body(), headers={"If-Match": 'W/"7"'}), 412)
    assert patient.post(f"Patient/{dmp.pid}/$close", close_body(), headers={"If-Match": 'W/"1"'}).status_code == 200
    deleted = new_dmp(client)
    assert client.delete(f"Patient/{deleted.pid}").status_code == 204
    outcome(client.post(f"Patient/{deleted.pid}/$close", close_body()), 410)


def test_a_closed_dmp_refuses_professionals_and_feeding_until_reopened(client):
    dmp = new_dmp(client)
    c = dmp.callers
    doc = json_of(c["authorised"].post("DocumentReference", document(dmp.pid)))
    assert c["treating"].post(f"Patient/{dmp.pid}/$close", close_body("À la demande du patient")).status_code == 200
    for who in ("treating", "authorised", "emergency", "regulation"):
        outcome(c[who].get(f"Patient/{dmp.pid}"), 403)
        outcome(c[who].get(f"DocumentReference/{doc['id']}"), 403)
        outcome(c[who].get(f"DocumentReference?patient={dmp.pid}"), 403)
        before = written(client)
        outcome(c[who].post("DocumentReference", document(dmp.pid)), 403)
        assert written(client) == before
    # the patient still reads everything; the archive is kept
    assert c["patient"].get(f"DocumentReference/{doc['id']}").status_code == 200
    found = json_of(c["patient"].get(f"DocumentReference?patient={dmp.pid}"))
    assert [e["resource"]["id"] for e in found["entry"]] == [doc["id"]]
    assert c["patient"].post(f"Patient/{dmp.pid}/$reopen").status_code == 200
    assert c["treating"].get(f"Patient/{dmp.pid}").status_code == 200
    assert c["authorised"].post("DocumentReference", document(dmp.pid)).status_code == 201


def test_updates_do_not_close_nor_reopen(client):
    """Only $close records when and why (the purge counts ten years from that date)."""
    dmp = new_dmp(client)
    patient = dmp.callers["patient"]
    current = json_of(patient.get(f"Patient/{dmp.pid}"))
    before = written(client)
    assert outcome(patient.put(f"Patient/{dmp.pid}", {**current, "active": False}), 422)["issue"][0][
        "expression"] == ["Patient.active"]
    outcome(patient.patch(f"Patient/{dmp.pid}", [{"op": "replace", "path": "/active", "value": False}]), 422)
    assert written(client) == before
    closed = json_of(patient.post(f"Patient/{dmp.pid}/$close", close_body()))
    backdated = {**closed, "extension": [{"url": CLOSURE_URL, "extension": [
        {"url": "date", "valueDateTime": "2001-01-01T00:00:00Z"}, {"url": "reason", "valueString": "x"}]}]}
    outcome(dmp.callers["representative"].put(f"Patient/{dmp.pid}", backdated), 422)
    outcome(patient.put(f"Patient/{dmp.pid}", {k: v for k, v in closed.items() if k != "extension"}), 422)
    reopened = {**{k: v for k, v in closed.items() if k != "extension"}, "active": True}
    outcome(patient.put(f"Patient/{dmp.pid}", reopened), 422)
    # other changes to a closed DMP stay the patient's
    assert patient.put(f"Patient/{dmp.pid}", {**closed, "gender": "other"}).status_code == 200


def test_close_and_reopen_are_traced_and_listed(client):
    dmp = new_dmp(client)
    assert dmp.callers["treating"].post(f"Patient/{dmp.pid}/$close", close_body()).status_code == 200
    outcome(dmp.callers["other"].post(f"Patient/{dmp.pid}/$reopen"), 403)
    events = json_of(client.get(f"AuditEvent?patient={dmp.pid}&_count=100"))["entry"]
    ops = [(e["resource"]["agent"][0]["who"]["identifier"]["value"], e["resource"]["outcome"])
           for e in events if e["resource"]["subtype"][0]["code"] == "operation"]
    assert ("810000000201", "0") in ops and ("810000000203", "4") in ops
    capability = json_of(client.get("metadata"))
    (patient_entry,) = [r for r in capability["rest"][0]["resource"] if r["type"] == "Patient"]
    listed = {o["name"]: o["definition"] for o in patient_entry["operation"]}
    assert listed["close"] == "https://fhir-dmp.example.org/OperationDefinition/Patient-close"
    assert listed["reopen"] == "https://fhir-dmp.example.org/OperationDefinition/Patient-reopen"
    assert listed["everything"] == "http://hl7.org/fhir/OperationDefinition/Patient-everything"
