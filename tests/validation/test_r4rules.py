"""The R4 rules the structural walk leaves out (validation/r4rules.py), one by one: each breach is reported with
its expression, and the resource next to it that keeps the rule is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_dmp.terminology.store import load
from fhir_dmp.validation.r4rules import r4_issues

CONF = load(Path(__file__).resolve().parents[2])
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
MOTHERS = "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family"
BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
NATIONALITY = "http://hl7.org/fhir/StructureDefinition/patient-nationality"
DIV = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'


def _found(resource: dict) -> list[tuple[str, str]]:
    return [(i.code, i.expression[0]) for i in r4_issues(CONF, resource)]


def _patient(**extra: object) -> dict:
    return {"resourceType": "Patient", "name": [{"family": "MARTIN"}], **extra}


@pytest.mark.parametrize("bad, good, expected", [
    # primitive formats (R4 regexes)
    (_patient(id="x" * 65), _patient(id="x" * 64), [("value", "Patient.id")]),
    (_patient(id="a b"), _patient(id="a.b-c"), [("value", "Patient.id")]),
    (_patient(gender="  "), _patient(gender="female"), [("value", "Patient.gender")]),
    (_patient(name=[{"family": ""}]), _patient(), [("value", "Patient.name[0].family")]),
    # ele-1 and ext-1
    (_patient(maritalStatus={"id": "m"}), _patient(maritalStatus={"text": "married"}),
     [("invariant", "Patient.maritalStatus")]),
    (_patient(_birthDate={"id": "b"}), _patient(birthDate="1980", _birthDate={"id": "b"}),
     [("invariant", "Patient.birthDate")]),
    (_patient(extension=[{"url": BIRTH_PLACE, "valueAddress": {"city": "Lyon"},
                          "extension": [{"url": "x", "valueString": "y"}]}]),
     _patient(extension=[{"url": BIRTH_PLACE, "valueAddress": {"city": "Lyon"}}]),
     [("invariant", "Patient.extension[0]")]),
    # extensions: known, in context, of the right type, with their own sub-extensions
    (_patient(extension=[{"url": "http://unknown.fr/ext", "valueString": "x"}]),
     _patient(extension=[{"url": "https://interop.esante.gouv.fr/ig/fhir/x/ext", "valueString": "x"}]),
     [("structure", "Patient.extension[0]")]),
    (_patient(name=[{"family": "MARTIN", "extension": [{"url": MOTHERS, "valueString": "DURAND"}]}]),
     _patient(name=[{"family": "MARTIN", "_family": {"extension": [{"url": MOTHERS, "valueString": "DURAND"}]}}]),
     [("structure", "Patient.name[0].extension[0]")]),
    (_patient(extension=[{"url": BIRTH_PLACE, "valueString": "Lyon"}]),
     _patient(extension=[{"url": BIRTH_PLACE, "valueAddress": {"city": "Lyon"}}]),
     [("structure", "Patient.extension[0].valueString")]),
    (_patient(extension=[{"url": NATIONALITY, "valueString": "FR"}]),
     _patient(extension=[{"url": NATIONALITY, "extension": [{"url": "code", "valueCodeableConcept": {"text": "FR"}}]}]),
     [("structure", "Patient.extension[0].valueString")]),
    (_patient(extension=[{"url": NATIONALITY, "extension": [{"url": "nope", "valueString": "FR"}]}]),
     _patient(extension=[{"url": NATIONALITY, "extension": [{"url": "period", "valuePeriod": {"start": "2001"}}]}]),
     [("structure", "Patient.extension[0].extension[0]")]),
    # example urls, where a url is followed
    (_patient(photo=[{"url": "http://images.example.org/a.png"}]), _patient(photo=[{"url": "https://img.fr/a.png"}]),
     [("invalid", "Patient.photo[0].url")]),
    (_patient(extension=[{"url": "http://example.org/ext", "valueString": "x"}]), _patient(),
     [("invalid", "Patient.extension[0].url"), ("structure", "Patient.extension[0]")]),
    # narrative, markdown, strings
    (_patient(text={"status": "generated", "div": DIV.format("<script>alert(1)</script>")}),
     _patient(text={"status": "generated", "div": DIV.format("<p><b>MARTIN</b>&nbsp;Claire &amp; Co</p>")}),
     [("invariant", "Patient.text.div")]),
    (_patient(text={"status": "generated", "div": DIV.format('<p onclick="x()">a</p>')}),
     _patient(text={"status": "generated", "div": DIV.format('<p class="x">a</p>')}),
     [("invariant", "Patient.text.div")]),
    (_patient(text={"status": "generated", "div": DIV.format("  ")}),
     _patient(text={"status": "generated", "div": DIV.format("a")}), [("invariant", "Patient.text.div")]),
    (_patient(name=[{"family": "MARTIN", "text": "<img src=x onerror=alert(1)>"}]),
     _patient(name=[{"family": "MARTIN", "text": "MARTIN <5 ans>"}]), [("invalid", "Patient.name[0].text")]),
    # the codes and displays of a shipped code system; the syntax of SNOMED CT and LOINC codes
    (_patient(meta={"security": [{"system": V3, "code": "NOPE"}]}),
     _patient(meta={"security": [{"system": V3, "code": "N"}]}), [("code-invalid", "Patient.meta.security[0].code")]),
    (_patient(meta={"security": [{"system": V3, "code": "N", "display": "very restricted"}]}),
     _patient(meta={"security": [{"system": V3, "code": "N", "display": "Normal"}]}),
     [("invalid", "Patient.meta.security[0].display")]),
    (_patient(maritalStatus={"coding": [{"system": "http://snomed.info/sct", "code": "276885008"}]}),
     _patient(maritalStatus={"coding": [{"system": "http://snomed.info/sct", "code": "276885007"}]}),
     [("code-invalid", "Patient.maritalStatus.coding[0].code")]),
])
def test_each_rule(bad, good, expected):
    assert _found(bad) == expected
    assert _found(good) == []


def _obs(codes: list[tuple[str, str]], category: str = "vital-signs") -> dict:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": {"coding": [{"system": s, "code": c} for s, c in codes]}}


def test_a_vital_sign_carries_its_magic_loinc_code():
    temperature = ("http://snomed.info/sct", "276885007")
    assert _found(_obs([temperature])) == [("structure", "Observation.code")]
    assert _found(_obs([("http://loinc.org", "8310-5"), temperature])) == []
    assert _found(_obs([temperature], category="laboratory")) == []
    bp = {**_obs([("http://loinc.org", "76534-7")]),
          "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": c}]}}
                        for c in ("8480-6", "8462-4")]}
    assert _found(bp) == [("structure", "Observation.code")]
    weight = {**_obs([("http://loinc.org", "29463-7")], category="laboratory"),
              "valueQuantity": {"value": 70, "system": "http://unitsofmeasure.org", "code": "kilo"}}
    assert _found(weight) == [("structure", "Observation.category"), ("value", "Observation.valueQuantity.code")]


def test_contained_resources_and_bundle_entries_are_walked_too():
    contained = {"resourceType": "Condition", "subject": {"reference": "#p"}, "contained": [_patient(id="x" * 65)]}
    assert _found(contained) == [("value", "Condition.contained[0].id")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _patient(gender="  ")}]}
    assert _found(bundle) == [("value", "Bundle.entry[0].resource.gender")]


def test_example_urls_are_refused_where_followed_only():
    dmp = "https://fhir-dmp.example.org/StructureDefinition/audit-chain"  # a canonical the server ships
    assert _found(_patient(meta={"profile": ["http://example.org/StructureDefinition/other"]})) == []  # a claim
    assert _found(_patient(identifier=[{"system": "http://example.org/mrn", "value": "1"}])) == []  # a namespace
    assert _found(_patient(photo=[{"url": dmp}])) == []
    assert _found(_patient(photo=[{"url": "https://acme.com/a.png"}])) == [("invalid", "Patient.photo[0].url")]


def test_extension_urls_are_absolute_and_required_sub_extensions_present():
    animal = "http://hl7.org/fhir/StructureDefinition/patient-animal"
    assert _found(_patient(extension=[{"url": "weight", "valueString": "x"}])) == [
        ("invalid", "Patient.extension[0]")]
    assert _found(_patient(extension=[{"url": animal, "extension": [
        {"url": "breed", "valueCodeableConcept": {"text": "x"}}]}])) == [("structure", "Patient.extension[0]")]
    assert _found(_patient(extension=[{"url": "http://hl7.org/fhir/3.0/StructureDefinition/extension-Patient.x",
                                       "valueString": "a cross-version extension"}])) == []
