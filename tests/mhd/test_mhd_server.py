"""End to end: an ITI-65 -> ITI-67 -> ITI-68 round trip, then a replacement and a logical deletion, against the real
`fhir-dmp serve` (gunicorn), with fhirpy and requests as an MHD Document Source and Consumer would use them."""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.e2e.test_fhir_client import Server, server  # noqa: F401 - the started server fixture
from tests.fhirclient import DOCTOR, document, patient
from tests.mhd.helpers import INS_TEST, iti65, location_id, new_ins

pytestmark = pytest.mark.e2e


def test_provide_find_retrieve_replace_delete(server: Server) -> None:  # noqa: F811
    doctor = {k: v for k, v in DOCTOR.items() if k != "actor"}
    client = server.fhirpy(actor="professional", **doctor)
    ins = new_ins()
    dmp = client.resource("Patient", **patient(ins))
    dmp.save()  # the médecin opens the DMP, and is thereby authorised
    pdf = b"%PDF-1.4 compte rendu\n%%EOF"
    doc = document(dmp.id)
    doc["content"][0]["attachment"]["contentType"] = "application/pdf"
    auth = {"Authorization": f"Bearer {server.token(actor='professional', **doctor)}"}
    fhir = {**auth, "Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}

    # ITI-65
    response = requests.post(server.base, json=iti65(dmp.id, [(doc, pdf)]), headers=fhir, timeout=20)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert all(e["response"]["status"] == "201 Created" and e["response"]["etag"] == 'W/"1"' for e in entries)
    doc_id = location_id(entries[1])

    # ITI-67, by INS, with fhirpy
    found = client.resources("DocumentReference").search(**{"patient.identifier": f"{INS_TEST}|{ins}",
                                                            "status": "current"}).fetch()
    assert [d.id for d in found] == [doc_id]
    url = found[0]["content"][0]["attachment"]["url"]

    # ITI-68: the raw PDF, then the Binary resource
    raw = requests.get(f"{server.base}/{url}", headers={**auth, "Accept": "application/pdf"}, timeout=20)
    assert raw.status_code == 200 and raw.headers["Content-Type"] == "application/pdf"
    assert hashlib.sha1(raw.content).digest() == hashlib.sha1(pdf).digest()
    assert raw.headers["Content-Length"] == str(len(pdf)) and raw.headers["ETag"] == 'W/"1"'
    assert requests.get(f"{server.base}/{url}", headers={**auth, "If-None-Match": 'W/"1"'},
                        timeout=20).status_code == 304
    assert requests.get(f"{server.base}/{url}", headers=fhir, timeout=20).json()["resourceType"] == "Binary"

    # replacement, then the depositor's logical deletion of the new version (PDSm TD3.3c, conditional PATCH)
    new = document(dmp.id, relatesTo=[{"code": "replaces", "target": {"reference": f"DocumentReference/{doc_id}"}}])
    response = requests.post(server.base, json=iti65(dmp.id, [(new, b"v2")]), headers=fhir, timeout=20)
    assert response.status_code == 200, response.text
    assert client.reference("DocumentReference", doc_id).to_resource()["status"] == "superseded"
    ident = response.json()["entry"][1]["resource"]["identifier"][0]
    deleted = requests.patch(f"{server.base}/DocumentReference", params={
        "identifier": f"{ident['system']}|{ident['value']}"}, headers={
        **fhir, "Content-Type": "application/json-patch+json"},
        json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}], timeout=20)
    assert deleted.status_code == 200 and deleted.json()["status"] == "entered-in-error"
    assert client.resources("DocumentReference").search(patient=dmp.id, status="current").fetch() == []
