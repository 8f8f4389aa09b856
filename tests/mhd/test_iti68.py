"""ITI-68 Retrieve Document (dmp-reference.md 5, R4 binary.html, PDSm flux 07/08; http/binary.py): the raw bytes in
the document's own content type, or the Binary resource for a FHIR Accept or `_format`; the read rules of the
governing DocumentReference; streamed. Through the HTTP API, on both stores."""

from __future__ import annotations

import hashlib
import os

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.policy.consents import authorisation
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, document, json_of
from tests.mhd.helpers import TRE_A07, location_id, open_dmp, provide

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF"


@pytest.fixture
def filed(client: FhirTestClient) -> tuple[str, str, str]:
    """(patient id, DocumentReference id, Binary id) of a PDF filed by ITI-65."""
    pid, _ = open_dmp(client)
    doc = document(pid)
    doc["content"][0]["attachment"]["contentType"] = "application/pdf"
    body = provide(client, pid, [(doc, PDF)])
    return pid, location_id(body["entry"][1]), location_id(body["entry"][2])


@pytest.mark.parametrize("accept", [None, "*/*", "application/pdf", "application/*",
                                    "text/html, application/pdf;q=0.9", "application/fhir+json;q=0.1, */*"])
def test_a_non_fhir_accept_gets_the_raw_document(client, filed, accept):
    _, _, bid = filed
    response = client.get(f"Binary/{bid}", headers={"Accept": accept or ""})
    assert response.status_code == 200
    assert response.data == PDF
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Length"] == str(len(PDF))
    assert response.headers["ETag"] == 'W/"1"' and response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["X-Security-Context"].startswith("DocumentReference/")


@pytest.mark.parametrize(("accept", "fmt", "media"), [
    ("application/fhir+json", None, "application/fhir+json"), ("application/fhir+xml", None, "application/fhir+xml"),
    ("application/json", None, "application/fhir+json"), ("*/*", "json", "application/fhir+json"),
    ("application/pdf", "xml", "application/fhir+xml")])
def test_a_fhir_accept_or_format_gets_the_binary_resource(client, filed, accept, fmt, media):
    _, _, bid = filed
    response = client.get(f"Binary/{bid}" + (f"?_format={fmt}" if fmt else ""), headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(media)
    assert b"Binary" in response.data and PDF not in response.data


def test_an_accept_the_document_cannot_satisfy_is_406(client, filed):
    _, _, bid = filed
    response = client.get(f"Binary/{bid}", headers={"Accept": "image/png"})
    assert response.status_code == 406
    assert json_of(response)["resourceType"] == "OperationOutcome"


def test_head_if_none_match_and_vread(client, filed):
    _, _, bid = filed
    head = client.request("HEAD", f"Binary/{bid}", headers={"Accept": "*/*"})
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == str(len(PDF)) and head.headers["Content-Type"] == "application/pdf"
    assert client.get(f"Binary/{bid}", headers={"Accept": "*/*", "If-None-Match": 'W/"1"'}).status_code == 304
    assert client.get(f"Binary/{bid}/_history/1", headers={"Accept": "*/*"}).data == PDF


def test_the_governing_documents_read_rules_apply(client):
    pid, ins = open_dmp(client)
    ortho, doctor = "810000000591", "810000000592"
    for ps in (ortho, doctor):
        assert client.post("Consent", authorisation(pid, ps)).status_code == 201
    biology = document(pid, type={"coding": [{"system": "http://loinc.org", "code": "11502-2"}]})
    masked = document(pid, securityLabel=[{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}])
    body = provide(client, pid, [(biology, b"CR de biologie"), (masked, b"CR masque")])
    bio_bin, masked_bin = location_id(body["entry"][3]), location_id(body["entry"][4])
    orthophoniste = client.as_(actor="professional", sub=ortho, profession="91")
    medecin = client.as_(actor="professional", sub=doctor, profession="10")
    assert orthophoniste.get(f"Binary/{bio_bin}", headers={"Accept": "*/*"}).status_code == 404  # never biology
    assert medecin.get(f"Binary/{bio_bin}", headers={"Accept": "*/*"}).data == b"CR de biologie"
    assert medecin.get(f"Binary/{masked_bin}", headers={"Accept": "*/*"}).status_code == 404
    assert client.as_(actor="patient", sub=ins, patient=ins).get(
        f"Binary/{masked_bin}", headers={"Accept": "*/*"}).data == b"CR masque"
    stranger = client.as_(actor="professional", sub="810000000593", profession="10")
    refused = stranger.get(f"Binary/{masked_bin}", headers={"Accept": "application/pdf"})
    assert refused.status_code == 403 and json_of(refused)["resourceType"] == "OperationOutcome"


def test_a_large_document_is_streamed_in_pieces(database):
    settings = Settings(database_url=database.url, jwt_secret=SECRET, max_body_bytes=16 * 1024 * 1024)
    client = FhirTestClient(create_app(settings, database=database).test_client(), SECRET)
    pid, _ = open_dmp(client)
    big = os.urandom(5 * 1024 * 1024)
    doc = document(pid)
    doc["content"][0]["attachment"]["contentType"] = "application/octet-stream"
    bid = location_id(provide(client, pid, [(doc, big)])["entry"][2])
    response = client.http.get(f"/fhir/Binary/{bid}", headers={"Authorization": f"Bearer {client.token()}",
                                                              "Accept": "*/*"}, buffered=False)
    assert response.is_streamed
    pieces = list(response.response)
    assert len(pieces) > 50 and max(len(p) for p in pieces) <= 48 * 1024  # never decoded whole
    assert hashlib.sha1(b"".join(pieces)).digest() == hashlib.sha1(big).digest()
    assert response.headers["Content-Length"] == str(len(big))
