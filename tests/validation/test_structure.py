"""validate_structure: official and PDSm examples pass; each kind of R4 error is reported exactly."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_dmp.errors import Issue
from fhir_dmp.fhirjson import loads
from fhir_dmp.validation import structure
from fhir_dmp.validation.structure import validate_structure

REF = Path(__file__).resolve().parents[1] / "data" / "reference"  # in-repo copies (tests/data/reference/SOURCES.md)
R4_EXAMPLES = sorted((REF / "fhir-r4" / "examples").glob("*.json"))
PDSM_EXAMPLES = sorted((REF / "ig" / "pdsm" / "examples").glob("*.json"))
PDSM_EXAMPLES += sorted((REF / "ig" / "pdsm4dmp" / "examples").glob("*.json"))
PACKAGE = REF / "fhir-r4" / "package"  # the few files of hl7.fhir.r4.core 4.0.1 read here


def load(path: Path) -> dict:
    return loads(path.read_bytes())


def found(resource: dict) -> set[tuple[str, tuple[str, ...]]]:
    return {(i.code, i.expression) for i in validate_structure(resource)}


def document_reference(**changes) -> dict:
    doc = load(REF / "fhir-r4" / "examples" / "documentreference-example.json")
    doc.update(changes)
    return doc


def test_the_example_sets_are_there():
    assert len(R4_EXAMPLES) >= 12 and len(PDSM_EXAMPLES) >= 14


@pytest.mark.parametrize("path", R4_EXAMPLES, ids=lambda p: p.name)
def test_official_r4_examples_are_valid(path):
    resource = load(path)
    before = copy.deepcopy(resource)
    assert validate_structure(resource) == []
    assert resource == before  # the validator must not touch the client's JSON


@pytest.mark.parametrize("path", PDSM_EXAMPLES, ids=lambda p: p.name)
def test_pdsm_examples_are_valid(path):
    assert validate_structure(load(path)) == []


def package_resource(name: str) -> dict:
    return loads((PACKAGE / name).read_bytes())


def test_deep_official_definitions_are_valid_and_real_defects_found():
    # StructureDefinition nests backbone elements, contentReferences and choices several levels deep
    assert validate_structure(package_resource("StructureDefinition-DocumentReference.json")) == []
    assert validate_structure(package_resource("ValueSet-document-reference-status.json")) == []
    # a genuine defect of the core package: SearchParameter.base is 1..* and this one has none
    bad = package_resource("SearchParameter-codesystem-extensions-CodeSystem-author.json")
    assert found(bad) == {("required", ("SearchParameter.base",))}


def test_unknown_element_at_root_and_nested():
    doc = document_reference(colour="red")
    doc["content"][0]["attachment"]["sise"] = 3
    issues = validate_structure(doc)
    assert sorted((i.code, i.expression) for i in issues) == [
        ("structure", ("DocumentReference.colour",)),
        ("structure", ("DocumentReference.content[0].attachment.sise",)),
    ]
    assert all(i.diagnostics.startswith("Unknown element") for i in issues)
    assert not any("pydantic" in i.diagnostics for i in issues)


def test_bad_status_code_names_the_allowed_values():
    [issue] = validate_structure(document_reference(status="bogus"))
    assert (issue.code, issue.expression) == ("code-invalid", ("DocumentReference.status",))
    assert "current" in issue.diagnostics and "entered-in-error" in issue.diagnostics


def test_bad_patient_gender():
    assert found({"resourceType": "Patient", "gender": "x"}) == {("code-invalid", ("Patient.gender",))}


@pytest.mark.parametrize("value", [12, 0, True, {"year": 2020}])
def test_wrong_json_type_is_one_structure_issue(value):
    # pydantic alone accepts 0 as a date (a timestamp); FHIR JSON wants a string
    issues = validate_structure({"resourceType": "Patient", "birthDate": value})
    assert [(i.code, i.expression) for i in issues] == [("structure", ("Patient.birthDate",))]


@pytest.mark.parametrize(
    "element, value",
    [("active", "true"), ("active", 1), ("multipleBirthInteger", "3"), ("gender", None)],
)
def test_json_types_are_strict(element, value):
    assert found({"resourceType": "Patient", element: value}) == {("structure", (f"Patient.{element}",))}


def test_bad_date_value():
    [issue] = validate_structure({"resourceType": "Patient", "birthDate": "2020-13-45"})
    assert (issue.code, issue.expression) == ("value", ("Patient.birthDate",))
    assert "2020-13-45" in issue.diagnostics
    impossible_day = {"resourceType": "Patient", "birthDate": "2020-02-31"}
    assert found(impossible_day) == {("value", ("Patient.birthDate",))}


def test_missing_required_content():
    doc = document_reference()
    del doc["content"]
    [issue] = validate_structure(doc)  # both layers see it: reported once
    assert (issue.code, issue.expression) == ("required", ("DocumentReference.content",))


def test_bad_code_inside_backbone_element():
    doc = document_reference(relatesTo=[{"code": "foo", "target": {"reference": "DocumentReference/x"}}])
    [issue] = validate_structure(doc)
    assert (issue.code, issue.expression) == ("code-invalid", ("DocumentReference.relatesTo[0].code",))
    assert "replaces" in issue.diagnostics


def test_error_in_contained_resource():
    doc = document_reference()
    doc["contained"][0]["gender"] = "robot"
    doc["contained"][0]["nickname"] = "Al"
    assert found(doc) == {
        ("code-invalid", ("DocumentReference.contained[0].gender",)),
        ("structure", ("DocumentReference.contained[0].nickname",)),
    }


def test_error_in_bundle_entry_resource():
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "a b"}},
            {"resource": {"resourceType": "X"}},
        ],
    }
    assert found(bundle) == {
        ("value", ("Bundle.entry[0].resource.id",)),
        ("structure", ("Bundle.entry[1].resource.resourceType",)),
    }


@pytest.mark.parametrize("resource", [{"resourceType": "Patients"}, {"resourceType": "Citation"}, {}, [1]])
def test_unknown_resource_type(resource):
    # Citation exists in R4B, not in R4
    [issue] = validate_structure(resource)
    assert issue.code == "structure" and "resource" in issue.diagnostics


def test_r4b_only_and_vendor_elements_are_refused():
    patient = {
        "resourceType": "Patient",
        "fhir_comments": ["accepted by the R4B model"],
        "meta": {"project": "a Medplum addition to its copy of the schema"},
        "extension": [{"url": "http://x.org/e", "valueCodeableReference": {"concept": {"text": "R4B"}}}],
    }
    assert found(patient) == {
        ("structure", ("Patient.fhir_comments",)),
        ("structure", ("Patient.meta.project",)),
        ("structure", ("Patient.extension[0].valueCodeableReference",)),
    }


def test_choice_given_twice_and_required_choice_missing():
    patient = {"resourceType": "Patient", "deceasedBoolean": True, "deceasedDateTime": "2020"}
    assert found(patient) == {("structure", ("Patient.deceasedDateTime",))}
    communication = {"resourceType": "Communication", "status": "completed", "payload": [{"id": "p"}]}
    assert found(communication) == {("required", ("Communication.payload[0].content",))}


def test_primitive_extensions_and_null_alignment_are_valid():
    patient = {
        "resourceType": "Patient",
        "name": [{"given": ["Ann", None], "_given": [None, {"extension": [{"url": "u", "valueCode": "x"}]}]}],
        "_birthDate": {"extension": [{"url": "http://example.org/dar", "valueCode": "unknown"}]},
        "multipleBirthInteger": 2,
        "photo": [{"size": 10, "contentType": "image/png"}],
    }
    assert validate_structure(patient) == []
    patient["_birthDate"]["extension"][0]["valueFoo"] = 1
    assert found(patient) == {("structure", ("Patient.birthDate.extension[0].valueFoo",))}


def test_r4_type_missing_from_r4b_is_still_walked():
    product = {"resourceType": "MedicinalProduct", "name": [{"productName": "x"}], "colour": "red"}
    assert found(product) == {("structure", ("MedicinalProduct.colour",))}


def test_pydantic_locations_become_fhirpath():
    # the model's `loc` may hold Python names and internal steps: they map back to FHIR elements
    encounter = {"resourceType": "Encounter", "contained": [{"resourceType": "Patient", "_birthDate": {}}]}
    resolve = structure._resolve
    assert resolve(encounter, "Encounter", ("class_fhir", "code")).expression == "Encounter.class.code"
    assert resolve(encounter, "Encounter", ("contained", 0, "root")).expression == "Encounter.contained[0]"
    where = resolve(encounter, "Encounter", ("contained", 0, "__root__", "_birthDate", "id"))
    assert where.expression == "Encounter.contained[0].birthDate.id" and where.element.type == "string"


def test_several_errors_at_once():
    doc = document_reference(status="bogus", date="2020-13-45", colour="red")
    del doc["content"]
    doc["subject"] = {"reference": 1}
    doc["contained"] = [{"resourceType": "Nope"}, {"resourceType": "Patient", "birthDate": "1"}]
    assert found(doc) == {
        ("code-invalid", ("DocumentReference.status",)),
        ("value", ("DocumentReference.date",)),
        ("structure", ("DocumentReference.colour",)),
        ("required", ("DocumentReference.content",)),
        ("structure", ("DocumentReference.subject.reference",)),
        ("structure", ("DocumentReference.contained[0].resourceType",)),
        ("value", ("DocumentReference.contained[1].birthDate",)),
    }


# -- never raises --------------------------------------------------------------------------------------

ELEMENT_NAMES = [
    "id", "meta", "text", "status", "docStatus", "gender", "birthDate", "_birthDate", "name", "given",
    "_given", "content", "attachment", "size", "relatesTo", "code", "target", "contained", "extension",
    "url", "valueString", "valueDecimal", "entry", "item", "mode", "scope", "provision", "resourceType",
    "subject", "reference", "deceasedBoolean", "deceasedDateTime", "category", "coding", "",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["current", "male", "2020-13-45", "2020-01-01", "Patient", "Nope", "a b"]),
)
keys = st.one_of(st.sampled_from(ELEMENT_NAMES), st.text(max_size=6))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)
resource_types = st.sampled_from(["Patient", "DocumentReference", "Consent", "List"])
nested_resources = st.builds(lambda t, body: {**body, "resourceType": t}, resource_types,
                             st.dictionaries(keys, json_values, max_size=5))  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rtype=resource_types,
    body=st.dictionaries(keys, json_values, max_size=8),
    contained=st.lists(st.one_of(nested_resources, json_values), max_size=3),
)
def test_never_raises_on_random_json(rtype, body, contained):
    resource = {**body, "resourceType": rtype}
    if contained:
        resource["contained"] = contained
    issues = validate_structure(resource)
    assert isinstance(issues, list)
    for issue in issues:
        assert isinstance(issue, Issue)
        assert issue.code in {"structure", "required", "value", "code-invalid"}
        assert all(isinstance(part, str) for part in issue.expression)


def test_decimal_values_are_numbers():
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": Decimal("72.50"), "unit": "kg"},
    }
    assert validate_structure(observation) == []
    observation["valueQuantity"]["value"] = "72.50"
    assert found(observation) == {("structure", ("Observation.valueQuantity.value",))}
