"""Property tests on the whole request: odd URLs (percent-encodings, NULs, invalid UTF-8), junk in the headers
that steer a request (Accept, Content-Type, Prefer, If-Match, If-None-Exist, If-None-Match), and bodies with a
wrong JSON type at any element of a Patient or a DocumentReference, sent as JSON or as XML.

Whatever arrives: never a 5xx, and every error is an OperationOutcome in a FHIR format. SQLite (speed); bounded
example counts (FHIR_DMP_FUZZ_EXAMPLES raises them; the CI profile replays a fixed sequence, tests/conftest.py).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.http import fhirxml
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, document, json_of, patient

EXAMPLES = int(os.environ.get("FHIR_DMP_FUZZ_EXAMPLES", "150")) // 3  # several properties, each its share
FUZZ = settings(max_examples=max(EXAMPLES, 20), deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture
def fuzz_client(tmp_path) -> Iterator[tuple[FhirTestClient, str]]:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'fuzz.db'}")
    upgrade(db)
    app = create_app(Settings(database_url=db.url, jwt_secret=SECRET, max_body_bytes=256 * 1024), database=db)
    client = FhirTestClient(app.test_client(), SECRET)
    created = client.post("Patient", patient())
    assert created.status_code == 201
    yield client, json_of(created)["id"]
    db.dispose()


def _check(response: Any, what: Any) -> None:
    """Below 500; an error is an OperationOutcome, in JSON or XML as its Content-Type says."""
    assert response.status_code < 500, (response.status_code, response.data[:500], what)
    if response.status_code < 400:
        return
    media = response.headers.get("Content-Type", "")
    if media.startswith("application/fhir+xml"):
        body = fhirxml.xml_to_json(response.data)
    else:
        assert media.startswith("application/fhir+json"), (media, response.data[:300], what)
        body = json_of(response)
    assert body.get("resourceType") == "OperationOutcome", (body, what)
    assert body.get("issue") and all(i.get("code") and i.get("severity") for i in body["issue"]), body


# -- URLs ---------------------------------------------------------------------------------------------------------

ODD = ["\x00", "\x01", "\x1b", "\x7f", "\ufffe", "\uffff", "\u202e", "%", "%%", "%zz", "%00", "%C0%80", "%ED%A0%80",
       "%EF%BF%BE", "%FF", "..", "/", "//", "?", "#", "&", "=", ";", ",", "|", "$", ":", "*", " ", "+", "\\", "'",
       '"', "<", ">", "{", "}", "[", "]", "_history", "$validate", "$everything", "_search", "metadata", "é"]
SEGMENTS = ["Patient", "DocumentReference", "Binary", "List", "Bundle", "AuditEvent", "Observation", "x", "",
            "_history", "1", "$validate", "$document", "$close", "_search", "metadata", "Patient$validate"]
raw_bytes = st.binary(max_size=12).map(lambda b: quote_from_bytes(b, safe=""))  # any byte, invalid UTF-8 too
odd_text = st.lists(st.sampled_from(ODD) | st.text(max_size=4) | raw_bytes, max_size=4).map("".join)
paths = st.lists(st.sampled_from(SEGMENTS) | odd_text, min_size=1, max_size=4).map("/".join)
PARAMS = ["_id", "identifier", "name", "_count", "_sort", "_include", "_revinclude", "_format", "_summary",
          "_elements", "patient", "subject", "_has:DocumentReference:patient:status", "date", "_cursor", "_pretty"]
queries = st.lists(st.tuples(st.sampled_from(PARAMS) | odd_text, odd_text), max_size=4).map(
    lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


@FUZZ
@given(path=paths, query=queries, method=st.sampled_from(["GET", "GET", "DELETE", "POST", "HEAD"]),
       fmt=st.sampled_from(["application/fhir+json", "application/fhir+xml"]))
def test_odd_urls_never_break(fuzz_client, path, query, method, fmt):
    client, _ = fuzz_client
    url = "/fhir/" + path.lstrip("/") + (f"?{query}" if query else "")
    response = client.request(method, url, headers={"Accept": fmt},
                              raw=b"{}" if method == "POST" else None)
    if method != "HEAD":
        _check(response, url)


# -- headers ------------------------------------------------------------------------------------------------------

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30)
ACCEPTS = ["application/fhir+json", "application/fhir+xml", "application/json", "application/xml", "*/*", "text/html",
           "application/fhir+json;fhirVersion=3.0", "application/fhir+xml;q=0", "application/*;q=0.5, */*;q=0.1"]
CONTENT_TYPES = ["application/fhir+json", "application/fhir+xml", "application/json-patch+json", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/fhir+json;"
                 "charset=latin-1", "application/fhir+json; charset=utf-16"]
PREFERS = ["return=minimal", "return=representation", "return=OperationOutcome", "handling=strict",
           "handling=lenient", "respond-async", "return=", "=", ","]
CONDITIONS = ["identifier=1", "identifier=urn:oid:1.2.250.1.213.1.4.10|1800175123456", "x=%00", "_id=", "&&",
              "W/\"1\"", "*", "\"1\"", "W/", "identifier"]


@FUZZ
@given(method=st.sampled_from(["POST", "PUT", "PATCH", "GET", "DELETE"]),
       accept=st.sampled_from(ACCEPTS) | header_text, content_type=st.sampled_from(CONTENT_TYPES) | header_text,
       prefer=st.sampled_from(PREFERS) | header_text, if_match=st.sampled_from(CONDITIONS) | header_text,
       if_none_exist=st.sampled_from(CONDITIONS) | header_text,
       if_none_match=st.sampled_from(CONDITIONS) | header_text, with_id=st.booleans())
def test_junk_headers_never_break(fuzz_client, method, accept, content_type, prefer, if_match, if_none_exist,
                                  if_none_match, with_id):
    client, pid = fuzz_client
    headers = {"Accept": accept, "Prefer": prefer, "If-Match": if_match, "If-None-Exist": if_none_exist,
               "If-None-Match": if_none_match}
    body = patient(id=pid) if with_id else patient("2800175123457")
    raw = fhirjson.dumps(body).encode()
    if method == "PATCH":
        raw = b'[{"op":"replace","path":"/gender","value":"male"}]'
    path = f"Patient/{pid}" if with_id or method == "PATCH" else "Patient"
    response = client.request(method, path, raw=None if method in ("GET", "DELETE") else raw,
                              content_type=content_type, headers=headers)
    _check(response, headers)


# -- bodies: a wrong JSON type anywhere in a Patient or a DocumentReference, as JSON or XML -----------------------

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["\x00", "\ufffe", "\ud800", "", "1980-13-01", "urn:uuid:x"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def _places(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            if not path and key == "resourceType":
                continue
            yield from _places(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _places(value, (*path, i))


def _replaced(base: dict, where: tuple, value: Any) -> dict:
    body = copy.deepcopy(base)
    node = body
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return body


@st.composite
def wrong_bodies(draw: st.DrawFn, pid: str) -> tuple[str, dict]:
    base = draw(st.sampled_from([patient("2800175123457"), document(pid)]))
    body = base
    for _ in range(draw(st.integers(1, 2))):
        where = draw(st.sampled_from(list(_places(body))))
        body = _replaced(body, where, draw(junk))
    return base["resourceType"], body


def _encoded(body: dict, as_xml: bool) -> tuple[bytes, str] | None:
    if as_xml:
        try:
            return fhirxml.json_to_xml(body), "application/fhir+xml"
        except FhirError:  # wrong types often have no XML form: the JSON then
            pass
    try:
        return fhirjson.dumps(body).encode("utf-8", "surrogatepass"), "application/fhir+json"
    except (TypeError, ValueError):
        return None


@FUZZ
@given(data=st.data(), as_xml=st.booleans(), accept_xml=st.booleans(),
       where=st.sampled_from(["create", "update", "validate", "transaction"]))
def test_wrong_json_types_anywhere_never_break(fuzz_client, data, as_xml, accept_xml, where):
    client, pid = fuzz_client
    rtype, body = data.draw(wrong_bodies(pid))
    accept = {"Accept": "application/fhir+xml" if accept_xml else "application/fhir+json"}
    if where == "transaction":
        body = {"resourceType": "Bundle", "type": "transaction",
                "entry": [{"resource": body, "request": {"method": "POST", "url": rtype}}]}
    encoded = _encoded(body, as_xml)
    if encoded is None:
        return
    raw, media = encoded
    path = {"create": rtype, "update": f"{rtype}/{pid}", "validate": f"{rtype}/$validate", "transaction": "/fhir"}
    method = "PUT" if where == "update" else "POST"
    _check(client.request(method, path[where], raw=raw, content_type=media, headers=accept), body)


xml_names = st.sampled_from(["Patient", "DocumentReference", "name", "family", "value", "given", "extension",
                             "identifier", "div", "x", "Bundle", "entry", "resource"])


@st.composite
def random_xml(draw: st.DrawFn) -> bytes:
    def element(depth: int) -> str:
        name = draw(xml_names)
        attrs = "".join(f' {draw(st.sampled_from(["value", "url", "id", "xmlns"]))}="'
                        f'{draw(st.sampled_from(["", "1", "&#1;", "&#xFFFE;", "&amp;", "http://hl7.org/fhir", "x"]))}"'
                        for _ in range(draw(st.integers(0, 2))))
        if depth > 3 or draw(st.booleans()):
            return f"<{name}{attrs}/>"
        children = "".join(element(depth + 1) for _ in range(draw(st.integers(0, 3))))
        return f"<{name}{attrs}>{children}</{name}>"

    root = draw(st.sampled_from(["Patient", "DocumentReference", "Bundle", "Parameters"]))
    inner = "".join(element(1) for _ in range(draw(st.integers(0, 4))))
    text = f'<{root} xmlns="http://hl7.org/fhir">{inner}</{root}>'
    return draw(st.sampled_from([text, text[: draw(st.integers(0, len(text)))]])).encode()


@FUZZ
@given(raw=random_xml(), path=st.sampled_from(["Patient", "DocumentReference", "Patient/$validate", "/fhir"]),
       accept_xml=st.booleans())
def test_random_xml_never_breaks(fuzz_client, raw, path, accept_xml):
    client, _ = fuzz_client
    accept = {"Accept": "application/fhir+xml" if accept_xml else "application/fhir+json"}
    _check(client.request("POST", path, raw=raw, content_type="application/fhir+xml", headers=accept), raw)
