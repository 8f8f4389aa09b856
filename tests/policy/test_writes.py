"""Who may write what (policy/writes.py, dmp-reference.md 4 to 6, 9): each rule tried by the actors it
must refuse and by those it must let through, with nothing written by a refusal."""

from __future__ import annotations

import uuid

import pytest

from fhir_dmp.policy.consents import IDNATPS, authorisation
from tests.fhirclient import document, json_of, patient, written

TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TREATING, DOCTOR, KINE = "810000000101", "810000000102", "810000000103"


def _ins() -> str:
    return str(uuid.uuid4().int)[:13]


def _pro(client, sub: str, profession: str = "10", **extra):  # type: ignore[no-untyped-def]
    return client.as_(actor="professional", sub=sub, profession=profession, **extra)


def _dmp(client, **extra):  # type: ignore[no-untyped-def]
    """A DMP with a médecin traitant and an authorised médecin; its patient and representative clients."""
    ins = _ins()
    body = patient(ins, generalPractitioner=[{"identifier": {"system": IDNATPS, "value": TREATING}}], **extra)
    pid = json_of(client.post("Patient", body))["id"]
    assert client.post("Consent", authorisation(pid, DOCTOR)).status_code == 201
    return (pid, client.as_(actor="patient", sub=ins, patient=ins),
            client.as_(actor="representative", sub="rep-" + ins, patient=ins))


def _deny(pid: str, ps: str, **provision) -> dict:  # type: ignore[no-untyped-def]
    body = authorisation(pid, ps)
    body["provision"] = {**body["provision"], "type": "deny", **provision}
    return body


def _classed(pid: str, klass: str, code: str = "11488-4") -> dict:
    system = "http://loinc.org" if code[:1].isdigit() else TRE_A05
    return document(pid, type={"coding": [{"system": system, "code": code}]},
                    category=[{"coding": [{"system": A03, "code": klass}]}])


def _refused(client, response, status: int = 403) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.data
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_a_professional_who_opens_a_dmp_is_authorised_on_it(client):
    creator = _pro(client, "8" + _ins()[:11])
    created = creator.post("Patient", patient(_ins()))
    assert created.status_code == 201, created.data
    pid = json_of(created)["id"]
    assert creator.get(f"DocumentReference?patient={pid}").status_code == 200
    assert creator.get(f"Patient/{pid}").status_code == 200
    assert _pro(client, "8" + _ins()[:11]).get(f"Patient/{pid}").status_code == 403  # nobody else


def test_a_professional_records_only_their_own_authorisation(client):
    pid, _, _ = _dmp(client)
    newcomer = _pro(client, "810000000199")
    before = written(client)
    _refused(client, newcomer.post("Consent", authorisation(pid, "810000000198")))  # someone else's
    _refused(client, newcomer.post("Consent", _deny(pid, KINE)))  # a block is the patient's
    grant = authorisation(pid, "810000000199")
    grant["provision"]["securityLabel"] = [{"code": "MASQUE_PS"}]
    _refused(client, newcomer.post("Consent", grant))  # a masked grant is the patient's
    assert written(client) == before
    assert newcomer.post("Consent", authorisation(pid, "810000000199")).status_code == 201
    assert newcomer.get(f"DocumentReference?patient={pid}").status_code == 200


@pytest.mark.parametrize("who", ["patient", "representative"])
def test_the_medecin_traitant_cannot_be_blocked(client, who):
    pid, patient_client, representative = _dmp(client)
    caller = patient_client if who == "patient" else representative
    before = written(client)
    _refused(client, caller.post("Consent", _deny(pid, TREATING)), 422)
    assert written(client) == before
    assert caller.post("Consent", _deny(pid, DOCTOR)).status_code == 201  # anyone else can be
    _refused(client, _pro(client, DOCTOR).get(f"DocumentReference?patient={pid}"))
    assert _pro(client, TREATING).get(f"DocumentReference?patient={pid}").status_code == 200


def test_patients_file_class_90_documents_in_their_own_dmp_only(client):
    pid, patient_client, representative = _dmp(client)
    other, _, _ = _dmp(client)
    before = written(client)
    _refused(client, patient_client.post("DocumentReference", _classed(pid, "10")))
    _refused(client, patient_client.post("DocumentReference", _classed(other, "90", "EXPPAT_3")))
    _refused(client, patient_client.post("Patient", patient(_ins())))  # only their own INS
    _refused(client, patient_client.post("Communication", {
        "resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{pid}"}}))
    assert written(client) == before
    directive = _classed(pid, "90", "EXPPAT_3")
    directive["type"]["coding"][0]["system"] = (
        "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire")
    for caller in (patient_client, representative):
        assert caller.post("DocumentReference", directive).status_code == 201


def test_feeding_needs_an_open_dmp_and_no_opposition_but_no_authorisation(client):
    pid, patient_client, _ = _dmp(client)
    stranger = _pro(client, "810000000177")
    assert stranger.post("DocumentReference", document(pid)).status_code == 201  # feeding is open
    assert patient_client.post("Consent", _deny(pid, "810000000177", action=[
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "collect"}]}]
    )).status_code == 201
    def filed() -> int:
        return json_of(client.get(f"DocumentReference?patient={pid}&_summary=count"))["total"]

    _refused(client, stranger.post("DocumentReference", document(pid)))
    assert filed() == 1
    assert _pro(client, DOCTOR).post("DocumentReference", document(pid)).status_code == 201  # others still feed
    assert filed() == 2
    closed, _, _ = _dmp(client, active=False)
    after = written(client)
    _refused(client, _pro(client, DOCTOR).post("DocumentReference", document(closed)))
    assert written(client) == after


def test_only_the_depositor_or_the_patient_changes_a_document(client):
    pid, patient_client, _ = _dmp(client)
    doctor, treating = _pro(client, DOCTOR), _pro(client, TREATING)
    doc = json_of(doctor.post("DocumentReference", document(pid)))
    before = written(client)
    _refused(client, treating.put(f"DocumentReference/{doc['id']}", {**doc, "description": "x"}))
    _refused(client, treating.delete(f"DocumentReference/{doc['id']}"))
    assert written(client) == before
    updated = doctor.put(f"DocumentReference/{doc['id']}", {**doc, "description": "corrigé"})
    assert updated.status_code == 200, updated.data
    masked = patient_client.patch(f"DocumentReference/{doc['id']}", [
        {"op": "add", "path": "/securityLabel/-", "value": {"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}}],
        content_type="application/json-patch+json")
    assert masked.status_code == 200, masked.data
    assert doctor.get(f"DocumentReference/{doc['id']}").status_code == 200  # the depositor still sees it
    assert _pro(client, "810000000166", purpose_of_use="BTG", access_reason="coma").get(
        f"DocumentReference/{doc['id']}").status_code == 404  # masked from an emergency the patient did not open
    assert patient_client.delete(f"DocumentReference/{doc['id']}").status_code == 204


def test_the_patients_choices_are_not_the_professionals(client):
    pid, patient_client, _ = _dmp(client)
    doctor = _pro(client, DOCTOR)
    current = json_of(doctor.get(f"Patient/{pid}"))
    before = written(client)
    _refused(client, doctor.put(f"Patient/{pid}", {**current, "active": False}))
    _refused(client, doctor.put(f"Patient/{pid}", {**current, "generalPractitioner": [
        {"identifier": {"system": IDNATPS, "value": DOCTOR}}]}))
    _refused(client, doctor.delete(f"Patient/{pid}"))
    assert written(client) == before
    assert doctor.put(f"Patient/{pid}", {**current, "gender": "other"}).status_code == 200
    closed = patient_client.post(f"Patient/{pid}/$close", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "Demande du patient"}]})  # 9: closing is $close (tests/lifecycle)
    assert closed.status_code == 200, closed.data
    _refused(client, doctor.get(f"Patient/{pid}"))  # closed: professionals are out
    assert patient_client.get(f"DocumentReference?patient={pid}").status_code == 200


@pytest.mark.parametrize("resource", ["AuditEvent", "Communication"])
def test_traces_and_notifications_are_the_servers(client, resource):
    pid, _, _ = _dmp(client)
    body = {"resourceType": resource, "status": "completed", "subject": {"reference": f"Patient/{pid}"}}
    if resource == "AuditEvent":
        body = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    expected = 405 if resource == "AuditEvent" else 403
    for caller in (_pro(client, DOCTOR), _pro(client, TREATING)):
        _refused(client, caller.post(resource, body), expected)


@pytest.mark.parametrize("token", [{"actor": "patient"}, {"actor": "professional", "profession": "10"}])
def test_a_secret_connection_labels_what_it_files(client, token):
    pid, patient_client, representative = _dmp(client)
    ins = json_of(client.get(f"Patient/{pid}"))["identifier"][0]["value"]
    claims = {**token, "sub": ins if token["actor"] == "patient" else DOCTOR, "secret": True}
    if token["actor"] == "patient":
        claims["patient"] = ins
        body = _classed(pid, "90", "EXPPAT_3")
        body["type"]["coding"][0]["system"] = (
            "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire")
    else:
        body = document(pid)
    created = client.as_(**claims).post("DocumentReference", body)
    assert created.status_code == 201, created.data
    doc = json_of(created)
    assert "INVISIBLE_REPRESENTANTS_LEGAUX" in {c["code"] for s in doc["securityLabel"] for c in s["coding"]}
    assert representative.get(f"DocumentReference/{doc['id']}").status_code == 404
    assert patient_client.get(f"DocumentReference/{doc['id']}").status_code == 200
