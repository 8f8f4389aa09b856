"""A thin FHIR client over Flask's test client, with tokens minted per actor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from fhir_dmp import fhirjson
from fhir_dmp.services.identity import mint_token
from fhir_dmp.storage.tables import resource_version

SYSTEM = {"actor": "system", "sub": "test-suite"}
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


def document(patient_id: str, **extra: Any) -> dict:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": "Q29tcHRlIHJlbmR1"}}],
        **extra,
    }


def written(database: Any) -> int:
    """How many resource versions the store holds, traces aside (every request, even refused, adds one
    AuditEvent): what a refused or rolled-back write must leave unchanged. `database`: a Database, or a
    FhirTestClient (its app's)."""
    if isinstance(database, FhirTestClient):
        database = database.http.application.extensions["fhir_dmp"]["db"]
    with database.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(resource_version)
                            .where(resource_version.c.resource_type != "AuditEvent")).scalar_one()
