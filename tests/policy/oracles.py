"""Shared by the differential oracle tests (test_hidden_equals_absent.py, test_conditions_do_not_leak.py): what a
caller gets of one answer, with what the server assigns (ids, instants) normalised, so that two answers can be
compared for equality; and what the store holds of what a refused write would have written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from fhir_dmp import fhirjson
from fhir_dmp.storage.tables import metadata, resource_version
from tests.fhirclient import FhirTestClient

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?")
HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")
TEST_OID = re.compile(r"urn:oid:1\.2\.250\.1\.999\.1\.1\.\d+")  # tests.fhirclient.document's masterIdentifier
# The server's side effects that say the caller reached a DMP (traces, the patient's notifications of an access):
# not writes of the caller's, and never shown to the caller.
SIDE_EFFECTS = ("AuditEvent", "Communication")


@dataclass(frozen=True)
class Answer:
    """One answer as the caller sees it: status, the names of the headers (their values carry ids and times),
    the body with ids and instants normalised."""

    status: int
    headers: frozenset[str]
    body: Any

    def issue_codes(self) -> list[str]:
        if isinstance(self.body, dict) and self.body.get("resourceType") == "OperationOutcome":
            return [i.get("code") for i in self.body.get("issue", [])]
        return []


def normalised(text: str, names: dict[str, str] | None = None) -> str:
    """`text` with the given values replaced by their names, then every uuid and instant by a placeholder."""
    for value, name in sorted((names or {}).items(), key=lambda kv: -len(kv[0])):
        if value:
            text = text.replace(value, name)
    text = UUID.sub("<uuid>", TEST_OID.sub("<oid>", text))
    text = INSTANT.sub("<instant>", text)
    return HTTP_DATE.sub("<date>", text)


def answer(response: Any, names: dict[str, str] | None = None) -> Answer:
    raw = response.get_data(as_text=True)
    text = normalised(raw, names)
    try:
        body: Any = fhirjson.loads(text) if text.strip() else None
    except ValueError:
        body = text
    return Answer(response.status_code, frozenset(k.lower() for k, _ in response.headers.items()), body)


def db_of(client: FhirTestClient) -> Any:
    return client.http.application.extensions["fhir_dmp"]["db"]


def written(client: FhirTestClient) -> int:
    """The resource versions in the store, the server's traces and access notifications aside: what a refused
    write must leave unchanged."""
    with db_of(client).engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(resource_version)
                            .where(resource_version.c.resource_type.notin_(SIDE_EFFECTS))).scalar_one()


def empty(client: FhirTestClient) -> None:
    """Remove everything from the store (the schema stays): the next world starts from nothing."""
    with db_of(client).engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
