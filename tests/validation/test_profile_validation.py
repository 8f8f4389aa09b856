"""The snapshot-driven profile validator (fhir_dmp/validation/profile.py) and `$validate` over HTTP: the
project's examples conform; one counter-example per rule kind, with the FHIRPath expression it names; the
operation at type and instance level, in the Parameters form, its refusals; random mutations never raise."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from fhir_dmp.terminology.store import load
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure
from tests.fhirclient import DOCTOR, json_of
from tests.policy.test_traces import build_world
from tests.profiles.test_profiles import _iti65, _vsm

REPO = Path(__file__).resolve().parents[2]
BASE = "https://fhir-dmp.example.org/StructureDefinition/"
CONF = load(REPO)


def _example(rtype: str) -> dict:
    bundle = json.loads((REPO / "examples" / "01-dmp-claire-martin.json").read_text(encoding="utf-8"))
    return copy.deepcopy(next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype))


def issues(pid: str, resource: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    report = validate_profile(CONF, CONF.resolve("StructureDefinition", BASE + pid), resource)
    return [(i.code, i.diagnostics, i.expression) for i in report.issues]


def test_the_examples_conform():
    assert issues("dmp-patient", _example("Patient")) == []
    assert issues("dmp-documentreference", _example("DocumentReference")) == []
    # the guide's TD2 labels its document with HL7 v3-Confidentiality N, not JDV_J58's TRE_A08: extensible, a
    # warning, never an error
    report = validate_profile(CONF, CONF.resolve("StructureDefinition", BASE + "dmp-iti65-bundle"), _iti65())
    assert [(i.severity, i.expression) for i in report.issues] == [
        ("warning", ("Bundle.entry[1].resource.securityLabel[0]",))]
    assert issues("dmp-vsm", _vsm()) == []


def test_cardinality():
    doc = _example("DocumentReference")
    del doc["masterIdentifier"]
    doc["docStatus"] = "final"
    found = issues("dmp-documentreference", doc)
    assert ("required", "masterIdentifier: minimum required = 1, but only found 0",
            ("DocumentReference.masterIdentifier",)) in found
    assert [e for c, _, e in found if c == "structure"] == [("DocumentReference.docStatus",)]


def test_fixed_value():
    patient = _example("Patient")
    patient["identifier"] = [{"use": "temp", "system": "urn:oid:1.2.250.1.213.1.4.10", "value": "1"}]
    found = issues("dmp-patient", patient)
    assert any(c == "value" and "fixed" in d and e == ("Patient.identifier[0].use",) for c, d, e in found), found


def test_pattern_value():
    vsm = _vsm()
    vsm["type"]["coding"][0]["code"] = "1-8"
    assert [(c, e) for c, _, e in issues("dmp-vsm", vsm)] == [("value", ("Composition.type",))]


def test_slice_cardinality_and_closed_slicing():
    vsm = _vsm()
    del vsm["section"][1]  # the allergies section, 1..1
    assert issues("dmp-vsm", vsm) == [("required", "slice 'allergies': minimum required = 1, but only found 0",
                                       ("Composition.section",))]
    patient = _example("Patient")
    patient["active"] = False
    patient["extension"] = [{"url": BASE + "dmp-closure", "extension": [
        {"url": "date", "valueDateTime": "2026-12-01"}, {"url": "reason", "valueString": "Demande"},
        {"url": "other", "valueString": "?"}]}]
    found = issues("dmp-patient", patient)
    assert ("structure", "This element matches no slice of a closed slicing",
            ("Patient.extension[0].extension[2]",)) in found, found


def test_required_binding():
    doc = _example("DocumentReference")
    doc["category"][0]["coding"][0]["code"] = "XXX"
    found = issues("dmp-documentreference", doc)
    assert [(c, e) for c, _, e in found] == [("code-invalid", ("DocumentReference.category[0]",))]


def test_invariant():
    doc = _example("DocumentReference")
    doc["content"][0]["attachment"]["hash"] = "bm90IGEgc2hhLTE="
    found = issues("dmp-documentreference", doc)
    assert [(c, e) for c, _, e in found] == [("invariant", ("DocumentReference.content[0].attachment",))]
    assert "dmp-doc-3" in found[0][1]


def test_wrong_type_and_bad_shapes_are_issues():
    assert issues("dmp-patient", _example("DocumentReference"))[0][0] == "invalid"
    report = validate_profile(CONF, CONF.resolve("StructureDefinition", BASE + "dmp-patient"), [1, 2])
    assert report.issues[0].code == "structure"
    patient = _example("Patient")
    patient["identifier"] = "not a list"
    patient["name"] = [3, None, {"given": {"x": 1}}]
    assert issues("dmp-patient", patient)


_JUNK = [None, 0, -1, 1.5, True, "", "x" * 3, [], [None], {}, {"a": []}, [{"resourceType": "Patient"}]]


def _mutate(rng: random.Random, node: object, depth: int = 0) -> object:
    if isinstance(node, dict) and node:
        key = rng.choice(sorted(node))
        roll = rng.random()
        if roll < 0.25:
            del node[key]
        elif roll < 0.5 or depth > 6:
            node[key] = copy.deepcopy(rng.choice(_JUNK))
        else:
            node[key] = _mutate(rng, node[key], depth + 1)
        return node
    if isinstance(node, list) and node:
        i = rng.randrange(len(node))
        node[i] = _mutate(rng, node[i], depth + 1) if rng.random() < 0.7 else copy.deepcopy(rng.choice(_JUNK))
        return node
    return copy.deepcopy(rng.choice(_JUNK))


def test_random_mutations_never_raise():
    rng = random.Random(5)
    seeds = [("dmp-patient", _example("Patient")), ("dmp-documentreference", _example("DocumentReference")),
             ("dmp-iti65-bundle", _iti65()), ("dmp-vsm", _vsm())]
    for _ in range(300):
        pid, seed = rng.choice(seeds)
        resource = copy.deepcopy(seed)
        for _ in range(rng.randint(1, 4)):
            resource = _mutate(rng, resource)
        validate_profile(CONF, CONF.resolve("StructureDefinition", BASE + pid), resource)
        validate_structure(resource) if isinstance(resource, dict) else None


# -- $validate over HTTP -------------------------------------------------------------------------------------
def _issues(response) -> list[dict]:  # type: ignore[no-untyped-def]
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"]


def test_validate_type_level(client):
    ok = client.post("DocumentReference/$validate", _example("DocumentReference"))
    assert ok.status_code == 200, ok.data
    assert [i["severity"] for i in _issues(ok)] == ["information"]
    doc = _example("DocumentReference")
    del doc["masterIdentifier"]
    bad = client.post("DocumentReference/$validate", doc)
    assert bad.status_code == 200
    assert any(i.get("expression") == ["DocumentReference.masterIdentifier"] for i in _issues(bad))
    assert not json_of(client.get("DocumentReference")).get("entry")  # nothing was stored


def test_validate_parameters_form_and_profile(client):
    doc = _example("DocumentReference")
    doc["category"][0]["coding"][0]["code"] = "XXX"
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": doc}, {"name": "mode", "valueCode": "create"},
        {"name": "profile", "valueUri": BASE + "dmp-documentreference"}]}
    response = client.post("DocumentReference/$validate", body)
    assert response.status_code == 200, response.data
    assert [i["expression"] for i in _issues(response) if i["code"] == "code-invalid"] == [
        ["DocumentReference.category[0].coding[0].code"],  # R4: not a code of the shipped TRE_A03
        ["DocumentReference.category[0]"]]  # the profile's required binding
    unknown = client.post("DocumentReference/$validate?profile=https://example.org/nope", _example("DocumentReference"))
    assert unknown.status_code == 404 and _issues(unknown)[0]["code"] == "not-found"
    wrong = client.post(f"DocumentReference/$validate?profile={BASE}dmp-patient", _example("DocumentReference"))
    assert wrong.status_code == 400
    mismatch = client.post("Patient/$validate", _example("DocumentReference"))
    assert mismatch.status_code == 400
    delete = client.post("DocumentReference/$validate?mode=delete", _example("DocumentReference"))
    assert delete.status_code == 400


def test_validate_instance_level_respects_access(client):
    world = build_world(client)
    doctor = client.as_(**DOCTOR)
    seen = doctor.get(f"DocumentReference/{world.doc}/$validate")
    assert seen.status_code == 200, seen.data
    assert [i["severity"] for i in _issues(seen)] == ["information"]  # stored, so it conforms
    empty = {"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "profile"}]}
    assert json_of(doctor.post(f"DocumentReference/{world.doc}/$validate", empty)) == json_of(seen)
    hidden = doctor.get(f"DocumentReference/{world.masked}/$validate")
    assert hidden.status_code == 404
    assert doctor.post(f"DocumentReference/{world.masked}/$validate", empty).status_code == 404
    assert doctor.get("DocumentReference/does-not-exist/$validate").status_code == 404
    assert client.get(f"DocumentReference/{world.masked}/$validate").status_code == 200


@pytest.mark.parametrize("rtype", ["Patient", "Organization"])
def test_validate_types_without_or_with_a_profile(client, rtype):
    response = client.post(f"{rtype}/$validate", _example(rtype))
    assert response.status_code == 200, response.data
    assert [i["severity"] for i in _issues(response)] == ["information"]


def test_the_capability_statement_declares_validate(client):
    resources = {r["type"]: r for r in json_of(client.get("metadata"))["rest"][0]["resource"]}
    assert resources["DocumentReference"]["operation"] == [
        {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}]
    assert resources["DocumentReference"]["supportedProfile"] == [BASE + "dmp-documentreference"]
