"""The VSM (dmp-reference.md 8): who writes it, who sees it and its entries, the DocumentReference saving it files,
`Composition/{id}/$document` and the médecin traitant's `Patient/$vsm-status`."""

from __future__ import annotations

import base64
import uuid

import pytest

from fhir_dmp import fhirjson
from fhir_dmp.policy.consents import IDNATPS, authorisation
from fhir_dmp.validation.documents import digest
from fhir_dmp.validation.structure import validate_structure
from tests.fhirclient import DOCTOR, FhirTestClient, document, json_of, patient, written
from tests.vsm.helpers import allergy, condition, vsm

TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
NURSE = {"actor": "professional", "sub": "810000000060", "profession": "60"}  # the matrix lets nurses see 60591-5
KINE = {"actor": "professional", "sub": "810000000070", "profession": "70"}  # ... and not physiotherapists
PHARMACIST = {"actor": "professional", "sub": "810000000021", "profession": "21"}
MIDWIFE = {"actor": "professional", "sub": "810000000050", "profession": "50"}
OTHER_DOCTOR = {"actor": "professional", "sub": "810000000010", "profession": "10"}
TREATING = {"actor": "professional", "sub": "810000000099", "profession": "10", "specialty": "SM26"}


def _ins() -> str:
    return str(uuid.uuid4().int)[:13]


def _dmp(client: FhirTestClient, **extra: object) -> tuple[str, str]:
    """A DMP whose médecin traitant is TREATING and where DOCTOR, NURSE, KINE, PHARMACIST, MIDWIFE and
    OTHER_DOCTOR are authorised; (patient id, INS)."""
    ins = _ins()
    body = patient(ins, generalPractitioner=[{"identifier": {"system": IDNATPS, "value": TREATING["sub"]}}], **extra)
    response = client.post("Patient", body)
    assert response.status_code == 201, response.data
    pid = json_of(response)["id"]
    for who in (DOCTOR, NURSE, KINE, PHARMACIST, MIDWIFE, OTHER_DOCTOR):
        assert client.post("Consent", authorisation(pid, who["sub"])).status_code == 201
    return pid, ins


def _saved(client: FhirTestClient) -> tuple[str, str, str, dict]:
    """A DMP with a VSM by DOCTOR listing one Condition and one AllergyIntolerance: (pid, composition id,
    condition id, the Composition)."""
    pid, _ = _dmp(client)
    doctor = client.as_(**DOCTOR)
    cid = json_of(doctor.post("Condition", condition(pid)))["id"]
    aid = json_of(doctor.post("AllergyIntolerance", allergy(pid)))["id"]
    response = doctor.post("Composition", vsm(pid, {"11450-4": [f"Condition/{cid}"],
                                                    "48765-2": [f"AllergyIntolerance/{aid}"]}))
    assert response.status_code == 201, response.data
    return pid, json_of(response)["id"], cid, json_of(response)


def _vsm_documents(client: FhirTestClient, pid: str, **who: str) -> list[dict]:
    caller = client.as_(**who) if who else client
    response = caller.get(f"DocumentReference?patient={pid}&type=http://loinc.org|60591-5&status=current,superseded")
    assert response.status_code == 200, response.data
    docs = [e["resource"] for e in json_of(response).get("entry", []) if e["search"]["mode"] == "match"]
    return sorted(docs, key=lambda d: d["status"] != "current")  # the current one first


# -- saving a VSM files its DocumentReference ------------------------------------------------------------------
def test_saving_a_vsm_files_a_conformant_document_reference_with_the_document_bundle(client):
    pid, comp_id, cid, composition = _saved(client)
    docs = _vsm_documents(client, pid)
    assert len(docs) == 1
    doc = docs[0]
    assert doc["status"] == "current" and doc["subject"]["reference"] == f"Patient/{pid}"
    assert doc["category"][0]["coding"][0]["code"] == "11"
    assert doc["author"] == composition["author"] and doc["custodian"] == composition["custodian"]
    assert doc["context"]["period"]["start"] == composition["date"]
    assert doc["context"]["related"] == [{"reference": f"Composition/{comp_id}"}]
    # it conforms to dmp-documentreference, attachment size and hash included
    check = client.post("DocumentReference/$validate", doc)
    assert not [i for i in json_of(check)["issue"] if i["severity"] in ("error", "fatal")], check.data
    attachment = doc["content"][0]["attachment"]
    binary = json_of(client.get(attachment["url"]))
    raw = base64.b64decode(binary["data"])
    assert attachment["size"] == len(raw) and attachment["hash"] == digest(raw)
    assert binary["securityContext"]["reference"] == f"DocumentReference/{doc['id']}"
    bundle = fhirjson.loads(raw)
    assert bundle["type"] == "document" and bundle["identifier"] == doc["masterIdentifier"]
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Composition", "Patient", "Condition",
                                                                        "AllergyIntolerance"]
    assert validate_structure(bundle) == []
    # ITI-67 finds it by the patient's INS too
    ins = json_of(client.get(f"Patient/{pid}"))["identifier"][0]["value"]
    found = json_of(client.get(f"DocumentReference?patient.identifier=urn:oid:1.2.250.1.213.1.4.10|{ins}"
                               "&type=60591-5&status=current"))
    assert [e["resource"]["id"] for e in found["entry"]] == [doc["id"]]


def test_a_new_version_or_a_new_vsm_replaces_the_current_one(client):
    pid, comp_id, cid, _ = _saved(client)
    doctor = client.as_(**DOCTOR)
    first = _vsm_documents(client, pid)[0]
    response = doctor.put(f"Composition/{comp_id}", {**vsm(pid, {"11450-4": [f"Condition/{cid}"]}), "id": comp_id})
    assert response.status_code == 200, response.data
    docs = _vsm_documents(client, pid)
    older = next(d for d in docs if d["id"] == first["id"])
    newest = next(d for d in docs if d["id"] != first["id"])
    assert older["status"] == "superseded" and newest["status"] == "current"
    assert newest["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{first['id']}"}}]
    assert newest["masterIdentifier"] != first["masterIdentifier"]  # one document identifier per version
    # a second VSM of the same DMP (another Composition) becomes the current one too
    other = json_of(doctor.post("Composition", vsm(pid)))
    docs = _vsm_documents(client, pid)
    assert sorted(d["status"] for d in docs) == ["current", "superseded", "superseded"]
    current = [d for d in docs if d["status"] == "current"]
    assert current[0]["context"]["related"] == [{"reference": f"Composition/{other['id']}"}]
    current = json_of(client.get(f"DocumentReference?patient={pid}&type=60591-5&status=current"))
    assert current["total"] == 1


def test_a_vsm_in_a_transaction_files_its_document_all_or_nothing(client):
    pid, _ = _dmp(client)
    doctor = client.as_(**DOCTOR)
    cond = "urn:uuid:" + str(uuid.uuid4())
    entries = [
        {"fullUrl": cond, "resource": condition(pid), "request": {"method": "POST", "url": "Condition"}},
        {"fullUrl": "urn:uuid:" + str(uuid.uuid4()), "resource": vsm(pid, {"11450-4": [cond]}),
         "request": {"method": "POST", "url": "Composition"}},
    ]
    response = doctor.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.data
    docs = _vsm_documents(client, pid)
    assert len(docs) == 1
    bundle = fhirjson.loads(base64.b64decode(json_of(client.get(docs[0]["content"][0]["attachment"]["url"]))["data"]))
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Composition", "Patient", "Condition"]
    # a failing entry rolls everything back: no Composition, no DocumentReference, no Binary
    before = written(client)
    bad = [*entries, {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient/nope"}}]
    assert doctor.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": bad}).status_code >= 400
    assert written(client) == before


def test_a_vsm_may_not_reference_another_dmps_resources(client):
    pid, _ = _dmp(client)
    other, _ = _dmp(client)
    doctor = client.as_(**DOCTOR)
    foreign = json_of(doctor.post("Condition", condition(other)))["id"]
    before = written(client)
    response = doctor.post("Composition", vsm(pid, {"11450-4": [f"Condition/{foreign}"]}))
    assert response.status_code == 422 and "another DMP" in response.get_data(as_text=True)
    assert written(client) == before


def test_a_vsm_whose_document_reference_would_not_conform_is_refused(client):
    pid, _ = _dmp(client)
    body = {k: v for k, v in vsm(pid).items() if k != "custodian"}  # no custodian, none in the token either
    response = client.as_(**DOCTOR).post("Composition", body)
    assert response.status_code == 422 and "custodian" in response.get_data(as_text=True)
    # with the caller's structure in the token, it is the custodian
    response = client.as_(**DOCTOR, organization="1750000042").post("Composition", body)
    assert response.status_code == 201
    assert _vsm_documents(client, pid)[0]["custodian"]["identifier"]["value"] == "1750000042"


# -- who writes it ----------------------------------------------------------------------------------------------
WRITERS = [
    ("system", {"actor": "system", "sub": "feed"}, True),
    ("médecin", DOCTOR, True),
    ("médecin, emergency", {**OTHER_DOCTOR, "sub": "810000000011", "purpose_of_use": "ETREAT"}, True),
    ("infirmier", NURSE, False),
    ("masseur-kinésithérapeute", KINE, False),
    ("pharmacien", PHARMACIST, False),
    ("sage-femme", MIDWIFE, False),
    ("patient", {"actor": "patient", "sub": "p"}, False),
    ("representative", {"actor": "representative", "sub": "r"}, False),
]


@pytest.mark.parametrize(("who", "claims", "allowed"), WRITERS, ids=[w[0] for w in WRITERS])
@pytest.mark.parametrize("kind", ["Composition", "Condition", "AllergyIntolerance", "DocumentReference"])
def test_only_medecins_and_systems_write_the_vsm_and_its_entries(client, who, claims, allowed, kind):
    pid, ins = _dmp(client)
    if claims["actor"] in ("patient", "representative"):
        claims = {**claims, "patient": ins, **({"sub": ins} if claims["actor"] == "patient" else {})}
    bodies = {"Composition": vsm(pid), "Condition": condition(pid), "AllergyIntolerance": allergy(pid)}
    if kind == "DocumentReference":
        bodies[kind] = document(pid, type={"coding": [{"system": "http://loinc.org", "code": "60591-5"}]})
    before = written(client)
    response = client.as_(**claims).post(kind, bodies[kind])
    if allowed:
        assert response.status_code == 201, response.data
    else:
        assert response.status_code == 403, response.data
        assert written(client) == before


def test_patients_delete_the_vsm_but_do_not_rewrite_it_nor_do_other_professionals(client):
    pid, comp_id, cid, composition = _saved(client)
    ins = json_of(client.get(f"Patient/{pid}"))["identifier"][0]["value"]
    me = client.as_(actor="patient", sub=ins, patient=ins)
    changed = {**composition, "title": "Réécrit"}
    assert me.put(f"Composition/{comp_id}", changed).status_code == 403
    assert me.put(f"Condition/{cid}", {**condition(pid, "autre"), "id": cid}).status_code == 403
    assert client.as_(**OTHER_DOCTOR).put(f"Composition/{comp_id}", changed).status_code == 403
    assert client.as_(**DOCTOR).put(f"Composition/{comp_id}", changed).status_code == 200
    assert me.delete(f"Condition/{cid}").status_code == 204


# -- who sees it --------------------------------------------------------------------------------------------------
def _sees(client: FhirTestClient, claims: dict, pid: str, comp_id: str, cid: str, doc: dict) -> dict[str, bool]:
    """What `claims` sees of the VSM, by every way in: read, search, _include, _revinclude, history, $document."""
    who = client.as_(**claims)
    binary = doc["content"][0]["attachment"]["url"]

    def ids(path: str) -> set[str]:
        response = who.get(path)
        assert response.status_code == 200, (path, response.data)
        return {e["resource"]["id"] for e in json_of(response).get("entry", [])}

    return {
        "read Composition": who.get(f"Composition/{comp_id}").status_code == 200,
        "read Condition": who.get(f"Condition/{cid}").status_code == 200,
        "read DocumentReference": who.get(f"DocumentReference/{doc['id']}").status_code == 200,
        "read Binary": who.get(binary).status_code == 200,
        "vread Condition": who.get(f"Condition/{cid}/_history/1").status_code == 200,
        "history Composition": who.get(f"Composition/{comp_id}/_history").status_code == 200
        and json_of(who.get(f"Composition/{comp_id}/_history")).get("total", 0) > 0,
        "search Composition": comp_id in ids(f"Composition?patient={pid}"),
        "search Condition": cid in ids(f"Condition?patient={pid}"),
        "search DocumentReference": doc["id"] in ids(f"DocumentReference?patient={pid}&type=60591-5"),
        "_revinclude": bool({comp_id, cid} & ids(f"Patient?_id={pid}&_revinclude=Composition:subject"
                                                 f"&_revinclude=Condition:subject")),
        "_include": cid in ids(f"Composition?patient={pid}&_include=Composition:entry")
        or cid in ids(f"DocumentReference?patient={pid}&_include=DocumentReference:related"),
        "_has": pid in ids(f"Patient?_id={pid}&_has:Condition:subject:_id={cid}"),
        "$document": who.get(f"Composition/{comp_id}/$document").status_code == 200,
    }


@pytest.mark.parametrize(("claims", "sees"), [
    ({"actor": "system", "sub": "s"}, True),
    (DOCTOR, True),
    (TREATING, True),
    (NURSE, True),
    (PHARMACIST, True),
    (KINE, False),
], ids=["system", "médecin", "médecin traitant", "infirmier", "pharmacien", "kinésithérapeute"])
def test_the_vsm_its_entries_and_its_document_are_seen_as_a_60591_5_document(client, claims, sees):
    pid, comp_id, cid, _ = _saved(client)
    doc = _vsm_documents(client, pid)[0]
    seen = _sees(client, claims, pid, comp_id, cid, doc)
    assert seen == dict.fromkeys(seen, sees)


def test_masking_the_vsm_document_hides_the_composition_and_its_entries(client):
    pid, comp_id, cid, _ = _saved(client)
    doc = _vsm_documents(client, pid)[0]
    ins = json_of(client.get(f"Patient/{pid}"))["identifier"][0]["value"]
    me = client.as_(actor="patient", sub=ins, patient=ins)
    labels = [*doc["securityLabel"], {"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}]
    response = me.patch(f"DocumentReference/{doc['id']}", [{"op": "replace", "path": "/securityLabel",
                                                            "value": labels}])
    assert response.status_code == 200, response.data
    nurse = _sees(client, NURSE, pid, comp_id, cid, doc)
    assert nurse == dict.fromkeys(nurse, False)
    assert all(_sees(client, TREATING, pid, comp_id, cid, doc).values())  # the médecin traitant sees masked ones
    assert all(_sees(client, DOCTOR, pid, comp_id, cid, doc).values())  # and the depositor what they filed
    # a new version of the VSM stays masked, and so does the Condition after its own update
    doctor = client.as_(**DOCTOR)
    assert doctor.put(f"Condition/{cid}", {**condition(pid, "HTA"), "id": cid}).status_code == 200
    assert doctor.put(f"Composition/{comp_id}", {**vsm(pid, {"11450-4": [f"Condition/{cid}"]}),
                                                 "id": comp_id}).status_code == 200
    newest = _vsm_documents(client, pid)[0]
    assert any(c.get("code") == "MASQUE_PS" for concept in newest["securityLabel"] for c in concept["coding"])
    nurse = _sees(client, NURSE, pid, comp_id, cid, newest)
    assert nurse == dict.fromkeys(nurse, False)


def test_a_patient_sees_the_vsm_unless_it_is_invisible_to_them(client):
    pid, ins = _dmp(client)
    doctor = client.as_(**DOCTOR)
    cid = json_of(doctor.post("Condition", condition(pid)))["id"]
    hidden = {"meta": {"security": [{"system": TRE_A07, "code": "INVISIBLE_PATIENT"}]}}
    comp_id = json_of(doctor.post("Composition", vsm(pid, {"11450-4": [f"Condition/{cid}"]}, **hidden)))["id"]
    doc = _vsm_documents(client, pid)[0]
    assert any(c.get("code") == "INVISIBLE_PATIENT" for concept in doc["securityLabel"] for c in concept["coding"])
    me = {"actor": "patient", "sub": ins, "patient": ins}
    seen = _sees(client, me, pid, comp_id, cid, doc)
    assert seen == dict.fromkeys(seen, False)
    representative = _sees(client, {"actor": "representative", "sub": "r", "patient": ins}, pid, comp_id, cid, doc)
    assert representative == dict.fromkeys(representative, False)
    assert all(_sees(client, DOCTOR, pid, comp_id, cid, doc).values())


def test_summary_entry_searches_name_one_patient_for_professionals(client):
    pid, comp_id, cid, _ = _saved(client)
    doctor = client.as_(**DOCTOR)
    assert doctor.get("Condition").status_code == 400
    assert doctor.get("Observation?code=1234").status_code == 400
    found = json_of(doctor.get(f"Condition?subject=Patient/{pid}&code:text=hypertension"))
    assert [e["resource"]["id"] for e in found["entry"]] == [cid]
    assert json_of(doctor.get(f"AllergyIntolerance?patient={pid}"))["total"] == 1
    metadata = json_of(client.get("metadata", auth=False))
    resources = {r["type"]: r for r in metadata["rest"][0]["resource"]}
    for kind in ("Condition", "AllergyIntolerance", "MedicationStatement", "Procedure", "DeviceUseStatement",
                 "Immunization", "Observation"):
        params = {p["name"] for p in resources[kind]["searchParam"]}
        assert {"patient", "_id"} <= params, kind
    operations = {o["name"]: o["definition"] for o in resources["Composition"]["operation"]}
    assert operations["document"] == "http://hl7.org/fhir/OperationDefinition/Composition-document"
    assert any(o["name"] == "vsm-status" for o in resources["Patient"]["operation"])


# -- $document -------------------------------------------------------------------------------------------------------
def _persist(value: bool) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "persist", "valueBoolean": value}]}


def test_the_document_bundle_of_r4(client):
    pid, comp_id, cid, composition = _saved(client)
    doctor = client.as_(**DOCTOR)
    first = json_of(doctor.get(f"Composition/{comp_id}/$document"))
    again = json_of(doctor.post(f"Composition/{comp_id}/$document"))
    posted = json_of(doctor.post(f"Composition/{comp_id}/$document", _persist(False)))
    assert first == again == posted
    assert first["type"] == "document" and first["timestamp"] and first["identifier"]["value"].startswith("urn:uuid:")
    assert first["entry"][0]["resource"]["id"] == comp_id
    assert all(e["fullUrl"].endswith(f"{e['resource']['resourceType']}/{e['resource']['id']}") for e in first["entry"])
    assert validate_structure(first) == []
    assert first["identifier"] == _vsm_documents(client, pid)[0]["masterIdentifier"]


def test_the_document_leaves_out_what_is_missing_or_deleted(client):
    pid, _ = _dmp(client)
    doctor = client.as_(**DOCTOR)
    cid = json_of(doctor.post("Condition", condition(pid)))["id"]
    gone = json_of(doctor.post("Condition", condition(pid, "Grippe")))["id"]
    comp_id = json_of(doctor.post("Composition", vsm(pid, {"11450-4": [f"Condition/{cid}", f"Condition/{gone}",
                                                                       "Condition/does-not-exist"]})))["id"]
    assert doctor.delete(f"Condition/{gone}").status_code == 204
    bundle = json_of(doctor.get(f"Composition/{comp_id}/$document"))
    assert [e["resource"]["id"] for e in bundle["entry"][1:]] == [pid, cid]


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "$document?persist=true", None, 400),
    ("GET", "$document?persist=maybe", None, 400),
    ("GET", "$document?graph=http://x", None, 400),
    ("POST", "$document", _persist(True), 400),
    ("POST", "$document", {"resourceType": "Patient"}, 400),
    ("DELETE", "$document", None, 405),
])
def test_document_parameters(client, method, path, body, status):
    pid, comp_id, _, _ = _saved(client)
    response = client.request(method, f"Composition/{comp_id}/{path}", body)
    assert response.status_code == status, response.data
    assert json_of(response)["resourceType"] == "OperationOutcome"
    assert client.get("Composition/$document").status_code == 400
    assert client.get("Composition/nope/$document").status_code == 404


# -- Patient/$vsm-status ---------------------------------------------------------------------------------------------
def test_the_medecin_traitant_lists_patients_whose_vsm_is_missing_or_old(client):
    none, _ = _dmp(client)
    fresh, _ = _dmp(client)
    old, _ = _dmp(client)
    closed, _ = _dmp(client)
    elsewhere = json_of(client.post("Patient", patient(_ins())))["id"]  # another médecin traitant (none)
    client.as_(**DOCTOR).post("Composition", vsm(fresh))
    aged = document(old, type={"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
                    date="2020-01-15T10:00:00+01:00")
    assert client.post("DocumentReference", aged).status_code == 201
    closing = json_of(client.get(f"Patient/{closed}"))
    assert client.put(f"Patient/{closed}", {**closing, "active": False}).status_code == 200
    treating = client.as_(**TREATING)

    def listed(age: str) -> dict[str, str | None]:
        response = treating.get(f"Patient/$vsm-status?older-than={age}")
        assert response.status_code == 200, response.data
        out = {}
        for p in json_of(response)["parameter"]:
            if p["name"] == "patient":
                parts = {part["name"]: part for part in p["part"]}
                out[parts["patient"]["resource"]["id"]] = parts.get("lastVsmDate", {}).get("valueDateTime")
        return out

    assert listed("6mo") == {none: None, old: "2020-01-15T09:00:00.000Z"}
    assert listed("10a") == {none: None}
    assert listed("0d").keys() == {none, fresh, old}
    assert elsewhere not in listed("1wk") and closed not in listed("1d")
    assert listed("1wk").keys() == {none, old}


@pytest.mark.parametrize("age", ["", "6", "mo", "6 months", "-1mo", "6MO", "1.5a", "99999a"])
def test_vsm_status_refuses_a_bad_age(client, age):
    response = client.as_(**TREATING).get(f"Patient/$vsm-status?older-than={age}")
    assert response.status_code == 400 and json_of(response)["resourceType"] == "OperationOutcome"
    assert client.as_(**TREATING).get("Patient/$vsm-status").status_code == 400


@pytest.mark.parametrize(("claims", "status"), [
    (TREATING, 200),
    (OTHER_DOCTOR, 200),  # a médecin who is nobody's médecin traitant: an empty list
    (NURSE, 403), (KINE, 403), (PHARMACIST, 403), (MIDWIFE, 403),
    ({"actor": "patient", "sub": "1800175000000", "patient": "1800175000000"}, 403),
    ({"actor": "representative", "sub": "y", "patient": "1800175000000"}, 403),
    ({"actor": "system", "sub": "s"}, 403),
], ids=["médecin traitant", "other médecin", "infirmier", "kinésithérapeute", "pharmacien", "sage-femme",
        "patient", "representative", "system"])
def test_vsm_status_is_the_medecin_traitants_own_list(client, claims, status):
    pid, _ = _dmp(client)
    response = client.as_(**claims).get("Patient/$vsm-status?older-than=6mo")
    assert response.status_code == status, response.data
    if status == 200:
        ids = [part["resource"]["id"] for p in json_of(response)["parameter"] if p["name"] == "patient"
               for part in p["part"] if part["name"] == "patient"]
        assert ids == ([pid] if claims is TREATING else [])
    assert client.as_(**claims).post("Patient/$vsm-status?older-than=6mo").status_code in (403, 405)
    assert client.as_(**claims).get(f"Patient/{pid}/$vsm-status?older-than=6mo").status_code in (400, 403)


def test_observation_entries_search_by_quantity(client):
    pid, _ = _dmp(client)
    doctor = client.as_(**DOCTOR)
    ucum = "http://unitsofmeasure.org"
    for value in (5.2, 7.9):
        body = {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "valueQuantity": {"value": value, "unit": "%", "system": ucum, "code": "%"}}
        assert doctor.post("Observation", body).status_code == 201
    found = json_of(doctor.get(f"Observation?patient={pid}&value-quantity=gt6|{ucum}|%"))
    assert [str(e["resource"]["valueQuantity"]["value"]) for e in found["entry"]] == ["7.9"]
    assert client.as_(**KINE).get(f"Observation?patient={pid}").status_code == 200
    assert json_of(client.as_(**KINE).get(f"Observation?patient={pid}"))["total"] == 0


def test_a_vsm_dated_by_day_files_an_instant(client):
    pid, _ = _dmp(client)
    response = client.as_(**DOCTOR).post("Composition", vsm(pid, date="2026-03-02"))
    assert response.status_code == 201, response.data
    doc = _vsm_documents(client, pid)[0]
    assert doc["date"] == json_of(response)["meta"]["lastUpdated"]
    assert doc["context"]["period"]["start"] == "2026-03-02"
