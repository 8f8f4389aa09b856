"""Property tests: random and mutated bodies thrown at the write endpoints.

Whatever arrives, the server must answer below 500, every error must be an OperationOutcome, and a
refused write must leave the store exactly as it was. SQLite only (speed); bounded example counts.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, document, json_of, patient, written

EXAMPLES = int(os.environ.get("FHIR_DMP_FUZZ_EXAMPLES", "150"))  # raise it for a deeper local run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])

SERVED = ["Patient", "DocumentReference", "Binary", "List", "Consent", "AuditEvent", "Composition",
          "Communication", "Practitioner", "PractitionerRole", "Organization", "Bundle", "OperationOutcome"]
UNKNOWN = ["Observation", "Foo", "patient", "", " Patient", "Patient ", "Parameters", "Resource",
           "DomainResource", "__proto__", "Patient/1"]
PATIENT_ELEMENTS = ["id", "meta", "implicitRules", "language", "text", "contained", "extension",
                    "modifierExtension", "identifier", "active", "name", "telecom", "gender", "birthDate",
                    "deceasedBoolean", "deceasedDateTime", "address", "maritalStatus", "multipleBirthBoolean",
                    "multipleBirthInteger", "photo", "contact", "communication", "generalPractitioner",
                    "managingOrganization", "link", "_birthDate", "_gender", "resourceType", "unknownThing"]

# -- strategies -------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
           | st.sampled_from(["", "1980-01-17", "female", "2026-13-45", "urn:uuid:x", "Patient/1", "\x00",
                              "\u202e", "true", "null", "0", "a" * 300]))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.sampled_from(PATIENT_ELEMENTS), children, max_size=4),
    max_leaves=25,
)


@st.composite
def typed_objects(draw: st.DrawFn) -> dict:
    """A random object that claims to be a resource (served or not)."""
    body = draw(st.dictionaries(st.sampled_from(PATIENT_ELEMENTS) | st.text(max_size=10), json_values,
                                max_size=6))
    body["resourceType"] = draw(st.sampled_from(SERVED + UNKNOWN) | json_values)
    return body


@st.composite
def mutated(draw: st.DrawFn, base: dict) -> dict:
    """A valid resource with a few random edits deep inside it."""
    resource = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = list(_paths(resource))
        if not paths:  # every element deleted: one to edit (the edits below read the value they change)
            resource["x"] = None
            paths = [(resource, "x")]
        container, key = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "delete", "wrap", "unwrap", "add", "empty", "null"]))
        if action == "set":
            container[key] = draw(json_values)
        elif action == "delete" and isinstance(container, dict):
            container.pop(key, None)
        elif action == "wrap":
            container[key] = [container[key]]
        elif action == "unwrap" and isinstance(container[key], list) and container[key]:
            container[key] = container[key][0]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(PATIENT_ELEMENTS) | st.text(max_size=8))] = draw(json_values)
        elif action == "empty":
            container[key] = type(container[key])() if isinstance(container[key], (dict, list, str)) else ""
        elif action == "null":
            container[key] = None
    return resource


def _paths(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) for every value inside a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield node, key
        yield from _paths(value)


printable = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=30)
short_text = printable | printable | st.text(min_size=1, max_size=30)  # mostly valid, sometimes anything
plausible_patients = st.builds(
    lambda ins, system, family, given, gender, birth, active: {
        "resourceType": "Patient", "identifier": [{"system": system, "value": ins}], "active": active,
        "name": [{"family": family, "given": given}], "gender": gender, "birthDate": birth},
    ins=st.text(alphabet="0123456789", min_size=1, max_size=20) | short_text,
    system=st.sampled_from(["urn:oid:1.2.250.1.213.1.4.10", "urn:oid:1.2.250.1.213.1.4.8"]) | short_text,
    family=short_text, given=st.lists(short_text, min_size=1, max_size=3),
    gender=st.sampled_from(["male", "female", "other", "unknown"]),
    birth=st.dates().map(lambda d: d.isoformat()) | st.sampled_from(["1980", "1980-01", "2026-02-29"]),
    active=st.booleans(),
)
patients = plausible_patients | plausible_patients | mutated(patient()) | typed_objects() | json_values


def documents(pid: str) -> st.SearchStrategy:
    plausible = st.builds(
        lambda title, code, size, status: document(pid, status=status, description=title,
                                                   type={"coding": [{"system": "http://loinc.org", "code": code}]},
                                                   content=[{"attachment": {"contentType": "text/plain",
                                                                            "data": "Q29tcHRlIHJlbmR1",
                                                                            "size": size, "title": title}}]),
        title=short_text, code=short_text, size=st.integers(min_value=-1, max_value=2**31),
        status=st.sampled_from(["current", "superseded", "entered-in-error", "draft"]))
    return plausible | plausible | mutated(document(pid)) | typed_objects() | json_values


PATCH_PATHS = ["/gender", "/name/0/family", "/name/-", "/name", "/id", "/resourceType", "/meta/versionId",
               "/meta", "", "/", "/identifier/0", "/identifier/0/value", "/birthDate", "/nope/deeper",
               "/name/99", "/name/-1", "/~1", "/~2", "/active", "/extension"]
patch_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]) | json_values},
    optional={"path": st.sampled_from(PATCH_PATHS) | st.text(max_size=10) | json_values,
              "from": st.sampled_from(PATCH_PATHS) | json_values,
              "value": json_values},
)
plausible_ops = st.fixed_dictionaries({
    "op": st.sampled_from(["add", "replace", "remove", "test"]),
    "path": st.sampled_from(["/gender", "/name/0/family", "/name/-", "/active", "/birthDate", "/telecom",
                             "/name/0/given/0"]),
    "value": st.sampled_from(["male", "female", "X", True, "1990-05-05", [{"system": "phone", "value": "0102"}],
                              {"family": "Y"}]) | printable,
})
patch_docs = st.lists(plausible_ops | plausible_ops | patch_ops, max_size=4) | json_values


@st.composite
def bundles(draw: st.DrawFn, pid: str) -> Any:
    entries = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        method = draw(st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "TRACE"]) | json_values)
        url = draw(st.sampled_from(["Patient", f"Patient/{pid}", "DocumentReference", "Foo", "", "Patient?x=1",
                                    "http://elsewhere/fhir/Patient", f"Patient/{pid}/_history/1", "$everything",
                                    "Patient?identifier=1800175123456"]) | json_values)
        resource = draw(mutated(patient()) | mutated(document(pid)) | typed_objects() | json_values | st.none())
        entry: dict = {"request": {"method": method, "url": url}}
        if draw(st.booleans()):
            entry["request"]["ifNoneExist"] = draw(st.sampled_from(["identifier=1800175123456", "", "foo=bar",
                                                                     "identifier="]) | json_values)
        if resource is not None:
            entry["resource"] = resource
        if draw(st.booleans()):
            entry["fullUrl"] = draw(st.sampled_from(["urn:uuid:3c0e5d9e-1f6a-4c4e-8b7a-2d9f0e1a2b3c",
                                                     f"Patient/{pid}", "", "not a url"]) | json_values)
        entries.append(draw(st.just(entry) | json_values))
    bundle: Any = {"resourceType": "Bundle", "type": draw(st.sampled_from(["transaction", "batch"]) | json_values),
                   "entry": entries}
    return draw(st.just(bundle) | mutated(bundle) | json_values)


# -- fixture and checks -----------------------------------------------------------------------


class Target:
    def __init__(self, client: FhirTestClient, db: Database, pid: str) -> None:
        self.client, self.db, self.pid = client, db, pid

    def versions(self) -> int:
        return written(self.db)

    def check(self, method: str, path: str, body: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        before = self.versions()
        if body is not None and "raw" not in kw:
            try:
                kw["raw"] = fhirjson.dumps(body).encode()
            except (ValueError, TypeError, RecursionError):
                return None
        response = self.client.request(method, path, **kw)
        with contextlib.suppress(InvalidArgument):  # outside @given there is nothing to record
            event(f"{method} -> {response.status_code}")
        assert response.status_code < 500, (response.status_code, response.data, body)
        if response.status_code >= 400:
            assert response.headers.get("Content-Type", "").startswith("application/fhir+json"), response.headers
            outcome = json_of(response)
            assert outcome["resourceType"] == "OperationOutcome", outcome
            assert outcome["issue"] and all(i.get("code") and i.get("severity") for i in outcome["issue"])
            assert self.versions() == before, f"a refused {method} {path} wrote something: {body!r}"
        elif response.status_code in (200, 201) and method in ("POST", "PUT", "PATCH") and path != "/fhir":
            location = response.headers.get("Location")
            assert location, response.headers
            # what was accepted can be read back, and it is what the server answered
            stored = self.client.get(location.split("/fhir/", 1)[1])
            assert stored.status_code == 200, stored.data
            assert json_of(stored) == json_of(response)
        return response


@pytest.fixture
def target(tmp_path) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'fuzz.db'}")
    upgrade(db)
    app = create_app(Settings(database_url=db.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024), database=db)
    client = FhirTestClient(app.test_client(), SECRET)
    created = client.post("Patient", patient())
    assert created.status_code == 201
    yield Target(client, db, json_of(created)["id"])
    db.dispose()


# -- properties -------------------------------------------------------------------------------


@FUZZ
@given(body=patients)
def test_post_patient_never_breaks(target, body):
    target.check("POST", "Patient", body)


@FUZZ
@given(body=patients, keep_id=st.booleans())
def test_put_patient_never_breaks(target, body, keep_id):
    if keep_id and isinstance(body, dict):
        body = {**body, "id": target.pid}
    target.check("PUT", f"Patient/{target.pid}", body)


@FUZZ
@given(data=st.data())
def test_post_document_reference_never_breaks(target, data):
    target.check("POST", "DocumentReference", data.draw(documents(target.pid)))


@FUZZ
@given(ops=patch_docs)
def test_patch_never_breaks(target, ops):
    target.check("PATCH", f"Patient/{target.pid}", ops, content_type="application/json-patch+json")


@FUZZ
@given(data=st.data())
def test_bundle_never_breaks(target, data):
    target.check("POST", "/fhir", data.draw(bundles(target.pid)))


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       content_type=st.sampled_from(["application/fhir+json", "application/json", "application/fhir+xml",
                                     "application/json-patch+json", "text/plain",
                                     "application/fhir+json; charset=latin-1"]))
def test_random_bytes_never_break(target, raw, content_type):
    for method, path in (("POST", "Patient"), ("PUT", f"Patient/{target.pid}"), ("POST", "/fhir"),
                         ("PATCH", f"Patient/{target.pid}")):
        target.check(method, path, raw=raw, content_type=content_type)


# -- hand-picked nasties ----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [50, 200, 900, 5000])
def test_deeply_nested_bodies_are_refused_cleanly(target, depth):
    nested = "[" * depth + "]" * depth
    for template in ('{"resourceType":"Patient","extension":%s}', '{"resourceType":"Patient","name":[{"given":%s}]}',
                     '{"resourceType":"Bundle","type":"transaction","entry":%s}'):
        raw = (template % nested).encode()
        target.check("POST", "Patient" if "Patient" in template else "/fhir", raw=raw)
        target.check("PUT", f"Patient/{target.pid}", raw=raw)
    deep_object = '{"a":' * depth + "1" + "}" * depth
    target.check("POST", "Patient", raw=('{"resourceType":"Patient","extension":[' + deep_object + "]}").encode())
    target.check("PATCH", f"Patient/{target.pid}",
                 raw=('[{"op":"add","path":"/extension","value":' + deep_object + "}]").encode(),
                 content_type="application/json-patch+json")


@pytest.mark.parametrize("raw", [
    b'{"resourceType":"Patient","multipleBirthInteger":NaN}',
    b'{"resourceType":"Patient","multipleBirthInteger":Infinity}',
    b'{"resourceType":"Patient","multipleBirthInteger":-Infinity}',
    b'{"resourceType":"Patient","multipleBirthInteger":1e400}',
    b'{"resourceType":"Patient","multipleBirthInteger":99999999999999999999999999999}',
    b'{"resourceType":"Patient","multipleBirthInteger":1.0}',
    b'{"resourceType":"Patient","gender":"female","gender":"male"}',
    b'{"resourceType":"Patient","birthDate":"1980-01-17\\u0000"}',
    b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
    b'\xef\xbb\xbf{"resourceType":"Patient"}',
    b'{"resourceType":"Patient"} trailing',
    b'{"resourceType":"Patient",}',
    b'[{"resourceType":"Patient"}]',
    b'"Patient"',
    b'null',
    b'   ',
])
def test_odd_json_is_never_a_500(target, raw):
    target.check("POST", "Patient", raw=raw)
    target.check("PUT", f"Patient/{target.pid}", raw=raw)


def test_nan_is_never_stored(target):
    """NaN/Infinity are not JSON: whatever the parser does, nothing non-JSON may reach the store."""
    for raw in (b'{"resourceType":"Patient","multipleBirthInteger":NaN}',
                b'{"resourceType":"Patient","extension":[{"url":"http://x","valueDecimal":Infinity}]}'):
        response = target.check("POST", "Patient", raw=raw)
        assert response is not None and response.status_code == 400, response.data


# -- control characters, on every backend (PostgreSQL refuses NUL in text: it must be a 422, not a 500) --

CONTROL_PATIENTS = [
    pytest.param(patient("18001751\u000023456"), id="NUL-in-identifier-value"),
    pytest.param(patient(identifier=[{"system": "urn:x\u0000", "value": "1"}]), id="NUL-in-identifier-system"),
    pytest.param(patient(name=[{"family": "MA\u0000RTIN"}]), id="NUL-in-name"),
    pytest.param(patient(name=[{"family": "MA\u0001RTIN"}]), id="SOH-in-name"),
    pytest.param(patient(name=[{"family": "MARTIN\u001b[31m"}]), id="ESC-in-name"),
    pytest.param(patient(gender="fe\u0000male"), id="NUL-in-code"),
    pytest.param(patient(extension=[{"url": "http://x", "valueString": "a\u0007b"}]), id="BEL-in-extension"),
]


@pytest.mark.parametrize("body", CONTROL_PATIENTS)
def test_control_characters_are_refused_on_every_backend(client, app, body):
    db = app.extensions["fhir_dmp"]["db"]
    target = Target(client, db, "")
    response = target.check("POST", "Patient", body)
    assert response is not None and response.status_code == 422, response.data  # parsed, but not valid R4
    assert json_of(response)["issue"][0]["code"] == "value"


def test_tab_cr_lf_are_allowed_in_strings(client):
    name = {"family": "MARTIN", "given": ["Claire"], "text": "Claire\tMARTIN\r\nnée X"}
    response = client.post("Patient", patient(name=[name]))
    assert response.status_code == 201, response.data


@pytest.mark.parametrize("path", [
    "Patient?identifier=1%002",
    "Patient?identifier=urn:oid:1.2.250.1.213.1.4.10|18001751%0023456",
    "Patient?_id=a%00b",
    "DocumentReference?patient=Patient/a%00b",
    "Patient?ident%00ifier=1",
])
def test_nul_in_search_is_a_400_on_every_backend(client, path):
    response = client.get(path)
    assert response.status_code == 400, response.data
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_nul_in_conditions_is_a_400_on_every_backend(client, app):
    db = app.extensions["fhir_dmp"]["db"]
    target = Target(client, db, "")
    response = target.check("POST", "Patient", patient(), headers={"If-None-Exist": "identifier=1%002"})
    assert response is not None and response.status_code == 400
    for method in ("PUT", "DELETE"):
        response = target.check(method, "Patient?identifier=1%002", patient() if method == "PUT" else None)
        assert response is not None and response.status_code == 400, (method, response.data)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": document("x"), "request": {"method": "POST", "url": "DocumentReference"}}]}
    bundle["entry"][0]["resource"]["subject"] = {"reference": "Patient?identifier=1%002"}
    response = target.check("POST", "/fhir", bundle)
    assert response is not None and response.status_code in (400, 412), response.data


# -- the ends of the calendar and odd digits, on every backend --------------------------------

EDGE_DATES = [
    pytest.param({"birthDate": "9999-12-31"}, id="birthDate-9999-12-31"),
    pytest.param({"birthDate": "9999-12"}, id="birthDate-9999-12"),
    pytest.param({"birthDate": "9999"}, id="birthDate-9999"),
    pytest.param({"birthDate": "0001-01-01"}, id="birthDate-0001-01-01"),
    pytest.param({"deceasedDateTime": "9999-12-31T23:59:59+00:00"}, id="deceased-last-second"),
    pytest.param({"deceasedDateTime": "9999-12-31T23:59:59-14:00"}, id="deceased-past-the-end-in-UTC"),
    pytest.param({"deceasedDateTime": "0001-01-01T00:00:00+14:00"}, id="deceased-before-the-start-in-UTC"),
]


@pytest.mark.parametrize("extra", EDGE_DATES)
def test_valid_dates_at_the_ends_of_the_calendar_are_stored_and_found(client, extra):
    created = client.post("Patient", patient(**extra))
    assert created.status_code == 201, created.data
    pid = json_of(created)["id"]
    if "birthDate" in extra:
        found = json_of(client.get(f"Patient?birthdate={extra['birthDate']}"))
        assert [e["resource"]["id"] for e in found.get("entry", []) if e["search"]["mode"] == "match"] == [pid]


@pytest.mark.parametrize("query", [
    "Patient?birthdate=lt9999-12-31", "Patient?birthdate=ge9999-12-31", "Patient?birthdate=ap0001",
    "Patient?birthdate=ap9998", "Patient?birthdate=ap9999-12-31T23:59:59-14:00", "Patient?birthdate=9999",
    "Patient?death-date=gt9999-12-31T23:59:59Z", "Patient?_lastUpdated=gt9999-12-31T23:59:59Z",
    "Patient?_lastUpdated=ap0001", "Patient?_lastUpdated=le0001-01-01T00:00:00%2B14:00",
    "Patient/_history?_since=9999-12-31T23:59:59-14:00", "Patient/_history?_since=0001-01-01T00:00:00%2B14:00",
])
def test_searches_at_the_ends_of_the_calendar_answer(client, query):
    response = client.get(query)
    assert response.status_code == 200, response.data
    assert json_of(response)["resourceType"] == "Bundle"


@pytest.mark.parametrize("query", [
    "Patient?_count=%C2%B2", "Patient?_cursor=%C2%B2", "Patient?_cursor=99999999999999999999999",
    "Patient/_history?_count=%C2%B2", "Patient/_history?_cursor=%C2%B2",
    "Patient/_history?_cursor=99999999999999999999999", "_history?_cursor=-1",
])
def test_odd_numbers_in_queries_are_a_400(client, query):
    response = client.get(query)
    assert response.status_code == 400, response.data
    assert json_of(response)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("version", ["%C2%B2", "99999999999999999999999", "2147483648", "%D9%A3"])
def test_odd_version_ids_are_a_404(client, version):
    pid = json_of(client.post("Patient", patient()))["id"]
    response = client.get(f"Patient/{pid}/_history/{version}")
    assert response.status_code == 404, response.data
    assert json_of(response)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("etag", ['W/"\u00b2"', '"\u0663"', 'W/"99999999999999999999999"', "W/", '""', "*x"])
def test_odd_etags_never_break(client, app, etag):
    pid = json_of(client.post("Patient", patient()))["id"]
    target = Target(client, app.extensions["fhir_dmp"]["db"], pid)
    put = target.check("PUT", f"Patient/{pid}", {**patient(), "id": pid}, headers={"If-Match": etag})
    assert put is not None and put.status_code in (400, 412), put.data
    read = client.get(f"Patient/{pid}", headers={"If-None-Match": etag})
    assert read.status_code in (200, 400), read.data
    delete = target.check("DELETE", f"Patient/{pid}", headers={"If-Match": etag})
    assert delete is not None and delete.status_code in (400, 412), delete.data


# -- random query strings (SQLite) ------------------------------------------------------------

QUERY_NAMES = ["_count", "_cursor", "_total", "_sort", "_summary", "_elements", "_include", "_revinclude", "_id",
               "_lastUpdated", "identifier", "identifier:not", "identifier:of-type", "name", "name:exact",
               "family:contains", "birthdate", "birthdate:missing", "gender", "general-practitioner",
               "general-practitioner:Practitioner", "general-practitioner.identifier", "organization.name",
               "_has:DocumentReference:patient:status", "death-date", "telecom", "address-postalcode", "x"]
query_values = (st.text(max_size=25)
                | st.sampled_from(["", ",", "|", "\\", "\\,", "ge", "ap", "eq2026", "gt2026-02-30", "9999-12-31",
                                   "0001-01-01T00:00:00+14:00", "-1", "1e3", "true", "Patient/", "Patient/x/y",
                                   "urn:oid:1.2.250.1.213.1.4.10|", "|x", "a|b|c", "2026-01-01T25:00:00Z"])
                | st.from_regex(r"\A(eq|ne|gt|lt|ge|le|sa|eb|ap)?[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?\Z"))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | st.text(max_size=12), query_values),
                      min_size=1, max_size=4),
       where=st.sampled_from(["Patient", "DocumentReference", "Patient/_history", "_history", "Practitioner"]),
       strict=st.booleans())
def test_random_queries_never_break(target, pairs, where, strict):
    from urllib.parse import urlencode

    headers = {"Prefer": "handling=strict"} if strict else {}
    response = target.check("GET", f"{where}?{urlencode(pairs)}", headers=headers)
    assert response is not None
    if response.status_code == 200:
        assert json_of(response)["resourceType"] == "Bundle"


# -- tampered paging cursors, on every backend ------------------------------------------------


def _next_cursor(client: FhirTestClient, query: str) -> dict:
    import base64
    from urllib.parse import parse_qsl, urlsplit

    bundle = json_of(client.get(query))
    link = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    cursor = dict(parse_qsl(urlsplit(link).query))["_cursor"]
    return fhirjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def _encode_cursor(doc: dict) -> str:
    import base64

    return base64.urlsafe_b64encode(fhirjson.dumps(doc).encode()).decode().rstrip("=")


@pytest.mark.parametrize("sort", ["", "family", "-birthdate", "_lastUpdated"])
def test_tampered_cursors_are_a_400(client, sort):
    for i in range(3):
        body = patient(f"180017512345{i}", name=[{"family": f"F{i}", "given": ["A"]}])
        assert client.post("Patient", body).status_code == 201
    query = "Patient?_count=1" + (f"&_sort={sort}" if sort else "")
    genuine = _next_cursor(client, query)
    assert client.get(f"{query}&_cursor={_encode_cursor(genuine)}").status_code == 200
    tampered = [{**genuine, "pk": 10**30}, {**genuine, "pk": 2**63}, {**genuine, "pk": -1}, {**genuine, "pk": 1.5},
                {**genuine, "pk": True}, {**genuine, "pk": "1"}, {**genuine, "v": 99}, {**genuine, "d": "z"},
                {**genuine, "s": "gender"}, {**genuine, "k": [None, None]}]
    if genuine.get("k"):
        tampered += [{**genuine, "k": ["a\u0000b"]}, {**genuine, "k": [5]}, {**genuine, "k": ["x" * 2000]}]
    for doc in tampered:
        response = client.get(f"{query}&_cursor={_encode_cursor(doc)}")
        assert response.status_code == 400, (doc, response.data)
        assert json_of(response)["resourceType"] == "OperationOutcome"
    for raw in ["", "!!!", "e30", "x" * 5000, "%00"]:
        response = client.get(f"{query}&_cursor={raw}")
        assert response.status_code in (200, 400), (raw, response.data)  # an empty cursor may mean "first page"


@pytest.mark.parametrize("kind", ["batch", "transaction"])
@pytest.mark.parametrize("request_", [
    {"method": ["POST"], "url": "Patient"}, {"method": {"POST": 1}, "url": "Patient"},
    {"method": None, "url": "Patient"}, {"method": "POST", "url": ["Patient"]}, {"method": "post", "url": "Patient"},
    {"method": "POST"}, [], "POST Patient",
], ids=repr)
def test_malformed_entry_requests_are_refused_cleanly(target, kind, request_):
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [{"resource": patient("1800175000009"),
                                                                   "request": request_}]}
    response = target.check("POST", "/fhir", bundle)
    assert response is not None
    if kind == "transaction":
        assert response.status_code == 400, response.data
    else:  # a batch answers 200, with the entry's own 400
        assert response.status_code in (200, 400), response.data
        if response.status_code == 200:
            assert json_of(response)["entry"][0]["response"]["status"].startswith("400")
