"""A small fixed data set shared by the search tests: patients, practitioners, documents."""

from __future__ import annotations

from typing import Any

from tests.fhirclient import FhirTestClient, json_of

INS = "urn:oid:1.2.250.1.213.1.4.10"
RPPS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LOINC = "http://loinc.org"
CAT = "http://example.test/doc-category"
PROFILES = "http://example.test/fhir/StructureDefinition/"
BASE = "http://localhost/fhir"


def _create(client: FhirTestClient, resource: dict) -> str:
    resp = client.post(resource["resourceType"], resource)
    assert resp.status_code == 201, resp.data
    return json_of(resp)["id"]


def _cc(system: str | None, code: str, **extra: Any) -> dict:
    coding = {"code": code} if system is None else {"system": system, "code": code}
    return {"coding": [coding], **extra}


def _doc(subject: str, **extra: Any) -> dict:
    return {"resourceType": "DocumentReference", "subject": {"reference": subject},
            "content": [{"attachment": {"contentType": "text/plain", "data": "Q29tcHRlIHJlbmR1"}}], **extra}


def _content(url: str) -> list[dict]:
    return [{"attachment": {"contentType": "application/pdf", "url": url}}]


def build_world(client: FhirTestClient) -> dict[str, str]:
    """Create the data set through the API; name -> server id."""
    w: dict[str, str] = {}
    w["prA"] = _create(client, {"resourceType": "Practitioner", "identifier": [{"system": RPPS, "value": "10001"}],
                                "name": [{"family": "Durand", "given": ["Anne"]}]})
    w["prB"] = _create(client, {"resourceType": "Practitioner", "identifier": [{"system": RPPS, "value": "10002"}],
                                "name": [{"family": "Petit"}]})
    w["roleA"] = _create(client, {"resourceType": "PractitionerRole",
                                  "practitioner": {"reference": f"Practitioner/{w['prA']}"},
                                  "identifier": [{"system": "urn:roles", "value": "R1"}]})
    w["orgA"] = _create(client, {"resourceType": "Organization", "identifier": [{"system": FINESS, "value": "F1"}],
                                 "name": "Clinique du Parc"})
    w["pA"] = _create(client, {
        "resourceType": "Patient",
        "meta": {"profile": [PROFILES + "patient-a"], "tag": [{"system": "http://example.test/tags", "code": "vip"}],
                 "security": [{"system": CONF, "code": "R"}]},
        "identifier": [{"system": INS, "value": "1800175123456"},
                       {"type": _cc(V2, "MR"), "system": "urn:hospital", "value": "MR-1"}],
        "name": [{"family": "Léger", "given": ["Hélène", "Marie"]}], "gender": "female", "birthDate": "1980-01-17",
        "telecom": [{"system": "email", "value": "a@x.fr"}],
        "address": [{"city": "Saint-Étienne", "postalCode": "42000"}],
        "generalPractitioner": [{"reference": f"Practitioner/{w['prA']}"}]})
    w["pB"] = _create(client, {
        "resourceType": "Patient", "meta": {"profile": [PROFILES + "patient-b"]},
        "identifier": [{"system": INS, "value": "2750275123456"}], "name": [{"family": "MARTIN", "given": ["Claire"]}],
        "gender": "male", "birthDate": "1975", "generalPractitioner": [{"reference": f"Organization/{w['orgA']}"}]})
    w["pC"] = _create(client, {
        "resourceType": "Patient", "identifier": [{"system": INS, "value": "1800175999999"}],
        "name": [{"family": "Helen", "given": ["Paul"]}], "birthDate": "1980-01"})
    w["d1"] = _create(client, _doc(
        f"Patient/{w['pA']}", status="current",
        type={"coding": [{"system": LOINC, "code": "11488-4", "display": "Consult note"}],
              "text": "Compte rendu de consultation"},
        category=[_cc(CAT, "ambulatory")], date="2021-03-04T10:20:30+01:00",
        context={"period": {"start": "2021-03-01", "end": "2021-03-05"}},
        author=[{"reference": f"Practitioner/{w['prA']}"}], securityLabel=[_cc(CONF, "N")],
        identifier=[{"system": "urn:docs", "value": "D1"}], content=_content("http://docs.example.test/store/a/1.pdf")))
    w["d2"] = _create(client, _doc(
        f"{BASE}/Patient/{w['pA']}", status="superseded", type=_cc(LOINC, "34133-9"),
        category=[_cc(CAT, "ambulatory"), _cc(CAT, "inpatient")], date="2021-03-04T23:30:00-02:00",
        context={"period": {"start": "2021-03-04T12:00:00Z"}},
        author=[{"reference": f"PractitionerRole/{w['roleA']}"}], securityLabel=[_cc(CONF, "R")],
        identifier=[{"system": "urn:docs", "value": "A,B"}], content=_content("http://docs.example.test/store/b/2.pdf")))
    w["d3"] = _create(client, _doc(
        f"Patient/{w['pB']}", status="entered-in-error", type=_cc(LOINC, "11488-4"), date="2020-12-31T23:59:59Z",
        context={"period": {"end": "2021-01"}},
        author=[{"reference": f"Organization/{w['orgA']}"}, {"identifier": {"system": RPPS, "value": "10002"}}],
        identifier=[{"system": "urn:docs", "value": "D3"}],
        relatesTo=[{"code": "replaces", "target": {"reference": f"DocumentReference/{w['d1']}"}}],
        content=_content("http://docs.example.test/store")))
    w["d4"] = _create(client, _doc(
        f"Patient/{w['pC']}/_history/1", status="current", type=_cc("http://other.org/codes", "11488-4"),
        category=[_cc(CAT, "inpatient")], date="2021-03-04T09:20:00.250Z",
        context={"period": {"start": "2021", "end": "2021"}}, securityLabel=[_cc(CONF, "N")],
        content=_content("urn:oid:1.2.3")))
    w["d5"] = _create(client, _doc(f"Patient/{w['pC']}", status="current", type=_cc(None, "local-1")))
    w["d6"] = _create(client, _doc(f"Patient/{w['pB']}", status="current", type=_cc(LOINC, "34133-9"),
                                   date="2010-06-01T00:00:00Z", author=[{"reference": f"Practitioner/{w['prB']}"}]))
    return w
