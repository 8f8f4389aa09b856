"""CodeSystem, ValueSet, ConceptMap and StructureDefinition over HTTP, on every backend: read and search from
the shipped files, the terminology operations (GET and POST Parameters, type and instance level), their errors,
refused writes, the CapabilityStatement, and the traces every request leaves."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest
from lxml import etree
from sqlalchemy import func, select

from fhir_dmp.config import Settings, project_dir
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.tables import resource as resource_table
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR, FhirTestClient, json_of
from tests.http.helpers import bundle, ids, link, outcome, walk

G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
J57 = "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"
X16 = "https://mos.esante.gouv.fr/NOS/ASS_X16-CorrespondanceType-Classe-DMP/FHIR/ASS-X16-CorrespondanceType-Classe-DMP"
SHIPPED = {"CodeSystem": 7, "ValueSet": 4, "ConceptMap": 1}
PATIENT = {"actor": "patient", "sub": "1800175123456", "patient": "1800175123456"}


@pytest.fixture
def doctor(client) -> FhirTestClient:
    return client.as_(**DOCTOR)


def params(body: dict) -> dict[str, object]:
    """A Parameters resource as {name: value or parts} (last one wins: enough for single-valued outputs)."""
    out: dict[str, object] = {}
    for p in body["parameter"]:
        out[p["name"]] = p.get("part") or next(v for k, v in p.items() if k.startswith("value"))
    return out


def parameters(*pairs: tuple[str, str, object]) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": n, k: v} for n, k, v in pairs]}


def ok(resp) -> dict:
    assert resp.status_code == 200, resp.data
    return json_of(resp)


# -- read and search -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, version", [
    ("CodeSystem/TRE-G15-ProfessionSante", "20250328120000"),
    ("CodeSystem/TRE-R38-SpecialiteOrdinale", "20240531120000"),
    ("CodeSystem/TRE-A08-HL7Confidentiality", "20231215120000"), ("ValueSet/JDV-J66-TypeCode-DMP", "20240927120000"),
    ("ValueSet/dmp-document-types", "20240223120000"),
    ("ConceptMap/ASS-X16-CorrespondanceType-Classe-DMP", "20240223120000"),
])
def test_read_a_shipped_resource(doctor, path, version):
    body = ok(doctor.get(path))
    assert f"{body['resourceType']}/{body['id']}" == path and body["version"] == version
    assert doctor.get(path, headers={"Accept": "application/fhir+xml"}).status_code == 200


def test_the_concept_map_ass_x16_is_readable_whole(doctor):
    x16 = ok(doctor.get("ConceptMap/ASS-X16-CorrespondanceType-Classe-DMP"))
    assert x16["url"] == X16 and [len(g["element"]) for g in x16["group"]] == [71, 31, 1]
    loinc = {e["code"]: e["target"][0]["code"] for e in x16["group"][0]["element"]}
    assert loinc["11488-4"] == "10" and loinc["60591-5"] == "11" and loinc["11369-6"] == "52"
    subset = ok(doctor.get("ConceptMap/ASS-X16-CorrespondanceType-Classe-DMP?_elements=url,version"))
    assert "group" not in subset and subset["version"] == "20240223120000"
    assert subset["meta"]["tag"][0]["code"] == "SUBSETTED"


def test_search_by_url_name_version_status_and_id(doctor):
    assert ids(bundle(doctor, f"CodeSystem?url={quote(G15)}")) == ["TRE-G15-ProfessionSante"]
    assert ids(bundle(doctor, "CodeSystem?name=tre_r")) == ["TRE-R38-SpecialiteOrdinale"]
    assert ids(bundle(doctor, "CodeSystem?name:exact=TRE_R")) == []
    assert ids(bundle(doctor, "CodeSystem?name:contains=confidential")) == [
        "TRE-A08-HL7Confidentiality", "v3-Confidentiality"]
    assert ids(bundle(doctor, "ValueSet?version=20230922120000,20200424120000")) == [
        "JDV-J57-ClassCode-DMP", "JDV-J58-ConfidentialityCode-DMP"]
    assert ids(bundle(doctor, "ValueSet?_id=dmp-document-types")) == ["dmp-document-types"]
    assert ids(bundle(doctor, "ValueSet?url:below=https://mos.esante.gouv.fr/NOS/JDV_J5")) == [
        "JDV-J57-ClassCode-DMP", "JDV-J58-ConfidentialityCode-DMP"]
    both = "url:below=https://mos.esante.gouv.fr&url:below=https://mos.esante.gouv.fr/NOS/JDV_J66"
    assert ids(bundle(doctor, f"ValueSet?{both}")) == ["JDV-J66-TypeCode-DMP"]
    assert ids(bundle(doctor, f"ConceptMap?url={quote(X16)}&status=active")) == [
        "ASS-X16-CorrespondanceType-Classe-DMP"]
    assert ids(bundle(doctor, "ConceptMap?status=retired")) == []
    by_name = ids(bundle(doctor, "ValueSet?_sort=name"))
    assert by_name == ["dmp-document-types", "JDV-J57-ClassCode-DMP", "JDV-J58-ConfidentialityCode-DMP",
                       "JDV-J66-TypeCode-DMP"]
    assert ids(bundle(doctor, "ValueSet?_sort=-name")) == by_name[::-1]
    assert ids(bundle(doctor, "ValueSet?status:not=active")) == []
    assert ids(bundle(doctor, "CodeSystem?_lastUpdated=lt2019")) == ["v3-Confidentiality"]
    assert bundle(doctor, "CodeSystem?_lastUpdated:missing=true")["total"] == 6


@pytest.mark.parametrize("rtype, total", SHIPPED.items())
def test_search_pages_and_counts_every_shipped_resource(doctor, rtype, total):
    entries, pages = walk(doctor, f"{rtype}?_count=2&_sort=-_id")
    found = [e["resource"]["id"] for e in entries]
    assert len(found) == total and found == sorted(found, reverse=True) and pages == (total + 1) // 2
    for query in ("_summary=count", "_count=0"):
        counted = bundle(doctor, f"{rtype}?{query}")
        assert counted["total"] == total and "entry" not in counted
    second = bundle(doctor, f"{rtype}?_count=1&_cursor=1")
    assert second["total"] == total and link(second, "previous") and len(ids(second)) == min(1, total - 1)


def test_unknown_search_parameters_are_reported_or_refused(doctor):
    lenient = bundle(doctor, "CodeSystem?publisher=ANS&_id=TRE-G15-ProfessionSante")
    assert ids(lenient) == ["TRE-G15-ProfessionSante"]
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    strict = doctor.get("CodeSystem?publisher=ANS", headers={"Prefer": "handling=strict"})
    outcome(strict, 400, "not-supported")


@pytest.mark.parametrize("query", [
    "_count=x", "_cursor=-1", "_sort=publisher", "name:below=x", "url:missing=maybe", "_lastUpdated=2020-13",
    "_total=maybe", "_summary=maybe",
])
def test_bad_search_values_are_400(doctor, query):
    outcome(doctor.get(f"ValueSet?{query}"), 400)


# -- CodeSystem/$lookup ----------------------------------------------------------------------------------------
def test_lookup_a_profession_and_a_specialty(doctor):
    medecin = params(ok(doctor.get(f"CodeSystem/$lookup?system={quote(G15)}&code=10")))
    assert medecin["display"] == "Médecin" and medecin["version"] == "20250328120000"
    assert medecin["name"] == "TRE_G15_ProfessionSante"
    sm26 = ok(doctor.get("CodeSystem/TRE-R38-SpecialiteOrdinale/$lookup?code=SM26"))
    assert params(sm26)["display"] == "Qualifié en Médecine générale (SM)"
    designation = next(p for p in sm26["parameter"] if p["name"] == "designation")
    assert {"name": "value", "valueString": "Qualifié MG"} in designation["part"]


def test_lookup_by_post_with_a_coding_and_chosen_properties(doctor):
    body = parameters(("coding", "valueCoding", {"system": G15, "code": "35"}), ("property", "valueCode", "status"),
                      ("property", "valueCode", "inactive"))
    answer = ok(doctor.post("CodeSystem/$lookup", body))
    props = [p["part"] for p in answer["parameter"] if p["name"] == "property"]
    assert props == [[{"name": "code", "valueCode": "status"}, {"name": "value", "valueCode": "deprecated"}],
                     [{"name": "code", "valueCode": "inactive"}, {"name": "value", "valueBoolean": True}]]
    xml = doctor.get(f"CodeSystem/$lookup?system={quote(G15)}&code=10&_format=xml")
    root = etree.fromstring(xml.data)
    assert root.tag == "{http://hl7.org/fhir}Parameters" and "Médecin" in xml.data.decode()


@pytest.mark.parametrize("path, status, code", [
    (f"CodeSystem/$lookup?system={quote(G15)}&code=999", 404, "not-found"),
    ("CodeSystem/$lookup?system=http://loinc.org&code=11488-4", 404, "not-found"),
    ("CodeSystem/nope/$lookup?code=10", 404, "not-found"),
    (f"CodeSystem/$lookup?system={quote(G15)}", 400, "required"),
    ("CodeSystem/$lookup?code=10", 400, "required"),
    (f"CodeSystem/TRE-R38-SpecialiteOrdinale/$lookup?code=SM26&system={quote(G15)}", 400, "invalid"),
    (f"CodeSystem/$lookup?system={quote(G15)}&code=10&date=2020-01-01", 400, "not-supported"),
    (f"CodeSystem/$lookup?system={quote(G15)}&code=10&code=21", 400, "invalid"),
    ("CodeSystem/$subsumes?codeA=1&codeB=2", 400, "not-supported"),
    ("ConceptMap/$lookup?code=1", 400, "not-supported"),
])
def test_lookup_errors(doctor, path, status, code):
    outcome(doctor.get(path), status, code)


# -- ValueSet/$expand ------------------------------------------------------------------------------------------
def test_expand_jdv_j57_with_and_without_filter(doctor):
    whole = ok(doctor.get(f"ValueSet/$expand?url={quote(J57)}"))
    assert whole["resourceType"] == "ValueSet" and whole["url"] == J57 and "compose" not in whole
    assert whole["expansion"]["total"] == 12 and len(whole["expansion"]["contains"]) == 12
    filtered = ok(doctor.get("ValueSet/JDV-J57-ClassCode-DMP/$expand?filter=synthese"))["expansion"]
    assert filtered["total"] == 1 and filtered["contains"][0]["code"] == "11"


def test_expand_pages(doctor):
    pages = [ok(doctor.get(f"ValueSet/$expand?url={quote(J57)}&count=5&offset={o}"))["expansion"] for o in (0, 5, 10)]
    assert [len(p["contains"]) for p in pages] == [5, 5, 2] and {p["total"] for p in pages} == {12}
    assert len({c["code"] for p in pages for c in p["contains"]}) == 12


def test_expand_by_post_with_url_or_a_value_set(doctor):
    body = parameters(("url", "valueUri", J57), ("filter", "valueString", "prescription"), ("count", "valueInteger", 1))
    assert ok(doctor.post("ValueSet/$expand", body))["expansion"]["contains"][0]["code"] == "42"
    inline = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [{"system": A03}]}}
    answer = ok(doctor.post("ValueSet/$expand", {"resourceType": "Parameters",
                                                 "parameter": [{"name": "valueSet", "resource": inline}]}))
    assert answer["expansion"]["total"] == 12
    everything = {**inline, "compose": {"include": [{"system": "http://loinc.org"}]}}
    refused = doctor.post("ValueSet/$expand", {"resourceType": "Parameters",
                                               "parameter": [{"name": "valueSet", "resource": everything}]})
    assert "http://loinc.org" in outcome(refused, 400, "not-supported")["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method, path, body, status, code", [
    ("GET", "ValueSet/$expand?url=http://example.org/nope", None, 404, "not-found"),
    ("GET", f"ValueSet/$expand?url={quote(J57)}|1", None, 404, "not-found"),
    ("GET", "ValueSet/nope/$expand", None, 404, "not-found"),
    ("GET", "ValueSet/$expand", None, 400, "required"),
    ("GET", f"ValueSet/$expand?url={quote(J57)}&count=-1", None, 400, "invalid"),
    ("GET", f"ValueSet/$expand?url={quote(J57)}&activeOnly=yes", None, 400, "invalid"),
    ("GET", f"ValueSet/$expand?url={quote(J57)}&date=2020", None, 400, "not-supported"),
    ("GET", "ValueSet/$expand?valueSet=x", None, 400, "invalid"),
    ("POST", "ValueSet/$expand", {"resourceType": "Patient"}, 400, "structure"),
    ("POST", "ValueSet/$expand", {"resourceType": "Parameters", "parameter": [{"name": "url"}]}, 400, "structure"),
    ("POST", "ValueSet/$expand", parameters(("count", "valueString", "2")), 400, "invalid"),
    ("PUT", "ValueSet/$expand", parameters(), 405, "not-supported"),
])
def test_expand_errors(doctor, method, path, body, status, code):
    outcome(doctor.request(method, path, body), status, code)


# -- ValueSet/$validate-code -----------------------------------------------------------------------------------
def test_validate_code_true_and_false(doctor):
    base = f"ValueSet/$validate-code?url={quote(J57)}&system={quote(A03)}"
    good = params(ok(doctor.get(f"{base}&code=10&display=Compte%20rendu")))
    assert good == {"result": True, "display": "Compte rendu"}
    wrong_code = params(ok(doctor.get(f"{base}&code=99")))
    assert wrong_code["result"] is False and "not in the value set" in str(wrong_code["message"])
    wrong_display = params(ok(doctor.get(f"{base}&code=10&display=Synth%C3%A8se")))
    assert wrong_display["result"] is False and wrong_display["display"] == "Compte rendu"
    implicit = f"{G15}?vs"  # ANS's name for all the codes of a TRE, as its profiles bind them
    assert params(ok(doctor.get(f"ValueSet/$validate-code?url={quote(implicit, safe='')}&system={quote(G15)}"
                                "&code=21&display=Pharmacien")))["result"] is True
    instance = params(ok(doctor.get("ValueSet/JDV-J58-ConfidentialityCode-DMP/$validate-code?code=MASQUE_PS&system="
                                    + quote("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                                            "TRE-A07-StatutVisibiliteDocument"))))
    assert instance["result"] is True


def test_validate_code_by_post_with_a_coding_or_a_codeable_concept(doctor):
    coding = {"system": "http://loinc.org", "code": "11488-4", "display": "CR ou fiche de consultation ou de visite"}
    answer = params(ok(doctor.post("ValueSet/dmp-document-types/$validate-code",
                                   parameters(("coding", "valueCoding", coding)))))
    assert answer["result"] is True
    concept = {"coding": [{"system": "http://loinc.org", "code": "00000-0"}, {"system": A03, "code": "10"}]}
    either = params(ok(doctor.post("ValueSet/$validate-code", parameters(
        ("url", "valueUri", J57), ("codeableConcept", "valueCodeableConcept", concept)))))
    assert either == {"result": True, "display": "Compte rendu"}
    neither = params(ok(doctor.post("ValueSet/$validate-code", parameters(
        ("url", "valueUri", J57), ("codeableConcept", "valueCodeableConcept", {"coding": concept["coding"][:1]})))))
    assert neither["result"] is False
    xml = (f'<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="url"/><valueUri value="{J57}"/>'
           f'</parameter><parameter><name value="coding"/><valueCoding><system value="{A03}"/><code value="11"/>'
           '</valueCoding></parameter></Parameters>').encode()
    answer_xml = doctor.request("POST", "ValueSet/$validate-code", raw=xml, content_type="application/fhir+xml",
                                headers={"Accept": "application/fhir+xml"})
    root = etree.fromstring(answer_xml.data)
    assert answer_xml.status_code == 200 and root.tag == "{http://hl7.org/fhir}Parameters"
    assert root.find("{*}parameter/{*}valueBoolean").get("value") == "true"


@pytest.mark.parametrize("path", [
    f"ValueSet/$validate-code?url={quote(J57)}&code=10",
    f"ValueSet/$validate-code?url={quote(J57)}",
    f"ValueSet/$validate-code?system={quote(A03)}&code=10",
])
def test_validate_code_needs_a_value_set_a_code_and_its_system(doctor, path):
    outcome(doctor.get(path), 400, "required")


# -- writes, other interactions, access, traces ----------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("POST", "CodeSystem"), ("PUT", "CodeSystem/TRE-G15-ProfessionSante"), ("DELETE", "ValueSet/JDV-J57-ClassCode-DMP"),
    ("PATCH", "ConceptMap/ASS-X16-CorrespondanceType-Classe-DMP"), ("DELETE", "StructureDefinition?url=x"),
    ("GET", "CodeSystem/TRE-G15-ProfessionSante/_history"), ("GET", "CodeSystem/TRE-G15-ProfessionSante/_history/1"),
    ("GET", "ValueSet/_history"), ("PUT", "ValueSet?url=x"),
])
def test_writes_and_history_are_405(client, method, path):
    body = [] if method == "PATCH" else {"resourceType": path.split("/")[0].split("?")[0], "status": "active"}
    kw = {"content_type": "application/json-patch+json"} if method == "PATCH" else {}
    resp = client.request(method, path, None if method in ("GET", "DELETE") else body, **kw)
    outcome(resp, 405, "not-supported")
    assert ok(client.get("CodeSystem/TRE-G15-ProfessionSante"))["version"] == "20250328120000"


def test_a_transaction_cannot_create_one_and_a_batch_can_read_them(client, database):
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "ValueSet", "status": "active"},
         "request": {"method": "POST", "url": "ValueSet"}}]}
    outcome(client.post("", transaction), 405, "not-supported")
    with database.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(resource_table)
                              .where(resource_table.c.resource_type == "ValueSet")).scalar_one()
    assert stored == 0
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "CodeSystem/TRE-A03-ClasseDocument"}},
        {"request": {"method": "GET", "url": f"ValueSet/$expand?url={quote(J57)}&count=1"}}]}
    answer = ok(client.post("", batch))
    assert [e["response"]["status"] for e in answer["entry"]] == ["200 OK", "200 OK"]
    assert answer["entry"][1]["resource"]["expansion"]["total"] == 12


def test_any_admitted_caller_reads_them_refused_actors_do_not(client):
    for claims in (PATIENT, DOCTOR, {"actor": "professional", "sub": "810000000091", "profession": "91"}):
        assert params(ok(client.as_(**claims).get(f"CodeSystem/$lookup?system={quote(G15)}&code=10")))["display"]
    outcome(client.as_(actor="insurer", sub="CPAM").get("CodeSystem/TRE-G15-ProfessionSante"), 403)
    outcome(client.as_(**{**DOCTOR, "specialty": "SM25"}).get("ValueSet"), 403)
    assert client.get("CodeSystem", auth=False).status_code == 401


def test_every_request_leaves_a_trace_on_the_server_chain(client, doctor):
    doctor.get("CodeSystem/TRE-G15-ProfessionSante")
    doctor.get(f"ValueSet/$expand?url={quote(J57)}")
    doctor.get("ValueSet/nope")
    events = [e["resource"] for e in walk(client, "AuditEvent?_count=100")[0]]
    assert len(events) == 3 and [e["outcome"] for e in events].count("0") == 2
    entities = [x for e in events for x in e.get("entity", [])]
    assert {"what": {"reference": "CodeSystem/TRE-G15-ProfessionSante"}} in entities
    assert not any(x.get("what", {}).get("reference", "").startswith("Patient/") for x in entities)  # no DMP
    queries = [base64.b64decode(x["query"]).decode() for x in entities if "query" in x]
    assert queries == [f"ValueSet?url={J57}"]
    refused = [e for e in events if e["outcome"] == "4"]
    assert len(refused) == 1 and "ValueSet/nope does not exist" in refused[0]["outcomeDesc"]


# -- the CapabilityStatement and the profiles ------------------------------------------------------------------
def test_metadata_lists_them_with_their_operations(client):
    resources = {r["type"]: r for r in ok(client.get("metadata", auth=False))["rest"][0]["resource"]}
    for rtype in ("CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition"):
        assert [i["code"] for i in resources[rtype]["interaction"]] == ["read", "search-type"]
        assert {p["name"] for p in resources[rtype]["searchParam"]} == {
            "_id", "_lastUpdated", "url", "name", "version", "status"}
    assert resources["CodeSystem"]["operation"] == [
        {"name": "lookup", "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"}]
    assert [o["name"] for o in resources["ValueSet"]["operation"]] == ["expand", "validate-code"]
    assert "operation" not in resources["ConceptMap"]


@pytest.fixture
def with_profiles(tmp_path: Path, database) -> FhirTestClient:  # type: ignore[no-untyped-def]
    """A server whose home has the shipped terminologies and two profiles of our own."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ("terminologies", "capability"):
        (home / name).symlink_to(project_dir() / name)
    (home / "profiles").mkdir()
    for rid, rtype in (("dmp-patient", "Patient"), ("dmp-document", "DocumentReference")):
        sd = {"resourceType": "StructureDefinition", "id": rid, "url": f"https://fhir-dmp.example.org/StructureDefinition/{rid}",
              "version": "0.1.0", "name": rid.title().replace("-", ""), "status": "draft", "kind": "resource",
              "abstract": False, "type": rtype, "derivation": "constraint",
              "baseDefinition": f"http://hl7.org/fhir/StructureDefinition/{rtype}"}
        (home / "profiles" / f"StructureDefinition-{rid}.json").write_text(json.dumps(sd), encoding="utf-8")
    settings = Settings(database_url=database.url, jwt_secret=SECRET, home=home)
    return FhirTestClient(create_app(settings, database=database).test_client(), SECRET)


def test_profiles_are_read_searched_and_listed_as_supported(with_profiles):
    client = with_profiles
    assert ok(client.get("StructureDefinition/dmp-patient"))["type"] == "Patient"
    assert ids(bundle(client, "StructureDefinition?name=dmpdoc")) == ["dmp-document"]
    assert bundle(client, "StructureDefinition?status=draft&version=0.1.0")["total"] == 2
    resources = {r["type"]: r for r in ok(client.get("metadata", auth=False))["rest"][0]["resource"]}
    assert resources["Patient"]["supportedProfile"] == ["https://fhir-dmp.example.org/StructureDefinition/dmp-patient"]
    assert resources["DocumentReference"]["supportedProfile"] == [
        "https://fhir-dmp.example.org/StructureDefinition/dmp-document"]
    assert "supportedProfile" not in resources["Consent"]
    outcome(client.get("StructureDefinition/nope"), 404, "not-found")
