"""Content negotiation, wire formats, body limits and the CapabilityStatement
(http://hl7.org/fhir/R4/http.html#mime-type, #capabilities), on every backend."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import quote

import pytest
from lxml import etree

from fhir_dmp.search.definitions import definition
from fhir_dmp.services.registry import RESOURCES
from tests.fhirclient import document, json_of, patient
from tests.http.helpers import outcome

NS = "{http://hl7.org/fhir}"
FHIR_JSON, FHIR_XML = "application/fhir+json", "application/fhir+xml"

PATIENT_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <extension url="https://hl7.fr/ig/test/weight"><valueDecimal value="1.50"/></extension>
  <identifier><system value="urn:oid:1.2.250.1.213.1.4.10"/><value value="1800175123456"/></identifier>
  <name><family value="MARTIN"/><given value="Claire"/></name>
  <gender value="female"/>
  <birthDate value="1980-01-17"/>
</Patient>"""
PATIENT_JSON = patient(extension=[{"url": "https://hl7.fr/ig/test/weight", "valueDecimal": Decimal("1.50")}])


# -- helpers --------------------------------------------------------------------------------------
def kind(resp) -> str:
    """'json' or 'xml' by the response's Content-Type, checking the body really is that."""
    media = resp.headers["Content-Type"].split(";")[0].strip()
    assert media in (FHIR_JSON, FHIR_XML), media
    if media == FHIR_XML:
        etree.fromstring(resp.data)
        return "xml"
    json_of(resp)
    return "json"


def xml_root(resp):
    assert resp.headers["Content-Type"].startswith(FHIR_XML), resp.headers["Content-Type"]
    return etree.fromstring(resp.data)


def value(el, path: str) -> str | None:
    found = el.find("/".join(NS + p for p in path.split("/")))
    return None if found is None else found.get("value")


def xml_outcome(resp, status: int, code: str | None = None):
    assert resp.status_code == status, resp.data
    root = xml_root(resp)
    assert root.tag == NS + "OperationOutcome"
    issues = root.findall(NS + "issue")
    assert issues and all(value(i, "code") and value(i, "diagnostics") for i in issues)
    if code:
        assert code in [value(i, "code") for i in issues]
    return root


def created_id(resp) -> str:
    assert resp.status_code == 201, resp.data
    return resp.headers["Location"].split("/_history/")[0].rsplit("/", 1)[1]


def count(client, path: str) -> int:
    return json_of(client.get(path))["total"]


# -- _format and Accept ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, expected", [
    ("json", "json"), ("xml", "xml"), (FHIR_JSON, "json"), (FHIR_XML, "xml"), ("application/json", "json"),
    ("application/xml", "xml"), ("text/xml", "xml"), (quote(FHIR_XML), "xml"), (quote(FHIR_JSON), "json"),
])
def test_format_parameter(client, fmt, expected):
    pid = created_id(client.post("Patient", patient()))
    other = FHIR_XML if expected == "json" else FHIR_JSON  # _format wins over Accept
    resp = client.get(f"Patient/{pid}?_format={fmt}", headers={"Accept": other})
    assert resp.status_code == 200 and kind(resp) == expected


@pytest.mark.parametrize("accept, expected", [
    (FHIR_JSON, "json"), ("application/json", "json"), (FHIR_XML, "xml"), ("application/xml", "xml"),
    ("text/xml", "xml"), ("*/*", "json"), ("application/*", "json"),
    (f"{FHIR_JSON}; fhirVersion=4.0", "json"),
    (f"{FHIR_XML};q=0.5, {FHIR_JSON};q=0.9", "json"), (f"{FHIR_JSON};q=0.1, {FHIR_XML}", "xml"),
    (f"text/html, application/xhtml+xml, {FHIR_XML};q=0.9, */*;q=0.8", "xml"),
    ("text/html, */*;q=0.1", "json"), (f"{FHIR_JSON};q=0, {FHIR_XML};q=0.2", "xml"),
])
def test_accept_header(client, accept, expected):
    pid = created_id(client.post("Patient", patient()))
    resp = client.get(f"Patient/{pid}", headers={"Accept": accept})
    assert resp.status_code == 200 and kind(resp) == expected


def test_no_accept_header_means_json(client):
    resp = client.get("Patient", headers={"Accept": ""})
    assert resp.status_code == 200 and kind(resp) == "json"


@pytest.mark.parametrize("query, accept", [
    ("_format=html", FHIR_JSON), ("_format=text/html", FHIR_JSON), ("_format=turtle", FHIR_XML),
    ("", "text/html"), ("", "image/png, text/plain"), ("", f"{FHIR_JSON};q=0"),
])
def test_unacceptable_format_is_406(client, query, accept):
    pid = created_id(client.post("Patient", patient()))
    for path in (f"Patient/{pid}", "Patient", "metadata"):
        resp = client.get(f"{path}?{query}" if query else path, headers={"Accept": accept})
        outcome(resp, 406, "not-supported")


def test_format_applies_to_writes_and_pretty(client):
    resp = client.post("Patient?_format=xml", patient())
    assert resp.status_code == 201
    root = xml_root(resp)
    assert root.tag == NS + "Patient" and value(root, "meta/versionId") == "1"
    pid = value(root, "id")
    pretty = client.get(f"Patient/{pid}?_pretty=true")
    assert pretty.status_code == 200 and b"\n  " in pretty.data
    assert json_of(pretty) == json_of(client.get(f"Patient/{pid}"))
    assert b"\n" not in client.get(f"Patient/{pid}").data


def test_head_has_headers_but_no_body(client):
    pid = created_id(client.post("Patient", patient()))
    resp = client.request("HEAD", f"Patient/{pid}")
    assert resp.status_code == 200 and resp.data == b"" and resp.headers["ETag"] == 'W/"1"'


# -- XML bodies and XML responses -----------------------------------------------------------------
def test_xml_body_creates_the_same_resource_as_json(client):
    xml_id = created_id(client.post("Patient", raw=PATIENT_XML, content_type=FHIR_XML))
    a = json_of(client.get(f"Patient/{xml_id}"))
    assert b'"valueDecimal":1.50' in client.get(f"Patient/{xml_id}").data
    as_xml = xml_root(client.get(f"Patient/{xml_id}", headers={"Accept": FHIR_XML}))
    assert value(as_xml, "extension/valueDecimal") == "1.50"
    assert value(as_xml, "id") == xml_id and value(as_xml, "gender") == "female"
    assert client.delete(f"Patient/{xml_id}").status_code == 204  # one DMP per INS: its JSON twin comes next
    b = json_of(client.get(f"Patient/{created_id(client.post('Patient', PATIENT_JSON))}"))
    strip = lambda r: {k: v for k, v in r.items() if k not in ("id", "meta")}  # noqa: E731
    assert strip(a) == strip(b) == strip(PATIENT_JSON)


@pytest.mark.parametrize("content_type", [FHIR_XML, "application/xml", "text/xml",
                                          f"{FHIR_XML}; charset=UTF-8", "application/xml+fhir"])
def test_xml_content_types(client, content_type):
    resp = client.post("Patient", raw=PATIENT_XML, content_type=content_type, headers={"Accept": FHIR_XML})
    assert resp.status_code == 201
    assert xml_root(resp).tag == NS + "Patient"


def test_xml_update_and_search(client):
    pid = created_id(client.post("Patient", raw=PATIENT_XML, content_type=FHIR_XML))
    body = PATIENT_XML.replace(b"<extension", f'<id value="{pid}"/><extension'.encode())
    body = body.replace(b'"female"', b'"male"')
    resp = client.put(f"Patient/{pid}", raw=body, content_type=FHIR_XML, headers={"Accept": FHIR_XML})
    assert resp.status_code == 200 and value(xml_root(resp), "gender") == "male"
    found = xml_root(client.get(f"Patient?_id={pid}&_format=xml"))
    assert found.tag == NS + "Bundle" and value(found, "type") == "searchset" and value(found, "total") == "1"
    entry = found.find(NS + "entry")
    assert value(entry, "resource/Patient/id") == pid
    assert value(entry, "resource/Patient/meta/versionId") == "2"
    history = xml_root(client.get(f"Patient/{pid}/_history", headers={"Accept": FHIR_XML}))
    assert value(history, "type") == "history" and len(history.findall(NS + "entry")) == 2


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "Patient/nobody", 404, "not-found"), ("GET", "Encounter", 404, "not-found"),
    ("POST", "AuditEvent", 405, "not-supported"), ("GET", "Patient?_count=many", 400, "invalid"),
])
def test_errors_in_xml(client, method, path, status, code):
    body = {"resourceType": "AuditEvent"} if method == "POST" else None
    xml_outcome(client.request(method, path, body, headers={"Accept": FHIR_XML}), status, code)
    sep = "&" if "?" in path else "?"
    xml_outcome(client.request(method, f"{path}{sep}_format=xml", body), status, code)
    outcome(client.request(method, path, body), status, code)


# -- request bodies -------------------------------------------------------------------------------
def test_application_json_is_fhir_json(client):
    resp = client.post("Patient", patient(), content_type="application/json")
    assert resp.status_code == 201
    resp = client.post("Patient", patient("1800175123457"), content_type="application/fhir+json; charset=utf-8")
    assert resp.status_code == 201
    assert count(client, "Patient") == 2


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "text/html",
                                          f"{FHIR_JSON}; charset=ISO-8859-1", "multipart/form-data"])
def test_unsupported_content_type_is_415(client, content_type):
    raw = b'{"resourceType":"Patient","gender":"female"}'
    outcome(client.post("Patient", raw=raw, content_type=content_type), 415, "not-supported")
    xml_outcome(client.post("Patient", raw=raw, content_type=content_type, headers={"Accept": FHIR_XML}), 415)
    assert count(client, "Patient") == 0


def test_missing_content_type_is_415(client):
    resp = client.http.open("/fhir/Patient", method="POST", data=b'{"resourceType":"Patient"}',
                            headers={"Authorization": f"Bearer {client.token()}", "Accept": FHIR_JSON})
    outcome(resp, 415, "not-supported")
    assert count(client, "Patient") == 0


def test_body_over_the_limit_is_413(client):
    def sized(length: int) -> bytes:
        return json.dumps(patient(name=[{"family": "MARTIN", "given": ["Claire"], "text": "x" * length}])).encode()
    raw = sized(1024 * 1024)
    outcome(client.post("Patient", raw=raw), 413, "too-costly")
    xml_outcome(client.post("Patient", raw=raw, headers={"Accept": FHIR_XML}), 413, "too-costly")
    pid = created_id(client.post("Patient", raw=sized(1024 * 1024 - 64 * 1024)))  # just under: accepted
    outcome(client.put(f"Patient/{pid}", raw=raw), 413)
    assert count(client, "Patient") == 1
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"


@pytest.mark.parametrize("raw, content_type", [
    (b'{"resourceType": "Patient", "gender": "female"', FHIR_JSON),
    (b'{"resourceType": "Patient",, }', FHIR_JSON),
    (b"\xff\xfe{}", FHIR_JSON),
    (b"resourceType=Patient", FHIR_JSON),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="female"/>', FHIR_XML),
    (b'<Patient xmlns="http://hl7.org/fhir"><gender value="female"></Patient>', FHIR_XML),
    (b'{"resourceType": "Patient"}', FHIR_XML),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="http://hl7.org/fhir"/>', FHIR_XML),
])
def test_malformed_bodies_are_400_structure(client, raw, content_type):
    outcome(client.post("Patient", raw=raw, content_type=content_type), 400, "structure")
    xml_outcome(client.post("Patient", raw=raw, content_type=content_type, headers={"Accept": FHIR_XML}),
                400, "structure")
    assert count(client, "Patient") == 0


@pytest.mark.parametrize("raw", [
    b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY g "female">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><gender value="&g;"/></Patient>',
    b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><name><text value="&x;"/></name></Patient>',
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><name><text value="&c;"/></name></Patient>',
    b'<!DOCTYPE Patient SYSTEM "http://example.test/patient.dtd"><Patient xmlns="http://hl7.org/fhir"/>',
])
def test_dtds_and_entities_are_refused(client, raw):
    body = outcome(client.post("Patient", raw=raw, content_type=FHIR_XML), 400)
    assert "root:" not in str(body)
    assert count(client, "Patient") == 0


@pytest.mark.parametrize("method, path, body", [
    ("POST", "Patient", document("x")), ("POST", "DocumentReference", patient()),
    ("PUT", "Patient/PID", {**patient(), "resourceType": "Practitioner", "id": "PID"}),
    ("POST", "Patient", {"resourceType": 7}), ("POST", "Patient", []),
])
def test_resource_type_must_match_the_url(client, method, path, body):
    pid = created_id(client.post("Patient", patient()))
    path = path.replace("PID", pid)
    if isinstance(body, dict) and body.get("id") == "PID":
        body = {**body, "id": pid}
    outcome(client.request(method, path, body), 400)
    assert count(client, "Patient") == 1 and count(client, "DocumentReference") == 0
    assert json_of(client.get(f"Patient/{pid}"))["meta"]["versionId"] == "1"


def test_xml_resource_type_must_match_the_url(client):
    raw = b'<Practitioner xmlns="http://hl7.org/fhir"><active value="true"/></Practitioner>'
    outcome(client.post("Patient", raw=raw, content_type=FHIR_XML), 400)
    no_ns = b'<Patient><gender value="female"/></Patient>'
    outcome(client.post("Patient", raw=no_ns, content_type=FHIR_XML), 400)
    assert count(client, "Patient") == 0 and count(client, "Practitioner") == 0


def test_empty_body_is_400(client):
    outcome(client.post("Patient", raw=b"", content_type=FHIR_JSON), 400)
    pid = created_id(client.post("Patient", patient()))
    outcome(client.put(f"Patient/{pid}", raw=b"", content_type=FHIR_JSON), 400)


# -- CapabilityStatement --------------------------------------------------------------------------
def _capability(client, **kw) -> dict:
    resp = client.get("metadata", auth=False, **kw)
    assert resp.status_code == 200, resp.data
    body = json_of(resp)
    assert body["resourceType"] == "CapabilityStatement"
    return body


def test_metadata_needs_no_token(client):
    assert client.get("Patient", auth=False).status_code == 401
    statement = _capability(client)
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert statement["status"] == "active" and statement["date"]
    assert {"json", "xml"} <= set(statement["format"])
    assert statement["patchFormat"] == ["application/json-patch+json", "application/merge-patch+json",
                                        "application/fhir+json", "application/fhir+xml"]
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    codings = [c for s in rest["security"]["service"] for c in s["coding"]]
    assert {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth",
            "display": "OAuth"} in codings
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}
    as_xml = xml_root(client.get("metadata?_format=xml", auth=False))
    assert as_xml.tag == NS + "CapabilityStatement" and value(as_xml, "fhirVersion") == "4.0.1"
    by_accept = xml_root(client.get("metadata", auth=False, headers={"Accept": FHIR_XML}))
    assert value(by_accept, "kind") == "instance"


def test_metadata_lists_exactly_the_registry(client):
    resources = {r["type"]: r for r in _capability(client)["rest"][0]["resource"]}
    assert set(resources) == set(RESOURCES)
    for name, served in RESOURCES.items():
        assert [i["code"] for i in resources[name]["interaction"]] == list(served.interactions), name
        assert resources[name]["updateCreate"] is False
    audit = {i["code"] for i in resources["AuditEvent"]["interaction"]}
    assert audit == {"read", "vread", "search-type", "history-instance", "history-type"}
    assert not audit & {"create", "update", "patch", "delete"}
    assert "conditionalCreate" not in resources["AuditEvent"]
    full = {i["code"] for i in resources["Patient"]["interaction"]}
    assert full == {"read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                    "create", "search-type"}
    assert resources["Patient"]["conditionalCreate"] is True
    assert resources["Patient"]["conditionalUpdate"] is True
    assert resources["Patient"]["conditionalDelete"] == "single"


OFFICIAL = {
    ("Patient", "_id"): ("token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
    ("Patient", "_lastUpdated"): ("date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
    ("Patient", "identifier"): ("token", "http://hl7.org/fhir/SearchParameter/Patient-identifier"),
    ("DocumentReference", "patient"): ("reference", "http://hl7.org/fhir/SearchParameter/clinical-patient"),
    ("DocumentReference", "identifier"): ("token", "http://hl7.org/fhir/SearchParameter/clinical-identifier"),
    ("Consent", "patient"): ("reference", "http://hl7.org/fhir/SearchParameter/clinical-patient"),
    ("Practitioner", "identifier"): ("token", "http://hl7.org/fhir/SearchParameter/Practitioner-identifier"),
}
SAMPLE = {"token": "http://example.test|1", "date": "ge2020-01-01", "string": "abc", "uri": "http://example.test/x",
          "number": "1", "quantity": "1"}


def _sample(rtype: str, param: dict) -> str | None:
    """A well-formed value for an advertised parameter (None for kinds that need a bespoke one)."""
    if param["name"] == "_id":
        return "abc"
    if param["type"] == "reference":
        targets = definition(rtype, param["name"]).get("target") or ["Patient"]
        return f"{'Patient' if 'Patient' in targets else targets[0]}/abc"
    return SAMPLE.get(param["type"])


def test_metadata_search_params_are_official_and_really_supported(client):
    resources = {r["type"]: r for r in _capability(client)["rest"][0]["resource"]}
    for (rtype, name), (ptype, url) in OFFICIAL.items():
        params = {p["name"]: p for p in resources[rtype]["searchParam"]}
        assert params[name]["definition"] == url and params[name]["type"] == ptype, (rtype, name)
    for rtype, resource in resources.items():
        names = [p["name"] for p in resource["searchParam"]]
        assert {"_id", "_lastUpdated"} <= set(names) and len(names) == len(set(names)), rtype
        for param in resource["searchParam"]:
            assert param["definition"].startswith("http"), (rtype, param)
            sample = _sample(rtype, param)
            if sample is None:
                continue
            query = f"{rtype}?{param['name']}={quote(sample)}"
            resp = client.get(query, headers={"Prefer": "handling=strict"})
            if resp.status_code == 400:  # a value this sample does not fit (e.g. a boolean token) is fine
                assert "not-supported" not in [i["code"] for i in outcome(resp, 400)["issue"]], query
            else:
                assert resp.status_code == 200, (query, resp.data)
                assert rtype == "AuditEvent" or json_of(resp)["total"] == 0  # every request leaves a trace


# -- every error is an OperationOutcome -----------------------------------------------------------
@pytest.mark.parametrize("method, path, kw", [
    ("GET", "Patient/a/b/c/d/e", {}), ("GET", "Patient/%00", {}), ("GET", "_history?_count=x", {}),
    ("PATCH", "Patient/x", {"raw": b"[]", "content_type": "text/plain"}),
    ("POST", "Patient/_search", {"raw": b"_count=%%%", "content_type": "application/x-www-form-urlencoded"}),
    ("POST", "Patient", {"raw": b'{"resourceType":"Patient","birthDate":12}'}),
    ("POST", "Patient", {"raw": b'{"resourceType":"Patient","gender":["female"]}'}),
    ("POST", "Patient", {"raw": b"[" * 5000 + b"]" * 5000}),
    ("POST", "Patient", {"raw": b'{"resourceType":"Patient","a":' * 2000 + b"1" + b"}" * 2000}),
    ("PUT", "Patient/x/_history/1", {"raw": b"{}"}), ("DELETE", "Patient", {}), ("GET", "$everything", {}),
    ("POST", "Patient", {"raw": b'<Patient xmlns="http://hl7.org/fhir"><foo value="1"/></Patient>',
                         "content_type": FHIR_XML}),
    ("GET", "Patient/bad%20id", {}), ("GET", "Patient?_lastUpdated=ge2020-13-45", {}),
    ("GET", "Patient/x/_history/0", {}), ("POST", "Patient", {"body": ["not", "a", "resource"]}),
    ("PUT", "Patient/x", {"body": "a string"}), ("GET", "Patient?_total=maybe", {}),
    ("GET", "Patient?_count=-1", {}), ("POST", "_history", {"body": {"x": 1}}), ("GET", "Patient/_search", {}),
    ("PUT", "Patient", {"body": patient()}), ("DELETE", "Patient?_id=x&nonsense=1", {}),
])
def test_odd_requests_get_an_operation_outcome_never_a_500(client, method, path, kw):
    resp = client.request(method, path, **kw)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.data[:300])
    outcome(resp, resp.status_code)
    assert count(client, "Patient") == 0
