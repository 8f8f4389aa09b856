"""Inputs that used to get past the checks or break the answer: a chunked body over the size limit, characters no
FHIR string (and no XML document) may hold, error messages echoing such characters, `$validate` on wrong JSON
types."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from fhir_dmp import fhirjson
from fhir_dmp.http import fhirxml
from fhir_dmp.http.render import serialise
from tests.fhirclient import document, json_of, patient, written

LIMIT = 1024 * 1024  # tests/conftest.py's settings
XML = "application/fhir+xml"


def _outcome(response: Any, fmt: str = "json") -> dict:
    assert response.content_type.startswith(f"application/fhir+{fmt}"), (response.content_type, response.data)
    body = json_of(response) if fmt == "json" else fhirxml.xml_to_json(response.data)
    assert body["resourceType"] == "OperationOutcome", body
    return body


# -- 2. a chunked body counts against the size limit ----------------------------------------------------------


def _padded_patient(padding: int) -> bytes:
    return fhirjson.dumps(patient()).encode() + b" " * padding


def _chunked(client, raw: bytes):  # type: ignore[no-untyped-def]
    """POST Patient with no Content-Length, as a server that decodes chunked input hands it to the app."""
    headers = {"Authorization": f"Bearer {client.token()}", "Content-Type": "application/fhir+json",
               "Accept": "application/fhir+json", "Transfer-Encoding": "chunked"}
    return client.http.open("/fhir/Patient", method="POST", input_stream=io.BytesIO(raw), headers=headers,
                            environ_overrides={"wsgi.input_terminated": True})


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_a_413_either_way(client, chunked):
    raw = _padded_patient(LIMIT)
    before = written(client)
    response = _chunked(client, raw) if chunked else client.post("Patient", raw=raw)
    assert response.status_code == 413, response.data
    assert _outcome(response)["issue"][0]["code"] == "too-costly"
    assert written(client) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_at_the_limit_is_read_whole(client, chunked):
    head = fhirjson.dumps(patient()).encode()
    raw = head + b" " * (LIMIT - len(head))
    assert len(raw) == LIMIT
    response = _chunked(client, raw) if chunked else client.post("Patient", raw=raw)
    assert response.status_code == 201, response.data


@pytest.fixture
def served(app) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """The app behind Werkzeug's own HTTP server, which decodes chunked bodies (loopback, a free port)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(timeout=10)


def _send_chunked(port: int, token: str, raw: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\nAccept: application/fhir+json\r\n"
                     b"Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for start in range(0, len(raw), 256 * 1024):
                chunk = raw[start:start + 256 * 1024]
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the server answered 413 and closed before the end
            pass
        answer = b""
        for _ in range(1000):  # bounded: until the whole answer (its Content-Length) or the connection's end
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            answer += data
            head, _, body = answer.partition(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if not data or (length is not None and len(body) >= length):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_chunked_body_over_the_limit_over_a_socket(client, served):
    before = written(client)
    status, body = _send_chunked(served, client.token(), _padded_patient(LIMIT * 2))
    assert status == 413, body[:300]
    assert fhirjson.loads(body)["resourceType"] == "OperationOutcome"
    assert written(client) == before
    status, body = _send_chunked(served, client.token(), _padded_patient(1000))
    assert status == 201, body[:300]


# -- 3. no control character, surrogate, U+FFFE or U+FFFF in a stored string ----------------------------------

UNCARRIABLE = ["\x00", "\x01", "\x0b", "\x1f", "\ufffe", "\uffff", "\ud800", "\udfff"]


def _name(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def _ascii(body: Any) -> bytes:
    """JSON with every non-ASCII character escaped: a lone surrogate travels as the escape `\\ud800`."""
    return json.dumps(body, ensure_ascii=True).encode()


def _refused(response: Any, expression: str, status: int = 422) -> None:
    assert response.status_code == status, response.data
    issues = _outcome(response)["issue"]
    assert any(expression in i.get("expression", []) and i["code"] == "value" for i in issues), issues


@pytest.mark.parametrize("ch", UNCARRIABLE, ids=_name)
def test_uncarriable_characters_are_refused_on_create_update_patch(client, ch):
    before = written(client)
    _refused(client.post("Patient", raw=_ascii(patient(name=[{"family": f"MA{ch}RTIN"}]))), "Patient.name[0].family")
    pid = json_of(client.post("Patient", patient()))["id"]
    before = written(client)
    _refused(client.put(f"Patient/{pid}", raw=_ascii(patient(id=pid, name=[{"family": "X", "given": [f"a{ch}"]}]))),
             "Patient.name[0].given[0]")
    ops = [{"op": "replace", "path": "/name/0/family", "value": f"X{ch}"}]
    _refused(client.patch(f"Patient/{pid}", raw=_ascii(ops)),
             "Patient.name[0].family", 422)  # the patch applies; its result is not a valid Patient
    doc = document(pid, description=f"compte rendu {ch}")
    _refused(client.post("DocumentReference", raw=_ascii(doc)), "DocumentReference.description")
    assert written(client) == before


@pytest.mark.parametrize("ch", ["\x00", "\ufffe", "\ud800"], ids=_name)
def test_uncarriable_characters_are_refused_in_transaction_entries(client, ch):
    before = written(client)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:3c0e5d9e-1f6a-4c4e-8b7a-2d9f0e1a2b3c", "resource": patient(),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient("2800175123457", extension=[{"url": "http://x", "valueString": f"a{ch}"}]),
         "request": {"method": "POST", "url": "Patient"}}]}
    response = client.post("/fhir", raw=_ascii(bundle))
    _refused(response, "Bundle.entry[1].resource.extension[0].valueString")
    assert written(client) == before


@pytest.mark.parametrize("text", ["MA&#1;RTIN", "MA&#xFFFE;RTIN", "MA&#xFFFF;RTIN", "MA&#xD800;RTIN",
                                  "MA\x01RTIN"])
def test_uncarriable_characters_in_xml_bodies_are_a_400(client, text):
    raw = ('<Patient xmlns="http://hl7.org/fhir"><identifier><system value="urn:oid:1.2.250.1.213.1.4.10"/>'
           f'<value value="1800175123456"/></identifier><name><family value="{text}"/></name></Patient>')
    before = written(client)
    response = client.post("Patient", raw=raw.encode(), content_type=XML, headers={"Accept": XML})
    assert response.status_code == 400, response.data
    _outcome(response, "xml")
    assert written(client) == before


def test_tab_cr_lf_and_other_noncharacters_are_stored(client):
    name = {"family": "MARTIN", "given": ["Claire\uFDD0"], "text": "Claire\tMARTIN\r\n\U0001F600"}
    response = client.post("Patient", patient(name=[name]))
    assert response.status_code == 201, response.data
    read = client.get(f"Patient/{json_of(response)['id']}", headers={"Accept": XML})
    assert read.status_code == 200 and fhirxml.xml_to_json(read.data)["name"] == [name]


# -- 4. error messages (and data stored before the check) safe in XML and JSON --------------------------------


@pytest.mark.parametrize("path", ["Patient?a%00=1", "Patient?a%01=1", "Patient?a%EF%BF%BE=1",
                                  "Patient?identifier=%EF%BF%BF", "Pat%00ient", "Patient/%00", "Patient/%1b",
                                  "Patient?_sort=%00", "Patient?_include=%00", "Patient/$valid%00ate"])
@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_echoed_characters_never_break_the_answer(client, path, fmt):
    response = client.get(path, headers={"Accept": f"application/fhir+{fmt}"})
    assert response.status_code < 500, response.data
    if response.status_code >= 400:
        _outcome(response, fmt)


def test_lone_surrogate_echoed_in_json_and_xml(client):
    raw = b'{"resourceType":"Patient","\\ud800x":1}'
    for fmt in ("json", "xml"):
        response = client.post("Patient", raw=raw, headers={"Accept": f"application/fhir+{fmt}"})
        assert response.status_code == 422, response.data  # an unknown element: a resource R4 refuses
        _outcome(response, fmt)


@pytest.mark.parametrize("ch", UNCARRIABLE, ids=_name)
def test_renderers_replace_what_xml_cannot_carry(ch):
    """Stored before the check (or echoed): U+FFFD in XML, and in JSON for what UTF-8 cannot encode."""
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": f"a{ch}b"}]}
    xml = serialise(outcome, "xml")
    assert fhirxml.xml_to_json(xml)["issue"][0]["diagnostics"] == "a\ufffdb"
    text = serialise(outcome, "json").decode("utf-8")
    assert fhirjson.loads(text)["issue"][0]["diagnostics"] in (f"a{ch}b", "a\ufffdb")


# -- 5. $validate on wrong JSON types: an OperationOutcome, never a 500 ---------------------------------------

WRONG = [5, True, [], {}, ["x"], {"a": 1}, [{"b": [1]}]]


@pytest.mark.parametrize("value", WRONG, ids=repr)
@pytest.mark.parametrize("where", ["type.coding.0.code", "type.coding.0.system", "category.0.coding.0.code",
                                   "category.0.coding.0.system", "content.0.attachment.data",
                                   "content.0.attachment.size", "content.0.attachment.hash", "subject",
                                   "securityLabel.0.coding.0.code"])
def test_validate_with_wrong_json_types_is_an_outcome(client, value, where):
    doc = document("abc")
    node: Any = doc
    steps = [int(s) if s.isdigit() else s for s in where.split(".")]
    for step in steps[:-1]:
        node = node[step]
    node[steps[-1]] = value
    for body in (doc, {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": doc}]}):
        response = client.post("DocumentReference/$validate", body)
        assert response.status_code in (200, 400), response.data
        issues = _outcome(response)["issue"]
        assert any(i["severity"] == "error" for i in issues), issues
