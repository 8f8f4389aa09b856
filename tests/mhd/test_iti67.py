"""ITI-67 Find Document References and the SubmissionSet search (dmp-reference.md 5; ANS PDSm flux 05/06 and the
CapabilityStatement of the document sharing manager): one test per parameter on a small realistic DMP filed by
ITI-65 Bundles, through the HTTP API, on both stores."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fhir_dmp.policy.consents import authorisation
from tests.fhirclient import DOCTOR, FhirTestClient, document, json_of
from tests.mhd.helpers import IDNATPS, INS_TEST, IS_ARCHIVED, TRE_A07, location_id, open_dmp, provide

TRE_R02 = "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite"
TRE_A01 = "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice"
FORMAT = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
CCAM = "https://mos.esante.gouv.fr/NOS/TRE_R316-AutreCategorieEtablissement/FHIR/TRE-R316-AutreCategorieEtablissement"
BIOLOGIST = "810000000477"


def _doc(pid: str, code: str, day: str, *, author: str = DOCTOR["sub"], content_type: str = "text/plain",
         facility: str = "SA01", setting: str = "AMBULATOIRE", fmt: str = "urn:ihe:iti:xds:2017:mimeTypeSufficient",
         **extra: object) -> dict:
    body = document(pid, type={"coding": [{"system": "http://loinc.org", "code": code}]}, date=f"{day}T10:00:00+01:00",
                    author=[{"type": "Practitioner", "identifier": {"system": IDNATPS, "value": author}}], **extra)
    attachment = {**body["content"][0]["attachment"], "contentType": content_type, "creation": f"{day}T09:00:00+01:00"}
    body["content"] = [{"attachment": attachment, "format": {"system": FORMAT, "code": fmt}}]
    body["context"] = {"period": {"start": f"{day}T08:00:00+01:00", "end": f"{day}T09:30:00+01:00"},
                       "facilityType": {"coding": [{"system": TRE_R02, "code": facility}]},
                       "practiceSetting": {"coding": [{"system": TRE_A01, "code": setting}]},
                       "event": [{"coding": [{"system": CCAM, "code": "EVT-" + code}]}]}
    return body


@dataclass
class Dmp:
    pid: str
    ins: str
    ids: dict[str, str]  # name -> DocumentReference id
    lists: dict[str, str]  # name -> SubmissionSet id


@pytest.fixture
def dmp(client: FhirTestClient) -> Dmp:
    """A consultation report (later replaced), a masked and archived biology report filed by a biologist,
    a PDF prescription, and the replacing report: three SubmissionSets."""
    pid, ins = open_dmp(client)
    first = provide(client, pid, [
        (_doc(pid, "11488-4", "2026-01-10"), b"CR de consultation"),
        (_doc(pid, "11502-2", "2025-06-01", author=BIOLOGIST, facility="SA07", setting="LABO",
              securityLabel=[{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}],
              extension=[{"url": IS_ARCHIVED, "valueBoolean": True}]), b"CR de biologie"),
    ], source_id="urn:oid:1.2.250.1.999.7", designation="10")
    consultation = location_id(first["entry"][1])
    second = provide(client, pid, [(_doc(pid, "57833-6", "2026-02-01", content_type="application/pdf",
                                         fmt="urn:ihe:iti:xds-sd:pdf:2008"), b"%PDF-1.4 ordonnance")],
                     source_id="urn:oid:1.2.250.1.999.8", designation="42")
    third = provide(client, pid, [(_doc(pid, "11488-4", "2026-01-11", relatesTo=[
        {"code": "replaces", "target": {"reference": f"DocumentReference/{consultation}"}}]), "CR corrigé".encode())])
    ids = {"consultation": consultation, "biology": location_id(first["entry"][2]),
           "prescription": location_id(second["entry"][1]), "corrected": location_id(third["entry"][1])}
    lists = {"first": location_id(first["entry"][0]), "second": location_id(second["entry"][0]),
             "third": location_id(third["entry"][0])}
    other, _ = open_dmp(client)  # noise: another DMP's document must never show up
    assert client.post("DocumentReference", _doc(other, "11488-4", "2026-01-10")).status_code == 201
    return Dmp(pid, ins, ids, lists)


DOCUMENT_QUERIES = {
    "patient": ("", {"consultation", "biology", "prescription", "corrected"}),
    "status": ("status=current", {"biology", "prescription", "corrected"}),
    "status superseded": ("status=superseded", {"consultation"}),
    "type": ("type=http://loinc.org|11488-4", {"consultation", "corrected"}),
    "category": ("category=https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument|42",
                 {"prescription"}),
    "date": ("date=ge2026-01-01&date=lt2026-02-01", {"consultation", "corrected"}),
    "period": ("period=2026-01-10", {"consultation"}),
    "period-start": ("period-start=ge2026-01-11", {"prescription", "corrected"}),
    "period-end": ("period-end=lt2026-01-01", {"biology"}),
    "creation": ("creation=2026-02-01", {"prescription"}),
    "security-label": (f"security-label={TRE_A07}|MASQUE_PS", {"biology"}),
    "author": (f"author:identifier={IDNATPS}|{BIOLOGIST}", {"biology"}),
    "setting": (f"setting={TRE_A01}|LABO", {"biology"}),
    "facility": (f"facility={TRE_R02}|SA01", {"consultation", "prescription", "corrected"}),
    "event": ("event=EVT-57833-6", {"prescription"}),
    "format": (f"format={FORMAT}|urn:ihe:iti:xds-sd:pdf:2008", {"prescription"}),
    "contenttype": ("contenttype=application/pdf", {"prescription"}),
    "isArchived": ("isArchived=true", {"biology"}),
    "relatesto": ("relatesto=DocumentReference/{consultation}", {"corrected"}),
    "relation": ("relation=replaces", {"corrected"}),
}


def _names(bundle: dict, ids: dict[str, str]) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    found = {by_id.get(e["resource"]["id"], e["resource"]["id"]) for e in bundle.get("entry", [])
             if e.get("search", {}).get("mode") == "match"}
    assert bundle["total"] == len(found)
    return found


@pytest.mark.parametrize("name", list(DOCUMENT_QUERIES))
def test_each_document_parameter(client, dmp, name):
    query, expected = DOCUMENT_QUERIES[name]
    query = query.format(**dmp.ids)
    response = client.get(f"DocumentReference?patient={dmp.pid}&{query}", headers={"Prefer": "handling=strict"})
    assert response.status_code == 200, response.data
    assert _names(json_of(response), dmp.ids) == expected


@pytest.mark.parametrize("ins_system", [INS_TEST, None])
def test_the_patient_is_named_by_ins_and_the_identifier_finds_one_document(client, dmp, ins_system):
    token = f"{ins_system}|{dmp.ins}" if ins_system else dmp.ins
    doctor = client.as_(**DOCTOR)
    assert client.post("Consent", authorisation(dmp.pid, DOCTOR["sub"])).status_code == 201
    # a médecin sees everything but the masked biology report
    found = json_of(doctor.get(f"DocumentReference?patient.identifier={token}&status=current"))
    assert _names(found, dmp.ids) == {"prescription", "corrected"}
    ident = json_of(client.get(f"DocumentReference/{dmp.ids['prescription']}"))["identifier"][0]
    by_identifier = json_of(doctor.get(f"DocumentReference?patient.identifier={token}"
                                       f"&identifier={ident['system']}|{ident['value']}"))
    assert _names(by_identifier, dmp.ids) == {"prescription"}


def test_a_professional_must_name_one_patient(client, dmp):
    doctor = client.as_(**DOCTOR)
    for query in ("DocumentReference?type=http://loinc.org|11488-4", "DocumentReference",
                  "List?code=submissionset"):
        response = doctor.get(query)
        assert response.status_code == 400, (query, response.data)
        assert json_of(response)["resourceType"] == "OperationOutcome"


LIST_QUERIES = {
    "code": ("code=https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset", {"first", "second",
                                                                                               "third"}),
    "sourceId": ("sourceId=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.8", {"second"}),
    "designationType": ("designationType=42", {"second"}),
    "source": (f"source:identifier={IDNATPS}|{DOCTOR['sub']}", {"first", "second", "third"}),
    "status": ("status=current", {"first", "second", "third"}),
    "date": ("date=ge2000-01-01", {"first", "second", "third"}),
    "item": ("item=DocumentReference/{prescription}", {"second"}),
}


@pytest.mark.parametrize("name", list(LIST_QUERIES))
def test_each_submission_set_parameter(client, dmp, name):
    query, expected = LIST_QUERIES[name]
    query = query.format(**dmp.ids)
    response = client.get(f"List?patient={dmp.pid}&code=submissionset&{query}",
                          headers={"Prefer": "handling=strict"})
    assert response.status_code == 200, response.data
    assert _names(json_of(response), dmp.lists) == expected
