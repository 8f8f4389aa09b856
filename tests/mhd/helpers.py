"""A small realistic DMP for the MHD tests: ITI-65 Bundles built the way a producer's software sends them."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fhirclient import FhirTestClient, json_of, linked, patient

MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
DESIGNATION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
INS_TEST = "urn:oid:1.2.250.1.213.1.4.10"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def new_ins() -> str:
    return "1" + str(uuid.uuid4().int)[:12]


def open_dmp(client: FhirTestClient, ins: str | None = None) -> tuple[str, str]:
    """(patient id, INS) of a new DMP, created by the system."""
    ins = ins or new_ins()
    response = client.post("Patient", patient(ins))
    assert response.status_code == 201, response.data
    return json_of(response)["id"], ins


def submission_set(pid: str, items: list[str], *, source_id: str = "urn:oid:1.2.250.1.999.2",
                   designation: str = "10", author: str = "810001234567", **extra: Any) -> dict:
    """A DMP SubmissionSet listing `items` (fullUrls or references)."""
    return {
        "resourceType": "List",
        "extension": [
            {"url": DESIGNATION, "valueCodeableConcept": {"coding": [{"system": TRE_A03, "code": designation}]}},
            {"url": SOURCE_ID, "valueIdentifier": {"system": "urn:ietf:rfc:3986", "value": source_id}},
        ],
        "identifier": [
            {"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.2.1.{uuid.uuid4().int}"},
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": urn()},
        ],
        "status": "current",
        "mode": "working",
        "title": "Lot de soumission",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {"type": "Practitioner", "identifier": {"system": IDNATPS, "value": author}},
        "entry": [{"item": {"reference": item}} for item in items],
        **extra,
    }


def binary(text: bytes, content_type: str = "text/plain") -> dict:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(text).decode()}


def iti65(pid: str, documents: list[tuple[dict, bytes]], **list_extra: Any) -> dict:
    """An ITI-65 transaction: a SubmissionSet, each DocumentReference (its attachment replaced by a link to a
    Binary of the Bundle holding `bytes`), each Binary."""
    entries: list[dict] = []
    binaries: list[dict] = []
    doc_urls = []
    for doc, text in documents:
        bin_url, doc_url = urn(), urn()
        sent = {k: v for k, v in doc["content"][0]["attachment"].items() if k != "data"}
        content_type = sent.get("contentType", "text/plain")
        attach = {**sent, **linked(text, bin_url), "contentType": content_type}
        doc = {**doc, "content": [{**doc["content"][0], "attachment": attach}]}
        entries.append({"fullUrl": doc_url, "resource": doc, "request": {"method": "POST", "url": "DocumentReference"}})
        binaries.append({"fullUrl": bin_url, "resource": {**binary(text, content_type),
                                                          "securityContext": {"reference": doc_url}},
                         "request": {"method": "POST", "url": "Binary"}})
        doc_urls.append(doc_url)
    ss = {"fullUrl": urn(), "resource": submission_set(pid, doc_urls, **list_extra),
          "request": {"method": "POST", "url": "List"}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [ss, *entries, *binaries]}


def provide(client: FhirTestClient, pid: str, documents: list[tuple[dict, bytes]], **list_extra: Any) -> dict:
    """Send an ITI-65 and answer the transaction-response (asserting success)."""
    response = client.post("/fhir", iti65(pid, documents, **list_extra))
    assert response.status_code == 200, response.data
    return json_of(response)


def location_id(entry: dict) -> str:
    """The id in a response entry's location (`Type/id/_history/n`, absolute or not)."""
    return entry["response"]["location"].split("/_history/")[0].rsplit("/", 1)[1]
