"""Server-set parts of a stored resource (id, meta) and the HTTP headers that describe a version."""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime

from fhir_dmp import fhirjson
from fhir_dmp.errors import Issue, bad_request
from fhir_dmp.search.dates import instant
from fhir_dmp.storage.records import Stored

_STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
                401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                409: "Conflict", 410: "Gone", 412: "Precondition Failed", 415: "Unsupported Media Type",
                422: "Unprocessable Entity"}


def status_line(status: int) -> str:
    return f"{status} {_STATUS_TEXT.get(status, '')}".strip()


def stamp(body: dict, rid: str, version_id: int, when: object) -> dict:
    """The client's JSON with the server's id and meta, resourceType/id/meta first, the rest as sent."""
    meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
    kept = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    out = {"resourceType": body["resourceType"], "id": rid,
           "meta": {"versionId": str(version_id), "lastUpdated": instant(when), **kept}}  # type: ignore[arg-type]
    out.update((k, v) for k, v in body.items() if k not in ("resourceType", "id", "meta", "_id"))
    return out


def resource_of(stored: Stored) -> dict:
    return fhirjson.trusted_loads(stored.content or "{}")


def as_stored(stored: Stored) -> fhirjson.Raw:
    """The stored resource to answer verbatim (no shaping asked): never parsed nor written again."""
    return fhirjson.raw(stored.content or "{}")


def version_headers(stored: Stored, base_url: str, *, location: bool = False) -> dict[str, str]:
    headers = {
        "ETag": f'W/"{stored.version_id}"',
        "Last-Modified": format_datetime(stored.last_updated.replace(tzinfo=UTC), usegmt=True),
    }
    if location:
        headers["Location"] = f"{base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
    return headers


def parse_etag(value: str, header: str = "If-Match") -> int:
    """`W/"3"`, `"3"` or `3` -> 3; anything else is a 400."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is True, int("²") fails
        raise bad_request(f"{header} must be a version ETag like W/\"3\", not {value!r}", header)
    return int(text)


def as_resource(body: object, resource_type: str) -> dict:
    """The body as a resource of the expected type, or a 400 (its R4 structure and profiles are checked after,
    in one 422: `writes.parsed`)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a FHIR resource (a JSON object)", code="structure")
    found = body.get("resourceType")
    if not isinstance(found, str) or not found:
        raise bad_request("The resource has no resourceType", "resourceType", code="structure")
    if found != resource_type:
        raise bad_request(f"The body is a {found}, but the URL is for {resource_type}", "resourceType")
    return body


def information(diagnostics: str) -> dict:
    return {"resourceType": "OperationOutcome",
            "issue": [Issue("informational", diagnostics, severity="information").to_fhir()]}
