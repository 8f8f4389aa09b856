"""A condition naming no patient is judged in the DMPs the caller stands in by their own relationships (médecin
traitant, a Consent naming them), found by the index and bounded by their patients, never by what the store holds
elsewhere; an emergency caller names the patient."""

from __future__ import annotations

import pytest

from fhir_dmp.policy.consents import IDNATPS, authorisation
from fhir_dmp.storage import dmps
from tests.fhirclient import document, json_of, patient, written

GP = "810000000555"
DOCTOR = {"actor": "professional", "sub": GP, "profession": "10", "specialty": "SM26"}
IDENT = "urn:oid:1.2.250.1.999.7.1"


def _dmp(client, ins: str, **extra) -> str:  # type: ignore[no-untyped-def]
    return json_of(client.post("Patient", patient(ins, **extra)))["id"]


def test_the_dmps_a_professional_stands_in_are_found_by_the_index(client, database):  # type: ignore[no-untyped-def]
    treated = _dmp(client, "1800175123401", generalPractitioner=[{"identifier": {"system": IDNATPS, "value": GP}}])
    authorised = _dmp(client, "1800175123402")
    assert client.post("Consent", authorisation(authorised, GP)).status_code == 201
    _dmp(client, "1800175123403")  # a stranger's DMP
    with database.engine.connect() as conn:
        assert dmps.related_to(conn, IDNATPS, GP) == {treated, authorised}
        assert dmps.related_to(conn, IDNATPS, "810000000999") == set()


@pytest.mark.parametrize("purpose", ["BTG", "ETREAT"])
def test_an_emergency_caller_names_the_patient(client, purpose):  # type: ignore[no-untyped-def]
    pid = _dmp(client, "1800175123404")
    doctor = client.as_(**DOCTOR, purpose_of_use=purpose, access_reason="arrêt cardiaque")
    created = doctor.post("DocumentReference", document(pid, identifier=[{"system": "urn:ietf:rfc:3986",
                                                                           "value": IDENT}]))
    assert created.status_code == 201, created.data
    before = written(client)
    ops = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    unnamed = doctor.patch(f"DocumentReference?identifier={IDENT}", ops)
    assert unnamed.status_code == 400 and "names the patient" in unnamed.get_data(as_text=True)
    assert written(client) == before
    named = doctor.patch(f"DocumentReference?patient={pid}&identifier={IDENT}", ops)
    assert named.status_code == 200, named.data


def test_matches_outside_the_professionals_dmps_do_not_count(client):  # type: ignore[no-untyped-def]
    """The same identifier in a DMP the médecin does not stand in: judged there neither to find nor to refuse."""
    mine = _dmp(client, "1800175123405", generalPractitioner=[{"identifier": {"system": IDNATPS, "value": GP}}])
    other = _dmp(client, "1800175123406")
    ident = [{"system": "urn:ietf:rfc:3986", "value": IDENT}]
    assert client.post("DocumentReference", document(other, identifier=ident)).status_code == 201
    doctor = client.as_(**DOCTOR)
    assert doctor.post("DocumentReference", document(mine, identifier=ident)).status_code == 201
    ops = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    found = doctor.patch(f"DocumentReference?identifier={IDENT}", ops)
    assert found.status_code == 200, found.data
    assert json_of(found)["subject"]["reference"] == f"Patient/{mine}"


def test_a_deleted_patient_leaves_no_dmp_to_decide_from(client, database):  # type: ignore[no-untyped-def]
    """Its facts row goes with it: the professional it authorised no longer reads its documents (404, as absent)."""
    doctor = client.as_(**DOCTOR)
    pid = json_of(doctor.post("Patient", patient("1800175123407")))["id"]  # the creator is authorised
    doc = json_of(doctor.post("DocumentReference", document(pid)))["id"]
    assert doctor.get(f"DocumentReference/{doc}").status_code == 200
    assert client.delete(f"Patient/{pid}").status_code == 204  # the system (a médecin never deletes a DMP)
    with database.engine.connect() as conn:
        assert dmps.facts_of(conn, pid) is None
    assert doctor.get(f"DocumentReference/{doc}").status_code == 404
