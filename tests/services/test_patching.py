"""Every patch format R4 names (services/patching.py, services/fhirpath_patch.py): JSON Patch, FHIRPath Patch
(each operation type) and JSON merge patch (as application/merge-patch+json, and a partial resource sent as
application/json the way fhirpy's patch() does), all through the rules of an update: the DMP profile, what a
caller may change (a DocumentReference's metadata only), a new version."""

from __future__ import annotations

import pytest

from fhir_dmp.http.fhirxml import json_to_xml
from tests.fhirclient import document, json_of, patient
from tests.http.helpers import history_total, new_patient, outcome

FHIR_JSON = "application/fhir+json"
EMAIL = {"system": "email", "value": "claire.martin@example.fr"}


def _op(kind: str, path: str, **parts: object) -> dict:
    out: list[dict] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value" and isinstance(value, dict) and "parts" in value:
            out.append({"name": "value", "part": value["parts"]})
        elif name == "value":
            key = next(iter(value)) if isinstance(value, dict) else "valueString"
            out.append({"name": "value", key: value[key] if isinstance(value, dict) else value})
        else:
            out.append({"name": name, ("valueInteger" if isinstance(value, int) else "valueString"): value})
    return {"name": "operation", "part": out}


def _fhirpath_patch(*operations: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(operations)}


def _patched(client, pid: str, body: object, content_type: str = FHIR_JSON) -> dict:  # type: ignore[no-untyped-def]
    response = client.patch(f"Patient/{pid}", body, content_type=content_type)
    assert response.status_code == 200, response.data
    return json_of(response)


@pytest.mark.parametrize("operation, check", [
    (_op("add", "Patient", name="telecom", value={"valueContactPoint": {"system": "phone", "value": "0102030405"}}),
     lambda p: p["telecom"] == [EMAIL, {"system": "phone", "value": "0102030405"}]),
    (_op("add", "Patient.name[0]", name="given", value={"valueString": "Marie"}),
     lambda p: p["name"][0]["given"] == ["Claire", "Marie"]),
    (_op("add", "Patient", name="contact", value={"parts": [
        {"name": "name", "valueHumanName": {"family": "MARTIN"}}, {"name": "gender", "valueCode": "male"}]}),
     lambda p: p["contact"] == [{"name": {"family": "MARTIN"}, "gender": "male"}]),
    (_op("insert", "Patient.name[0].given", value={"valueString": "Anne"}, index=0),
     lambda p: p["name"][0]["given"] == ["Anne", "Claire"]),
    (_op("delete", "Patient.telecom[0]"), lambda p: "telecom" not in p),  # its last item: the element goes
    (_op("delete", "Patient.address"), lambda p: "address" not in p),  # matches nothing: no change
    (_op("replace", "Patient.gender", value={"valueCode": "male"}), lambda p: p["gender"] == "male"),
    (_op("replace", "Patient.identifier.where(system = 'urn:oid:1.2.250.1.213.1.4.10').value",
         value={"valueString": "2800175123456"}),
     lambda p: p["identifier"][0]["value"] == "2800175123456"),
])
def test_a_fhirpath_patch_of_each_operation_type(client, operation, check):
    pid = new_patient(client, telecom=[EMAIL])
    body = _patched(client, pid, _fhirpath_patch(operation))
    assert check(body) and body["meta"]["versionId"] == "2"
    assert json_of(client.get(f"Patient/{pid}")) == body


def test_a_fhirpath_patch_moves_and_chains_operations(client):
    pid = new_patient(client)
    body = _patched(client, pid, _fhirpath_patch(
        _op("add", "Patient.name[0]", name="given", value={"valueString": "Marie"}),
        _op("add", "Patient.name[0]", name="given", value={"valueString": "Anne"}),
        _op("move", "Patient.name[0].given", source=2, destination=0)))
    assert body["name"][0]["given"] == ["Anne", "Claire", "Marie"] and body["meta"]["versionId"] == "2"


@pytest.mark.parametrize("operation, status", [
    (_op("replace", "Patient.gender", value={"valueCode": "robot"}), 422),  # R4 structure: required binding
    (_op("delete", "Patient.birthDate"), 422),  # the DMP profile requires it
    (_op("add", "Patient", name="nothing", value={"valueString": "x"}), 422),  # no such R4 element
    (_op("add", "Patient", name="gender", value={"valueCode": "male"}), 422),  # has a value: replace it
    (_op("replace", "Patient.name.given", value={"valueString": "x"}), 200),  # one given: one match
    (_op("insert", "Patient.name[0].given", value={"valueString": "x"}, index=5), 422),
    (_op("move", "Patient.name[0].given", source=0, destination=3), 422),
    (_op("replace", "Patient.id", value={"valueId": "other"}), 422),
    ({"name": "operation", "part": [{"name": "type", "valueCode": "frobnicate"}]}, 400),
    ({"name": "operation", "part": [{"name": "type", "valueCode": "replace"}]}, 400),  # no path, no value
    ({"name": "not-an-operation"}, 400),
])
def test_a_fhirpath_patch_that_cannot_apply_writes_nothing(client, operation, status):
    pid = new_patient(client)
    response = client.patch(f"Patient/{pid}", _fhirpath_patch(operation), content_type=FHIR_JSON)
    if status == 200:
        assert response.status_code == 200, response.data
        return
    outcome(response, status)
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"
    assert history_total(client) == 1


def test_a_fhirpath_patch_r4_refuses_is_one_400_listing_every_structure_issue(client):
    """The Parameters itself is checked first (an unknown key, a repeated value, the shapes an XML patch carries
    as JSON would): one 400 listing each problem with its expression, nothing written."""
    pid = new_patient(client)
    operation = _op("replace", "Patient.gender", value={"valueCode": "male"})
    operation["part"][0]["_valueCode"] = {"bogus": "1"}
    operation["part"][1]["valueString"] = ["Patient.gender", "Patient.birthDate"]
    found = outcome(client.patch(f"Patient/{pid}", _fhirpath_patch(operation), content_type=FHIR_JSON), 400)
    expressions = {e for i in found["issue"] for e in i.get("expression", ())}
    assert {"Parameters.parameter[0].part[0].valueCode.bogus", "Parameters.parameter[0].part[1].valueString"} <= (
        expressions), found
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"


@pytest.mark.parametrize("content_type", ["application/merge-patch+json", "application/json", FHIR_JSON])
def test_a_merge_patch_changes_what_it_names_and_null_removes(client, content_type):
    pid = new_patient(client)
    body = _patched(client, pid, {"gender": "male", "telecom": [{"system": "phone", "value": "0102030405"}]},
                    content_type)
    assert body["gender"] == "male" and body["telecom"][0]["value"] == "0102030405"
    assert body["name"] == patient()["name"] and body["meta"]["versionId"] == "2"
    body = _patched(client, pid, {"resourceType": "Patient", "telecom": None}, content_type)
    assert "telecom" not in body and body["meta"]["versionId"] == "3"


@pytest.mark.parametrize("body, status", [
    ({"birthDate": None}, 422),  # the DMP profile requires it
    ({"gender": "robot"}, 422),
    ({"id": "another"}, 422),
    ({"resourceType": "Observation"}, 400),
    ({"unknownElement": 1, "birthDate": None}, 422),  # one round: the structure and the profile issue together
])
def test_a_merge_patch_goes_through_the_write_rules(client, body, status):
    pid = new_patient(client)
    response = client.patch(f"Patient/{pid}", body, content_type="application/merge-patch+json")
    found = outcome(response, status)
    if "unknownElement" in body:
        expressions = {e for i in found["issue"] for e in i.get("expression", ())}
        assert {"Patient.unknownElement", "Patient.birthDate"} <= expressions
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"


def test_a_documents_metadata_only_changes_whatever_the_patch_format(client):
    pid = new_patient(client)
    doc = json_of(client.post("DocumentReference", document(pid)))
    path = f"DocumentReference/{doc['id']}"
    response = client.patch(path, {"description": "changed"}, content_type="application/merge-patch+json")
    outcome(response, 422)
    response = client.patch(path, _fhirpath_patch(_op("replace", "DocumentReference.description",
                                                      value={"valueString": "changed"})), content_type=FHIR_JSON)
    outcome(response, 422)
    response = client.patch(path, {"status": "entered-in-error"}, content_type="application/merge-patch+json")
    assert response.status_code == 200, response.data
    response = client.patch(path, _fhirpath_patch(_op("replace", "DocumentReference.status",
                                                      value={"valueCode": "current"})), content_type=FHIR_JSON)
    assert response.status_code == 200 and json_of(response)["meta"]["versionId"] == "3", response.data


def test_a_fhirpath_patch_in_a_transaction(client):
    pid = new_patient(client)
    entry = {"resource": _fhirpath_patch(_op("replace", "Patient.gender", value={"valueCode": "male"})),
             "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
    response = client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
    assert response.status_code == 200, response.data
    assert json_of(client.get(f"Patient/{pid}"))["gender"] == "male"


def test_a_fhirpath_patch_in_xml(client):
    pid = new_patient(client)
    body = json_to_xml(_fhirpath_patch(_op("replace", "Patient.gender", value={"valueCode": "male"})))
    response = client.patch(f"Patient/{pid}", raw=body, content_type="application/fhir+xml")
    assert response.status_code == 200, response.data
    assert json_of(client.get(f"Patient/{pid}"))["gender"] == "male"


@pytest.mark.parametrize("ops, status, says, expression", [
    ([{"op": "replace", "path": "/nope/0", "value": 1}], 422,
     "JSON Patch operation 1 (replace /nope/0): member 'nope' not found", "Patient.nope[0]"),
    ([{"op": "add", "path": "/gender", "value": "male"}, {"op": "test", "path": "/gender", "value": "female"}], 422,
     "JSON Patch operation 2 (test /gender): the value there is not the tested value", "Patient.gender"),
    ([{"op": "remove", "path": "/telecom"}], 422, "JSON Patch operation 1 (remove /telecom)", "Patient.telecom"),
    ([{"op": "add", "path": "/gender/x", "value": 1}], 422,
     "JSON Patch operation 1 (add /gender/x): ", "Patient.gender.x"),
    ([{"op": "frob", "path": "/gender"}], 400, "Invalid JSON Patch document: Unknown operation 'frob'", None),
    ([{"op": "add", "path": "gender", "value": "male"}], 400, "Invalid JSON Patch document", None),
])
def test_a_json_patch_that_cannot_apply_names_its_operation_not_the_resource(client, ops, status, says, expression):
    """A refusal names the operation and its path (and the FHIRPath of it), never quotes the resource or the value
    found there, as the JSON Patch library's own messages do; nothing is written."""
    pid = new_patient(client)
    found = outcome(client.patch(f"Patient/{pid}", ops, content_type="application/json-patch+json"), status)
    issue = found["issue"][0]
    assert issue["diagnostics"].startswith(says), issue
    assert "MARTIN" not in issue["diagnostics"] and "female" not in issue["diagnostics"], issue
    assert issue.get("expression") == ([expression] if expression else None), issue
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"


def test_a_fhirpath_patch_refusal_has_the_operations_path_as_expression(client):
    """R4: every issue with its expression; a FHIRPath Patch refusal's is the operation's path."""
    pid = new_patient(client, telecom=[EMAIL, {"system": "phone", "value": "0102030405"}])
    response = client.patch(f"Patient/{pid}", _fhirpath_patch(_op("delete", "Patient.telecom")), content_type=FHIR_JSON)
    issue = outcome(response, 422)["issue"][0]
    assert issue["diagnostics"].startswith("FHIRPath Patch operation 1 (delete Patient.telecom): "), issue
    assert issue["expression"] == ["Patient.telecom"], issue
