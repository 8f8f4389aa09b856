"""The route table's one check before any operation runs (services/routes.py): a POSTed Parameters R4 refuses is
one 400 listing every structure issue with its expression, in JSON and in XML (where the XML reader carries what
it cannot type as JSON would: http/fhirxml_read.py), never a problem the operation skips; `$validate` is left to
report on its resource itself."""

from __future__ import annotations

from tests.http.helpers import outcome

J57 = "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"


def _expressions(found: dict) -> set[str]:
    return {e for i in found["issue"] for e in i.get("expression", ())}


def test_a_json_parameters_r4_refuses_is_one_400(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": J57, "_valueUri": {"bogus": "1"}},
        {"name": "count", "valueInteger": [1, 2]}]}
    found = outcome(client.post("ValueSet/$expand", body), 400)
    assert {"Parameters.parameter[0].valueUri.bogus", "Parameters.parameter[1].valueInteger"} <= _expressions(found)


def test_an_xml_parameters_with_an_unknown_attribute_and_a_repeat_is_one_400(client):
    xml = (f'<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="url"/><valueUri value="{J57}" '
           'bogus="1"/></parameter><parameter><name value="count"/><valueInteger value="1"/>'
           '<valueInteger value="2"/></parameter></Parameters>').encode()
    found = outcome(client.request("POST", "ValueSet/$expand", raw=xml, content_type="application/fhir+xml"), 400)
    assert {"Parameters.parameter[0].valueUri.bogus", "Parameters.parameter[1].valueInteger"} <= _expressions(found)


def test_a_good_parameters_still_runs(client):
    body = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": J57},
                                                        {"name": "count", "valueInteger": 1}]}
    response = client.post("ValueSet/$expand", body)
    assert response.status_code == 200, response.data


def test_validate_reports_on_its_resource_itself(client):
    """The resource $validate is given is what it answers about (200 OperationOutcome), not a 400 of the route."""
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "active": "yes"}}]}
    found = outcome(client.post("Patient/$validate", body), 200)
    assert "Patient.active" in _expressions(found)
