"""Every write of a profiled type conforms to its DMP profile and to the document rules no profile expresses
(services/validating.py, validation/documents.py): one 422 lists every error with its FHIRPath expression,
nothing is written; warnings never refuse a write. On both stores, through the HTTP API."""

from __future__ import annotations

import base64
import uuid

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.policy import consents
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR, FhirTestClient, attachment, document, json_of, linked, patient, written

LOINC = "http://loinc.org"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
DMP_DOC = "https://fhir-dmp.example.org/StructureDefinition/dmp-documentreference"


def _ins() -> str:
    return "1" + str(uuid.uuid4().int)[:12]


def _pid(client: FhirTestClient) -> str:
    response = client.post("Patient", patient(_ins()))
    assert response.status_code == 201, response.data
    return json_of(response)["id"]


def _refused(response, status: int = 422) -> list[tuple[str, tuple[str, ...]]]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.data
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome"
    assert all(i["severity"] == "error" and i["diagnostics"] for i in body["issue"])
    return [(i["code"], tuple(i.get("expression", ()))) for i in body["issue"]]


def test_a_bare_document_is_refused_with_every_issue_at_once(client):
    pid = _pid(client)
    before = written(client)
    bare = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{pid}"},
            "type": {"coding": [{"system": LOINC, "code": "11488-4"}]},
            "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}]}
    found = {e[0] for _, e in _refused(client.post("DocumentReference", bare))}
    assert found == {"DocumentReference", "DocumentReference.masterIdentifier", "DocumentReference.identifier",
                     "DocumentReference.category", "DocumentReference.date", "DocumentReference.author",
                     "DocumentReference.custodian", "DocumentReference.securityLabel",
                     "DocumentReference.content[0].attachment.size", "DocumentReference.content[0].attachment.hash",
                     "DocumentReference.content[0].attachment.title", "DocumentReference.context"}
    assert written(client) == before
    assert client.post("DocumentReference", document(pid)).status_code == 201


@pytest.mark.parametrize("change, expected", [
    ({"category": [{"coding": [{"system": TRE_A03, "code": "11"}]}]},
     [("business-rule", ("DocumentReference.category",))]),  # 11488-4 is of class 10 (ASS_X16)
    ({"type": {"coding": [{"system": LOINC, "code": "1-8"}]}, "category": [{"coding": [{"system": TRE_A03,
                                                                                       "code": "10"}]}]},
     [("code-invalid", ("DocumentReference.type",))]),  # no DMP type: no class
    ({"content": [{"attachment": {**attachment(b"abc"), "size": 4}}]},
     [("business-rule", ("DocumentReference.content[0].attachment.size",))]),
    ({"content": [{"attachment": {**attachment(b"abc"), "hash": base64.b64encode(b"x" * 20).decode()}}]},
     [("business-rule", ("DocumentReference.content[0].attachment.hash",))]),
    ({"content": [{"attachment": {**attachment(b"abc"), "hash": "not-a-sha1"}}]},
     [("invariant", ("DocumentReference.content[0].attachment",)),
      ("business-rule", ("DocumentReference.content[0].attachment.hash",))]),
    ({"category": [{"coding": [{"system": TRE_A03, "code": "nope"}]}]},
     [("code-invalid", ("DocumentReference.category[0].coding[0].code",)),  # not a code of the shipped TRE_A03
      ("code-invalid", ("DocumentReference.category[0]",)),  # required binding JDV_J57
      ("business-rule", ("DocumentReference.category",))]),
    ({"docStatus": "final"}, [("structure", ("DocumentReference.docStatus",))]),
    ({"securityLabel": [{"coding": [{"system": TRE_A03, "code": "10"}]}]},
     [("invariant", ("DocumentReference",))]),  # dmp-doc-1: no confidentiality level
])
def test_each_document_rule_refuses_a_create_and_an_update(client, change, expected):
    pid = _pid(client)
    before = written(client)
    assert _refused(client.post("DocumentReference", {**document(pid), **change})) == expected
    assert written(client) == before
    doc = json_of(client.post("DocumentReference", document(pid)))
    assert _refused(client.put(f"DocumentReference/{doc['id']}", {**doc, **change})) == expected
    assert json_of(client.get(f"DocumentReference/{doc['id']}"))["meta"]["versionId"] == "1"


def test_the_hash_is_checked_against_the_binary_the_url_names(client):
    pid = _pid(client)
    text = b"Resultats de biologie"
    binary = json_of(client.post("Binary", {"resourceType": "Binary", "contentType": "text/plain",
                                            "data": base64.b64encode(text).decode()}))
    url = f"Binary/{binary['id']}"
    wrong = document(pid, content=[{"attachment": linked(b"something else", url)}])
    assert _refused(client.post("DocumentReference", wrong)) == [
        ("business-rule", ("DocumentReference.content[0].attachment.size",)),
        ("business-rule", ("DocumentReference.content[0].attachment.hash",))]
    assert client.post("DocumentReference", document(pid, content=[{"attachment": linked(text, url)}])
                       ).status_code == 201
    absolute = f"http://localhost/fhir/{url}"
    assert _refused(client.post("DocumentReference", document(pid, content=[{"attachment": linked(b"x", absolute)}])))
    # bytes kept elsewhere cannot be checked: the declared size and hash are taken as they are
    elsewhere = document(pid, content=[{"attachment": linked(b"x", "https://elsewhere.example/doc.pdf")}])
    assert client.post("DocumentReference", elsewhere).status_code == 201


def test_a_transaction_reports_every_entry_and_writes_nothing(client):
    pid = _pid(client)
    before = written(client)
    bin_url, doc_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    text = b"Compte rendu operatoire"
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(text).decode()}
    bad_hash = document(pid, content=[{"attachment": linked(b"another text", bin_url)}])
    no_author = {k: v for k, v in document(pid).items() if k != "author"}
    bad_consent = {k: v for k, v in consents.authorisation(pid, "810000000199").items() if k != "policyRule"}
    entries = [{"fullUrl": bin_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
               {"fullUrl": doc_url, "resource": bad_hash, "request": {"method": "POST", "url": "DocumentReference"}},
               {"resource": no_author, "request": {"method": "POST", "url": "DocumentReference"}},
               {"resource": bad_consent, "request": {"method": "POST", "url": "Consent"}}]
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert _refused(response) == [
        ("business-rule", ("Bundle.entry[1].resource.content[0].attachment.size",)),
        ("business-rule", ("Bundle.entry[1].resource.content[0].attachment.hash",)),
        ("required", ("Bundle.entry[2].resource.author",)),
        ("invariant", ("Bundle.entry[3].resource",))]  # R4 ppc-1: a policy or a policyRule
    assert written(client) == before
    entries[1]["resource"] = document(pid, content=[{"attachment": linked(text, bin_url)}])
    entries[2]["resource"] = document(pid)
    entries[3]["resource"] = consents.authorisation(pid, "810000000199")
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.data
    doc = json_of(response)["entry"][1]["resource"]
    assert doc["content"][0]["attachment"]["url"] == f"Binary/{json_of(response)['entry'][0]['resource']['id']}"


def test_an_iti65_bundle_is_checked_against_its_profile(client):
    pid = _pid(client)
    doc_url = f"urn:uuid:{uuid.uuid4()}"
    submission = {"resourceType": "List", "status": "current", "mode": "working",
                  "code": {"coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                                       "code": "submissionset"}]},
                  "subject": {"reference": f"Patient/{pid}"}}
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": submission,
                "request": {"method": "POST", "url": "List"}},
               {"fullUrl": doc_url, "resource": document(pid),
                "request": {"method": "POST", "url": "DocumentReference"}}]
    before = written(client)
    found = _refused(client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    where = {e for _, expressions in found for e in expressions}
    # the SubmissionSet's own profile (date, source, extensions, entries) and the ITI-65 rule that it lists
    # every DocumentReference
    assert {"Bundle.entry[0].resource.date", "Bundle.entry[0].resource.source", "Bundle"} <= where, found
    assert written(client) == before


def test_other_profiled_types(client):
    pid = _pid(client)
    before = written(client)
    assert _refused(client.post("Patient", {k: v for k, v in patient(_ins()).items() if k != "birthDate"})) == [
        ("required", ("Patient.birthDate",))]
    assert ("invariant", ("Patient",)) in _refused(client.post("Patient", patient(_ins(), identifier=[
        {"system": "http://example.org/mrn", "value": "1"}])))  # dmp-pat-1: no INS
    consent = consents.authorisation(pid, "810000000199")
    other_category = [{"coding": [{"system": LOINC, "code": "64292-6"}]}]
    refusal = _refused(client.post("Consent", {**consent, "category": other_category}))
    assert ("required", ("Consent.category",)) in refusal
    note = {"resourceType": "Composition", "status": "final",
            "type": {"coding": [{"system": LOINC, "code": "11488-4"}]}, "subject": {"reference": f"Patient/{pid}"},
            "date": "2026-11-20", "title": "Note", "author": [{"reference": "Practitioner/x"}]}
    assert ("value", ("Composition.type",)) in _refused(client.post("Composition", note))  # only the VSM here
    assert written(client) == before


def test_a_patch_leaving_a_broken_resource_is_refused(client):
    pid = _pid(client)  # (a DocumentReference's PATCH may touch its metadata only: tests/mhd/test_metadata.py)
    ops = [{"op": "remove", "path": "/birthDate"}]
    assert _refused(client.patch(f"Patient/{pid}", ops, content_type="application/json-patch+json")
                    ) == [("required", ("Patient.birthDate",))]
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"


def test_a_claimed_profile_is_checked_too_and_unknown_ones_are_not(client):
    pid = _pid(client)
    claims_patient = {**patient(_ins()), "meta": {"profile": ["https://fhir-dmp.example.org/StructureDefinition/"
                                                              "dmp-patient", "https://profiles.other.fr/other"]}}
    assert client.post("Patient", claims_patient).status_code == 201
    org = {"resourceType": "Organization", "name": "Clinique",
           "meta": {"profile": ["https://fhir-dmp.example.org/StructureDefinition/dmp-patient"]}}
    assert client.post("Organization", org).status_code == 201  # a profile of another type says nothing here
    assert client.post("DocumentReference", {**document(pid), "meta": {"profile": [DMP_DOC]}}).status_code == 201


def test_warnings_do_not_refuse_a_write(client):
    pid = _pid(client)
    hl7 = document(pid, securityLabel=[{"coding": [{"system": V3_CONFIDENTIALITY, "code": "R"}]}])
    response = client.post("DocumentReference", hl7)  # JDV_J58 is extensible: HL7's own code is a warning
    assert response.status_code == 201, response.data
    check = json_of(client.post("DocumentReference/$validate", hl7))
    assert [(i["severity"], i["expression"]) for i in check["issue"]] == [
        ("warning", ["DocumentReference.securityLabel[0]"])]


def test_the_setting_turns_enforcement_off(database):
    app = create_app(Settings(database_url=database.url, jwt_secret=SECRET, enforce_profiles=False), database=database)
    client = FhirTestClient(app.test_client(), SECRET)
    pid = _pid(client)
    bare = {"resourceType": "DocumentReference", "status": "current", "subject": {"reference": f"Patient/{pid}"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}]}
    assert client.post("DocumentReference", bare).status_code == 201
    assert Settings.from_env().enforce_profiles is True


def test_a_transaction_checks_an_attachment_against_a_stored_binary(client):
    """An entry naming a Binary already stored is judged in the unit of work (the Bundle alone cannot tell), the
    others before it: one 422 all the same, its issues in the entries' order."""
    pid = _pid(client)
    text = b"Resultats de biologie"
    binary = json_of(client.post("Binary", {"resourceType": "Binary", "contentType": "text/plain",
                                            "data": base64.b64encode(text).decode()}))
    stored = f"Binary/{binary['id']}"
    no_author = {k: v for k, v in document(pid).items() if k != "author"}
    entries = [{"resource": document(pid, content=[{"attachment": linked(b"something else", stored)}]),
                "request": {"method": "POST", "url": "DocumentReference"}},
               {"resource": no_author, "request": {"method": "POST", "url": "DocumentReference"}},
               {"resource": document(pid, content=[{"attachment": linked(b"x", "Binary/does-not-exist")}]),
                "request": {"method": "POST", "url": "DocumentReference"}}]
    before = written(client)
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert _refused(response) == [
        ("business-rule", ("Bundle.entry[0].resource.content[0].attachment.size",)),
        ("business-rule", ("Bundle.entry[0].resource.content[0].attachment.hash",)),
        ("required", ("Bundle.entry[1].resource.author",)),
        ("not-found", ("Bundle.entry[2].resource.content[0].attachment.url",))]
    assert written(client) == before
    entries = [{"resource": document(pid, content=[{"attachment": linked(text, stored)}]),
                "request": {"method": "POST", "url": "DocumentReference"}}]
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.data


def test_a_binary_the_caller_may_not_read_is_no_oracle(client):
    """Linking a document to another DMP's Binary tells nothing of it: the answer is that of a missing one."""
    other, mine = _pid(client), _pid(client)
    secret = b"Compte rendu d'un autre patient"
    doc = json_of(client.post("DocumentReference", document(other, text=secret)))
    binary = json_of(client.post("Binary", {"resourceType": "Binary", "contentType": "text/plain",
                                            "data": base64.b64encode(secret).decode(),
                                            "securityContext": {"reference": f"DocumentReference/{doc['id']}"}}))
    doctor = client.as_(**DOCTOR)  # feeds `mine` (no authorisation needed to feed), never authorised on `other`
    answers = []
    for url in (f"Binary/{binary['id']}", "Binary/does-not-exist"):
        response = doctor.post("DocumentReference", document(mine, content=[{"attachment": linked(b"guess", url)}]))
        assert _refused(response) == [("not-found", ("DocumentReference.content[0].attachment.url",))]
        answers.append(json_of(response)["issue"][0]["diagnostics"].replace(binary["id"], "does-not-exist"))
    assert answers[0] == answers[1]
    # the system may read it, so its link is checked against the bytes
    assert client.post("DocumentReference", document(mine, content=[{"attachment": linked(
        secret, f"Binary/{binary['id']}")}])).status_code == 201


def test_structure_and_profile_errors_come_in_one_round(client):
    """An R4 structure error (unknown element, wrong type) and the DMP profile's errors of the same body: one
    422 listing all of them, each with its expression, on create, update, patch and in a transaction."""
    pid = _pid(client)
    before = written(client)
    body = {k: v for k, v in document(pid).items() if k != "author"}
    body["unknownElement"] = 1
    body["date"] = "07/12/2026"
    expected = {("structure", ("DocumentReference.unknownElement",)), ("value", ("DocumentReference.date",)),
                ("required", ("DocumentReference.author",))}
    assert expected <= set(_refused(client.post("DocumentReference", body)))
    doc = json_of(client.post("DocumentReference", document(pid)))
    assert expected <= set(_refused(client.put(f"DocumentReference/{doc['id']}", {**body, "id": doc["id"]})))
    entries = [{"resource": body, "request": {"method": "POST", "url": "DocumentReference"}}]
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    located = {(c, tuple(e.replace("Bundle.entry[0].resource", "DocumentReference") for e in x))
               for c, x in _refused(response)}
    assert expected <= located
    assert written(client) == before + 1  # the one good create
    # a body that is no resource at all is the only 400
    _refused(client.post("DocumentReference", [body]), 400)
