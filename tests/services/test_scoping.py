"""Trying to get more than a SMART scope allows (services/scoping.py, policy/scopes.py): every way a request reaches
a type besides its own (includes, chains, `_has` nested or chained, conditional interactions and their conditions,
batch and transaction entries, a transaction's conditional references, operations), each refused with a 403
OperationOutcome naming the missing scope, and traced; and what stays open without a token (`/metadata`)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_dmp.services.requests import head_of, parse_url
from fhir_dmp.services.scoping import needs_of
from tests.fhirclient import FhirTestClient, document, json_of, linked, patient
from tests.policy.test_traces import events_of

INS = "1800175123456"
SYSTEM = {"actor": "system", "sub": "scope-attacker"}
BASE = "http://localhost/fhir"


def needs(method: str, url: str, **fields: Any) -> set[tuple[str, str]]:
    return set(needs_of(parse_url(method, url, base_url=BASE, **fields)))


@pytest.mark.parametrize(("url", "reached"), [
    ("DocumentReference?patient.identifier=x", ("Patient", "s")),  # ITI-67 by INS searches the Patient
    ("DocumentReference?patient.name=martin", ("Patient", "s")),
    ("DocumentReference?subject:Patient.name=martin", ("Patient", "s")),
    ("DocumentReference?author.name=martin", ("Practitioner", "s")),
    ("Patient?_has:DocumentReference:patient:type=11502-2", ("DocumentReference", "s")),
    ("Patient?_has:DocumentReference:patient:_has:List:item:code=x", ("List", "s")),  # nested _has
    ("Patient?_has:DocumentReference:patient:author.name=x", ("Practitioner", "s")),  # a chain inside a _has
    ("DocumentReference?patient._has:AuditEvent:patient:action=R", ("AuditEvent", "s")),  # a _has in a chain
    ("DocumentReference?_include=DocumentReference:subject:Patient", ("Patient", "r")),
    ("DocumentReference?_include:iterate=Patient:general-practitioner", ("Practitioner", "r")),
    ("DocumentReference?_revinclude=List:item", ("List", "r")),
    ("DocumentReference?_include=DocumentReference:*", ("*", "r")),
])
def test_a_search_needs_something_on_every_type_it_reaches(url, reached):
    assert reached in needs("GET", url)
    assert reached in needs("POST", url.replace("?", "/_search?"))


@pytest.mark.parametrize(("method", "url", "fields", "wanted"), [
    ("POST", "Patient", {"if_none_exist": "identifier=x"}, {("Patient", "c"), ("Patient", "s"), ("Patient", "r")}),
    ("POST", "Patient?identifier=x", {}, {("Patient", "c"), ("Patient", "s"), ("Patient", "r")}),  # fhirpy's form
    ("POST", "Patient?_format=json", {}, {("Patient", "c")}),  # not a condition
    ("PUT", "DocumentReference?identifier=x", {}, {("DocumentReference", "u"), ("DocumentReference", "s")}),
    ("PATCH", "DocumentReference?identifier=x", {}, {("DocumentReference", "u"), ("DocumentReference", "s")}),
    ("DELETE", "Patient?identifier=x", {}, {("Patient", "d"), ("Patient", "s")}),
    ("PUT", "DocumentReference/1", {}, {("DocumentReference", "u")}),  # not conditional
    ("POST", "DocumentReference", {"if_none_exist": "_has:AuditEvent:entity:action=R"},
     {("DocumentReference", "c"), ("DocumentReference", "s"), ("DocumentReference", "r"), ("AuditEvent", "s")}),
    ("GET", "Patient/$vsm-status?older-than=6mo", {}, {("Patient", "s"), ("DocumentReference", "s")}),
])
def test_a_conditional_interaction_also_needs_the_search_its_condition_is(method, url, fields, wanted):
    assert needs(method, url, **fields) == wanted


def test_an_attachment_naming_a_binary_of_this_server_needs_binary_read():
    """The write's validation reads that Binary (size and SHA-1): whether it exists, and its hash, are Binary's."""
    doc = document("1", content=[{"attachment": linked(b"x", "Binary/123")}])
    assert ("Binary", "r") in needs("POST", "DocumentReference", body=doc)
    assert ("Binary", "r") in needs("PUT", "DocumentReference/1", body={**doc, "id": "1"})
    assert ("Binary", "r") in needs("POST", "DocumentReference/$validate", body=doc)
    absolute = document("1", content=[{"attachment": linked(b"x", f"{BASE}/Binary/123")}])
    assert ("Binary", "r") in needs("POST", "DocumentReference", body=absolute)
    patch = [{"op": "replace", "path": "/content/0/attachment/url", "value": "Binary/123"}]
    assert ("Binary", "r") in needs("PATCH", "DocumentReference/1", body=patch)
    assert ("Binary", "r") not in needs("POST", "DocumentReference", body=document("1"))  # inline bytes
    elsewhere = document("1", content=[{"attachment": linked(b"x", "https://elsewhere.example/doc.pdf")}])
    assert ("Binary", "r") not in needs("POST", "DocumentReference", body=elsewhere)


def bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_batch_and_transaction_entries_need_what_each_needs():
    doc = document("1")
    doc["subject"] = {"reference": "Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|" + INS}
    body = bundle("transaction",
                  {"request": {"method": "POST", "url": "DocumentReference"}, "resource": doc},
                  {"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x"},
                   "resource": patient(INS)},
                  {"request": {"method": "HEAD", "url": f"{BASE}/Binary/1"}},
                  {"request": {"method": "GET", "url": "List?_has:AuditEvent:entity:action=R"}})
    wanted = needs("POST", "", body=body)
    assert {("DocumentReference", "c"), ("Patient", "s"), ("Patient", "r"), ("Patient", "c"),
            ("Binary", "r"), ("List", "s"), ("AuditEvent", "s")} <= wanted
    linked = {"request": {"method": "POST", "url": "DocumentReference"}, "resource": doc}
    assert ("Patient", "s") in needs("POST", "", body=bundle("transaction", linked))
    assert ("Patient", "s") not in needs("POST", "", body=bundle("batch", linked))  # a batch resolves none


@pytest.fixture
def dmp(client: FhirTestClient) -> dict:
    gp = [{"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810001234567"}}]
    pid = json_of(client.post("Patient", patient(INS, generalPractitioner=gp)))["id"]
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "c2VjcmV0IGJ5dGVz"}  # "secret bytes"
    return {"p": pid, "d": json_of(client.post("DocumentReference", document(pid)))["id"],
            "b": json_of(client.post("Binary", binary))["id"]}


def linked_document(pid: str) -> dict:
    doc = document(pid)
    doc["subject"] = {"reference": f"Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|{INS}"}
    return doc


ATTEMPTS = [
    # (name, scope, method, path, body, headers, the scope the 403 names)
    ("chain into Patient", "system/DocumentReference.rs", "GET", f"DocumentReference?patient.identifier={INS}",
     None, {}, "system/Patient.s"),
    ("chain in a form-encoded _search", "system/DocumentReference.rs", "POST", "DocumentReference/_search",
     "patient.name=martin", {}, "system/Patient.s"),
    ("nested _has", "system/Patient.rs system/DocumentReference.rs", "GET",
     "Patient?_has:DocumentReference:patient:_has:AuditEvent:entity:action=R", None, {}, "system/AuditEvent.s"),
    ("conditional create answering the match", "system/Patient.c", "POST", "Patient", "patient",
     {"If-None-Exist": f"identifier={INS}"}, "system/Patient.r"),
    ("get-or-create in the URL", "system/Patient.cs", "POST", f"Patient?identifier={INS}", "patient", {},
     "system/Patient.r"),
    ("a condition reaching AuditEvent", "system/Patient.cruds", "POST", "Patient", "patient",
     {"If-None-Exist": "_has:AuditEvent:entity:action=R"}, "system/AuditEvent.s"),
    ("conditional update", "system/DocumentReference.u", "PUT", "DocumentReference?_id={d}", "document", {},
     "system/DocumentReference.s"),
    ("conditional delete", "system/Patient.d", "DELETE", "Patient?identifier=nobody", None, {}, "system/Patient.s"),
    ("batch conditional create", "system/Patient.c", "POST", "", "batch", {}, "system/Patient.r"),
    ("transaction conditional reference", "system/DocumentReference.c", "POST", "", "transaction", {},
     "system/Patient.s"),
    ("attachment naming an existing Binary", "system/DocumentReference.c", "POST", "DocumentReference", "linked",
     {}, "system/Binary.r"),
    ("HEAD", "system/Patient.rs", "HEAD", "DocumentReference/{d}", None, {}, ""),
    ("instance history", "system/Patient.rs", "GET", "DocumentReference/{d}/_history", None, {},
     "system/DocumentReference.r"),
    ("vread", "system/Patient.rs", "GET", "DocumentReference/{d}/_history/1", None, {},
     "system/DocumentReference.r"),
    ("type history", "system/DocumentReference.r", "GET", "DocumentReference/_history", None, {},
     "system/DocumentReference.s"),
    ("system history", "system/Patient.rs system/DocumentReference.rs", "GET", "_history", None, {},
     "system/*.s"),
    ("$everything", "system/Patient.rs", "GET", "Patient/{p}/$everything", None, {}, "system/*.r"),
    ("$validate", "system/Patient.rs", "POST", "DocumentReference/$validate", "document", {},
     "system/DocumentReference.r"),
    ("ITI-68 Binary read under a DocumentReference scope", "system/DocumentReference.rs", "GET", "Binary/x", None,
     {}, "system/Binary.r"),
    ("$vsm-status", "system/Patient.rs", "GET", "Patient/$vsm-status?older-than=6mo", None, {},
     "system/DocumentReference.s"),
    ("v1 read is no write", "system/*.read", "DELETE", "DocumentReference/{d}", None, {},
     "system/DocumentReference.d"),
    ("case variant", "System/*.cruds system/documentreference.rs", "GET", "DocumentReference/{d}", None, {},
     "system/DocumentReference.r"),
    ("wildcard level", "*/*.*", "GET", "DocumentReference/{d}", None, {}, "system/DocumentReference.r"),
    ("launch/patient", "launch/patient openid fhirUser", "GET", "Patient/{p}", None, {}, "system/Patient.r"),
]


def _body(kind: str | None, ids: dict) -> tuple[Any, str]:
    if kind is None:
        return None, "application/fhir+json"
    if kind == "patient":
        return patient(INS), "application/fhir+json"
    if kind == "document":
        return {**document(ids["p"]), "id": ids["d"]}, "application/fhir+json"
    if kind == "linked":
        return document(ids["p"], content=[{"attachment": linked(b"secret bytes", f"Binary/{ids['b']}")}]), \
            "application/fhir+json"
    if kind == "batch":
        return bundle("batch", {"request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={INS}"},
                                "resource": patient(INS)}), "application/fhir+json"
    if kind == "transaction":
        return bundle("transaction", {"request": {"method": "POST", "url": "DocumentReference"},
                                      "resource": linked_document(ids["p"])}), "application/fhir+json"
    return kind, "application/x-www-form-urlencoded"


@pytest.mark.parametrize(("name", "scope", "method", "path", "body", "headers", "named"), ATTEMPTS,
                         ids=[a[0] for a in ATTEMPTS])
def test_no_way_around_the_scope(client, database, dmp, name, scope, method, path, body, headers, named):
    payload, content_type = _body(body, dmp)
    url = path.format(**dmp)
    allowed = client.request(method, url, None if isinstance(payload, str) else payload, headers=headers,
                             content_type=content_type, raw=payload.encode() if isinstance(payload, str) else None)
    assert allowed.status_code < 500, allowed.get_data(as_text=True)  # the same request without a scope claim
    traced = len(events_of(database))
    attacker = client.as_(**SYSTEM, scope=scope)
    answer = attacker.request(method, url, None if isinstance(payload, str) else payload, headers=headers,
                              content_type=content_type, raw=payload.encode() if isinstance(payload, str) else None)
    assert answer.status_code == 403, (name, answer.get_data(as_text=True))
    challenge = answer.headers["WWW-Authenticate"]  # RFC 6750 3.1: why, and the scope the request needs
    assert challenge.startswith('Bearer realm="fhir-dmp", error="insufficient_scope", scope="'), challenge
    assert not named or challenge.endswith(f'scope="{named}"'), challenge
    if method != "HEAD":
        outcome = json_of(answer)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "forbidden"
        assert f"do not grant {named}:" in outcome["issue"][0]["diagnostics"], outcome
    assert len(events_of(database)) > traced  # the refusal is traced


def test_what_the_scope_covers_still_works(client, dmp):
    """The same requests with the scopes they need: the DMP rules answer (no over-refusal)."""
    reader = client.as_(**SYSTEM, scope="system/DocumentReference.rs system/Patient.s")
    assert reader.get(f"DocumentReference?patient.identifier={INS}").status_code == 200
    creator = client.as_(**SYSTEM, scope="system/Patient.crs")
    assert creator.post("Patient", patient(INS), headers={"If-None-Exist": f"identifier={INS}"}).status_code == 200
    feeder = client.as_(**SYSTEM, scope="system/DocumentReference.c system/Patient.s")
    transaction = bundle("transaction", {"request": {"method": "POST", "url": "DocumentReference"},
                                         "resource": linked_document(dmp["p"])})
    assert feeder.post("", transaction).status_code == 200


def test_metadata_stays_public_and_scopes_do_not_touch_it(client):
    assert client.get("metadata", auth=False).status_code == 200
    assert client.request("HEAD", "metadata", auth=False).status_code == 200
    assert client.as_(**SYSTEM, scope="").get("metadata").status_code == 200
    assert client.get("DocumentReference", auth=False).status_code == 401


def test_a_patient_scope_does_not_open_another_patient_s_dmp(client, dmp):
    other = "2800275123456"
    json_of(client.post("Patient", patient(other)))
    me = client.as_(actor="patient", sub=other, patient=other, scope="patient/*.cruds launch/patient")
    search = me.get(f"DocumentReference?patient={dmp['p']}&_total=accurate")  # the DMP rules: not their DMP
    assert search.status_code == 403 or json_of(search)["total"] == 0, search.get_data(as_text=True)
    assert me.get(f"DocumentReference/{dmp['d']}").status_code in (403, 404)
    assert me.get(f"Patient/{dmp['p']}/$everything").status_code in (403, 404)


def test_head_is_held_to_what_get_needs():
    assert needs_of(head_of("GET", "DocumentReference/1", BASE)) == [("DocumentReference", "r")]
