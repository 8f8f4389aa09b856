"""Type-level search: one statement for the page (+1 row to know if there is a next), one count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection

from fhir_dmp.errors import bad_request, operation_outcome
from fhir_dmp.search.parse import parse_query
from fhir_dmp.services import results
from fhir_dmp.services.requests import FhirRequest, FhirResponse
from fhir_dmp.storage import repository as repo

if TYPE_CHECKING:
    from fhir_dmp.services.interactions import FhirService


def search(service: FhirService, conn: Connection, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    settings = service.settings
    query = parse_query(req.resource_type, list(req.query), strict=req.strict,
                        default_count=settings.default_count, max_count=settings.max_count, base_url=req.base_url)
    if query.cursor is not None and not (query.cursor.isascii() and query.cursor.isdigit() and len(query.cursor) <= 18):
        raise bad_request("_cursor is not a cursor this server gave", "_cursor")
    cursor = int(query.cursor) if query.cursor else None
    rows = []
    if query.count > 0:
        rows = repo.find(conn, req.resource_type, query.criteria, after_pk=cursor, limit=query.count + 1)
    page, more = rows[: query.count], len(rows) > query.count
    total = None if query.total == "none" else repo.count(conn, req.resource_type, query.criteria)
    if query.count == 0 and total is None:
        total = repo.count(conn, req.resource_type, query.criteria)
    entries = [results.match_entry(req.base_url, s) for s in page]
    warnings = query.warnings()
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    links = results.page_links(req.base_url, req.resource_type, list(req.query),
                               page[-1].pk if more and page else None)
    return FhirResponse(200, results.bundle("searchset", entries, links, total))
