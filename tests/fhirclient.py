"""A thin FHIR client over Flask's test client, with tokens minted per actor."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from fhir_dmp import fhirjson
from fhir_dmp.config import project_dir
from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.services.identity import mint_token
from fhir_dmp.storage.tables import resource_version
from fhir_dmp.terminology.classes import TRE_A03
from fhir_dmp.terminology.store import load as load_conformance
from fhir_dmp.validation.documents import class_of_types, digest

SYSTEM = {"actor": "system", "sub": "test-suite"}
CONFIDENTIALITY = "https://mos.esante.gouv.fr/NOS/TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality"
DOCTOR = {"actor": "professional", "sub": "810001234567", "profession": "10", "specialty": "SM26"}


class FhirTestClient:
    def __init__(self, test_client: Any, secret: str, claims: dict | None = None) -> None:
        self.http = test_client
        self.secret = secret
        self.claims = claims or SYSTEM

    def as_(self, **claims: Any) -> FhirTestClient:
        """The same client acting as someone else."""
        return FhirTestClient(self.http, self.secret, claims)

    def token(self, **overrides: Any) -> str:
        return mint_token({**self.claims, **overrides}, secret=self.secret)

    def request(self, method: str, path: str, body: Any = None, *, headers: dict | None = None,
                content_type: str = "application/fhir+json", auth: bool = True, raw: bytes | None = None):
        all_headers = {"Accept": "application/fhir+json"}
        if auth:
            all_headers["Authorization"] = f"Bearer {self.token()}"
        data = raw
        if body is not None:
            data = fhirjson.dumps(body).encode()
        if data is not None:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        url = path if path.startswith("/") else f"/fhir/{path}"
        return self.http.open(url, method=method, data=data, headers=all_headers)

    def get(self, path: str, **kw: Any):  # type: ignore[no-untyped-def]
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, ops: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
        kw.setdefault("content_type", "application/json-patch+json")
        return self.request("PATCH", path, ops, **kw)

    def delete(self, path: str, **kw: Any):  # type: ignore[no-untyped-def]
        return self.request("DELETE", path, **kw)


def json_of(response: Any) -> Any:
    return fhirjson.loads(response.data)


def patient(ins: str = "1800175123456", **extra: Any) -> dict:
    """A minimal DMP Patient with an INS-NIR test identifier."""
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": ins}],
        "name": [{"family": "MARTIN", "given": ["Claire"]}],
        "gender": "female",
        "birthDate": "1980-01-17",
        **extra,
    }


def document(patient_id: str, text: bytes = b"Compte rendu de consultation", **extra: Any) -> dict:
    """A DocumentReference conforming to the DMP profile: a consultation report (11488-4) with its bytes inline.
    `extra` replaces elements; a `type` given without `category` gets its ASS_X16 class, and a `securityLabel`
    given without a confidentiality level gets N (the profile requires one)."""
    body: dict = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1.1.{uuid.uuid4().int}"},
        "identifier": [{"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"}],
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "category": [{"coding": [{"system": TRE_A03, "code": "10"}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "author": [{"type": "Practitioner", "identifier": {"system": IDNATPS, "value": "810001234567"}}],
        "custodian": {"type": "Organization", "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2",
                                                             "value": "1750000000"}},
        "securityLabel": [{"coding": [{"system": CONFIDENTIALITY, "code": "N"}]}],
        "content": [{"attachment": attachment(text)}],
        "context": {"period": {"start": datetime.now(UTC).isoformat(timespec="seconds")}},
    }
    if "type" in extra and "category" not in extra:
        codes = [(c.get("system"), c.get("code")) for c in extra["type"].get("coding", [])]
        classes = class_of_types(load_conformance(project_dir()))
        body["category"] = [{"coding": [{"system": TRE_A03, "code": classes[t]} for t in codes if t in classes][:1]}]
    labels = extra.get("securityLabel")
    if isinstance(labels, list) and not any(c.get("code") in ("N", "R", "V") for concept in labels
                                            for c in concept.get("coding", [])):
        extra = {**extra, "securityLabel": [*labels, {"coding": [{"system": CONFIDENTIALITY, "code": "N"}]}]}
    return {**body, **extra}


def attachment(text: bytes, content_type: str = "text/plain", title: str = "Compte rendu") -> dict:
    """An inline attachment with the size and SHA-1 the profile requires."""
    return {"contentType": content_type, "data": base64.b64encode(text).decode(), "size": len(text),
            "hash": digest(text), "title": title}


def linked(text: bytes, url: str) -> dict:
    """An attachment naming its Binary by `url`, with the size and SHA-1 of `text`, the Binary's bytes."""
    return {**{k: v for k, v in attachment(text).items() if k != "data"}, "url": url}


def written(database: Any) -> int:
    """How many resource versions the store holds, traces aside (every request, even refused, adds one
    AuditEvent): what a refused or rolled-back write must leave unchanged. `database`: a Database, or a
    FhirTestClient (its app's)."""
    if isinstance(database, FhirTestClient):
        database = database.http.application.extensions["fhir_dmp"]["db"]
    with database.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(resource_version)
                            .where(resource_version.c.resource_type != "AuditEvent")).scalar_one()
