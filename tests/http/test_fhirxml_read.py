"""The XML reader gives one round of errors (docs/conformance.md): what R4 refuses in an XML body is carried into
the JSON in the shape JSON would have for it, so the structural walk reports it with the same words and expression
as for JSON, in one 422 with the body's profile errors; a 400 is left for XML that is no FHIR resource at all."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fhir_dmp.errors import FhirError
from fhir_dmp.http.fhirxml_read import xml_to_json
from fhir_dmp.validation.structure import validate_structure
from tests.http.helpers import outcome

XML = "application/fhir+xml"


def doc(inner: str, root: str = "Patient") -> bytes:
    return f'<{root} xmlns="http://hl7.org/fhir">{inner}</{root}>'.encode()


# (XML children of a Patient, the JSON they are carried as, the expression the walk reports)
CARRIED = {
    "bad boolean": ('<active value="yes"/>', {"active": "yes"}, "Patient.active"),
    "empty value": ('<active value=""/>', {"active": ""}, "Patient.active"),
    "bad integer": ('<multipleBirthInteger value="one"/>', {"multipleBirthInteger": "one"},
                    "Patient.multipleBirthInteger"),
    "fraction for an integer": ('<multipleBirthInteger value="1.5"/>', {"multipleBirthInteger": Decimal("1.5")},
                                "Patient.multipleBirthInteger"),
    "integer over 32 bits": ('<multipleBirthInteger value="2147483648"/>', {"multipleBirthInteger": 2**31},
                             "Patient.multipleBirthInteger"),
    "repeated primitive": ('<active value="true"/><active value="false"/>', {"active": [True, False]},
                           "Patient.active"),
    "repeated complex": ('<maritalStatus><text value="a"/></maritalStatus><maritalStatus><text value="b"/>'
                         "</maritalStatus>", {"maritalStatus": [{"text": "a"}, {"text": "b"}]},
                         "Patient.maritalStatus"),
    "unknown attribute": ('<active value="true" bogus="1"/>', {"active": True, "_active": {"bogus": "1"}},
                          "Patient.active.bogus"),
    "unknown attribute of a complex": ('<name bogus="1"><family value="X"/></name>',
                                       {"name": [{"family": "X", "bogus": "1"}]}, "Patient.name[0].bogus"),
    "no value": ("<active/>", {"_active": {}}, "Patient.active"),
    "empty complex": ("<name/>", {"name": [{}]}, "Patient.name[0]"),
    "text content": ('hello<active value="true"/>', {"active": True, "#text": "hello"}, "Patient.#text"),
    "text in a primitive": ('<active value="true">yes</active>', {"active": True, "_active": {"#text": "yes"}},
                            "Patient.active.#text"),
    "unknown child of a primitive": ('<birthDate value="2000"><foo value="x"/></birthDate>',
                                     {"birthDate": "2000", "_birthDate": {"foo": "x"}}, "Patient.birthDate.foo"),
    "two choices": ('<deceasedBoolean value="true"/><deceasedDateTime value="2020"/>',
                    {"deceasedBoolean": True, "deceasedDateTime": "2020"}, "Patient.deceasedDateTime"),
}


@pytest.mark.parametrize(("xml", "carried", "expression"), CARRIED.values(), ids=CARRIED)
def test_a_problem_is_carried_as_json_carries_it(xml, carried, expression):
    """The same JSON, hence the same issues (words and expression) as a JSON body with that problem."""
    got = xml_to_json(doc(xml))
    assert got == {"resourceType": "Patient", **carried}
    issues = validate_structure(got)
    assert expression in {e for i in issues for e in i.expression}, issues
    assert issues == validate_structure({"resourceType": "Patient", **carried})


def test_a_bad_boolean_reads_as_the_same_json_string_does():
    """`<active value="yes"/>` and `"active": "yes"`: one issue, same text, same expression."""
    issue, = validate_structure(xml_to_json(doc('<active value="yes"/>')))
    assert issue.diagnostics == "Wrong JSON type for a boolean: expected true or false, got a string"
    assert issue.expression == ("Patient.active",)


def test_an_empty_resource_is_a_resource():
    """`<Patient xmlns=".."/>` is `{"resourceType": "Patient"}`: R4 has nothing against it (its profile may)."""
    assert xml_to_json(doc("")) == {"resourceType": "Patient"}


def test_good_values_keep_their_json_types():
    got = xml_to_json(doc('<active value="true"/><multipleBirthInteger value="-3"/>'))
    assert got == {"resourceType": "Patient", "active": True, "multipleBirthInteger": -3}
    assert validate_structure(got) == []


@pytest.mark.parametrize("name", CARRIED)
def test_an_xml_problem_is_listed_with_the_profile_errors_in_one_422(client, name):
    """Each problem together with an R4 error (a gender code no value set has) and a profile error (the DMP Patient
    needs its INS identifier) of the same body: one 422, each issue with its expression."""
    xml, _, expression = CARRIED[name]
    response = client.request("POST", "Patient", raw=doc(xml + '<gender value="robot"/>'), content_type=XML)
    found = outcome(response, 422)
    expressions = {e for i in found["issue"] if i["severity"] == "error" for e in i.get("expression", ())}
    assert {expression, "Patient.gender", "Patient.identifier"} <= expressions, found


def test_validate_lists_an_xml_problem_with_the_rest(client):
    """$validate answers the same list in a 200 OperationOutcome."""
    body = doc('<active value="yes"/><active value="no"/><gender value="robot"/>')
    found = outcome(client.request("POST", "Patient/$validate", raw=body, content_type=XML), 200)
    expressions = {e for i in found["issue"] if i["severity"] == "error" for e in i.get("expression", ())}
    assert {"Patient.active", "Patient.gender", "Patient.identifier"} <= expressions, found


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"', "not well-formed"),
        (b'<Patient xmlns="urn:x"><active value="yes"/></Patient>', "namespace"),
        (doc('<active value="yes"/>', root="Patientt"), "Unknown resource type"),
        (doc('<resourceType value="Practitioner"/><active value="yes"/>'), "Unknown element 'resourceType'"),
        (doc('<_active value="yes"/>'), "Unknown element '_active'"),
        (doc('<active value="yes" resourceType="X"/>'), "Unknown attribute 'resourceType'"),
        (doc('<active value="yes" extension="X"/>'), "Unknown attribute 'extension'"),
        (doc('<name family="X"/><active value="yes"/>'), "Unknown attribute 'family'"),
        (doc('<active value="yes"><id value="x"/></active>'), "Unknown element 'id'"),
    ],
)
def test_no_fhir_resource_at_all_is_still_a_400(client, body, words):
    """Names that would change the JSON's meaning (the resource's type, a `_name` holder, an element written as an
    attribute) are refused alone, even with other problems in the body: the body cannot be read as FHIR."""
    with pytest.raises(FhirError) as err:
        xml_to_json(body)
    assert err.value.status == 400 and words in err.value.issues[0].diagnostics
    found = outcome(client.request("POST", "Patient", raw=body, content_type=XML), 400)
    assert words in found["issue"][0]["diagnostics"]


# Carried shapes reach more than the structural walk: a FHIRPath Patch (Parameters) and a transaction Bundle read
# them too. Each mutation must still be a 4xx OperationOutcome, never a 500 nor a silent write.
MUTATIONS = {
    "repeated": ('<valueCode value="replace"/>', '<valueCode value="replace"/><valueCode value="add"/>'),
    "no value": ('<valueCode value="replace"/>', "<valueCode/>"),
    "bad value": ('<valueCode value="replace"/>', '<valueCode value=""/>'),
    "unknown attribute": ('<valueCode value="replace"/>', '<valueCode value="replace" bogus="1"/>'),
    "text": ('<valueCode value="replace"/>', '<valueCode value="replace">x</valueCode>'),
    "repeated name": ('<name value="type"/>', '<name value="type"/><name value="path"/>'),
    "repeated part value": ('<valueString value="male"/>', '<valueString value="male"/><valueString/>'),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_carried_shapes_in_an_xml_patch_are_refused_cleanly(client, name):
    from fhir_dmp.http.fhirxml import json_to_xml
    from tests.http.helpers import new_patient

    pid = new_patient(client)
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueString": "male"}]}]}
    xml = json_to_xml(patch).decode()
    before, after = MUTATIONS[name]
    assert before in xml
    response = client.request("PATCH", f"Patient/{pid}", raw=xml.replace(before, after, 1).encode(), content_type=XML)
    assert 400 <= response.status_code < 500, response.data
    outcome(response, response.status_code)
    assert client.get(f"Patient/{pid}").get_json()["gender"] != "male"


@pytest.mark.parametrize("name", CARRIED)
def test_carried_shapes_in_an_xml_transaction_are_refused_cleanly(client, name):
    xml, _, _ = CARRIED[name]
    entry = ('<entry><fullUrl value="urn:uuid:0c1e8a4e-55f4-4a4b-9c7c-1f1a3b6d0e01"/><resource><Patient>'
             f'{xml}</Patient></resource><request><method value="POST"/><url value="Patient"/></request></entry>')
    body = doc('<type value="transaction"/>' + entry, root="Bundle")
    response = client.request("POST", "/fhir", raw=body, content_type=XML)
    assert 400 <= response.status_code < 500, response.data
    outcome(response, response.status_code)


ENTRY_PROBLEMS = {
    "repeated resource": "<resource><Patient/></resource><resource><Patient/></resource>"
                         '<request><method value="POST"/><url value="Patient"/></request>',
    "repeated request": '<resource><Patient/></resource><request><method value="POST"/><url value="Patient"/>'
                        '</request><request><method value="PUT"/><url value="Patient/x"/></request>',
    "bad method": '<resource><Patient/></resource><request><method value="POSTX"/><url value="Patient"/></request>',
    "no method value": '<resource><Patient/></resource><request><method/><url value="Patient"/></request>',
    "repeated url": '<resource><Patient/></resource><request><method value="POST"/><url value="Patient"/>'
                    '<url value="Observation"/></request>',
    "text in request": '<resource><Patient/></resource><request>x<method value="POST"/><url value="Patient"/>'
                       "</request>",
}


@pytest.mark.parametrize("name", ENTRY_PROBLEMS)
def test_carried_shapes_in_a_transaction_entry_are_refused_cleanly(client, name):
    body = doc(f'<type value="transaction"/><entry>{ENTRY_PROBLEMS[name]}</entry>', root="Bundle")
    response = client.request("POST", "/fhir", raw=body, content_type=XML)
    assert 400 <= response.status_code < 500, response.data
    outcome(response, response.status_code)
    assert client.get("Patient").get_json()["total"] == 0
