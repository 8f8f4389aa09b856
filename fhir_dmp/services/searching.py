"""Type-level search: one keyset page (+1 row to know there is a next), one count, one statement per
include level; then `_summary`/`_elements` shape what is returned.

Every statement (page, count, each `_include`/`_revinclude` level) is given the same `scope`, ANDed into
its WHERE, so that an access policy narrows the query itself and never filters rows after the fact.
"""

from __future__ import annotations

from dataclasses import replace

from fhir_dmp.errors import bad_request, operation_outcome
from fhir_dmp.policy.access import IDENTITY_ELEMENTS
from fhir_dmp.search import shape
from fhir_dmp.search.parse import SearchQuery, parse_query
from fhir_dmp.services import content, lookups, reads, results, trace_index
from fhir_dmp.services.requests import FhirRequest, FhirResponse
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import paging, queries
from fhir_dmp.storage.db import Tx
from fhir_dmp.storage.records import Stored

MAX_INCLUDE_LEVELS = 3  # the page's own includes, then up to two more :iterate rounds


def search(u: Unit, req: FhirRequest) -> FhirResponse:
    assert req.resource_type
    settings = u.rt.settings
    query = parse_query(req.resource_type, list(req.query), strict=req.strict,
                        default_count=settings.default_count, max_count=settings.max_count, base_url=req.base_url)
    lookup = lookups.for_search(u, req.resource_type, query.criteria)
    key = lookup.key
    u.touch(key or "", query=req.query_text)
    scope = lookup.scope  # for includes, of any type
    query = replace(query, criteria=lookup.criteria)
    own_scope = lookup.own_scope(req.resource_type)  # for the page and the count
    trace_index.before_search(u.tx, req.resource_type, query, scope, req.base_url)
    if lookup.identity:
        # identity only: no includes either (an included Practitioner would tell the médecin traitant)
        query = replace(query, elements=IDENTITY_ELEMENTS, summary=None if query.summary != "count" else "count",
                        includes=(), revincludes=())
    cursor = _cursor(query)
    page: list[Stored] = []
    next_cursor = previous_cursor = None
    complete = False  # the page holds every match: its length is the total, no count statement needed
    if query.count > 0 and query.summary != "count":
        rows = queries.find(u.tx, req.resource_type, query.criteria, scope=own_scope, sort=query.sort, cursor=cursor,
                         limit=query.count + 1)
        more = len(rows) > query.count
        complete = cursor is None and not more
        backwards = cursor is not None and not cursor.forward
        page = rows[len(rows) - query.count:] if backwards and more else rows[: query.count]
        if page and (backwards or more):
            next_cursor = _encode(query, page[-1], forward=True)
        if page and (more if backwards else cursor is not None):
            previous_cursor = _encode(query, page[0], forward=False)
    total = None
    if complete and query.total != "none":
        total = len(page)
    elif query.total != "none" or query.count == 0 or query.summary == "count":
        total = queries.count(u.tx, req.resource_type, query.criteria, scope=own_scope)
    included = _included(u.tx, query, page, scope)
    if key is None:  # a search spanning DMPs (a system's): each DMP it read from gets its own trace
        u.touch_rows(page + included)
    shown = reads.lists_shown(u, page + included)
    entries = [_entry(req.base_url, s, "match", query, query.elements, r) for s, r in zip(page, shown, strict=False)]
    entries += [_entry(req.base_url, s, "include", query, (), r)
                for s, r in zip(included, shown[len(page):], strict=True)]
    warnings = query.warnings()
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    links = results.page_links(req.base_url, req.resource_type, list(req.query), next_cursor, previous_cursor)
    return FhirResponse(200, results.bundle("searchset", entries, links, total))


def _cursor(query: SearchQuery) -> paging.Cursor | None:
    if query.cursor is None:
        return None
    try:
        return paging.decode(query.cursor, query.sort)
    except paging.BadCursor as exc:
        raise bad_request(f"_cursor is not a cursor this server gave for this search ({exc})", "_cursor") from None


def _encode(query: SearchQuery, row: Stored, *, forward: bool) -> str:
    return paging.encode(paging.Cursor(forward, row.sort_key, row.pk), query.sort)


def _included(tx: Tx, query: SearchQuery, page: list[Stored], scope: c.Criterion) -> list[Stored]:
    """`_include`/`_revinclude` of the page, then `:iterate` ones of what was just included, each resource once."""
    seen = {s.pk for s in page}
    found: list[Stored] = []
    sources = page
    for level in range(MAX_INCLUDE_LEVELS):
        includes = [i for i in query.includes if level == 0 or i.iterate]
        revincludes = [i for i in query.revincludes if level == 0 or i.iterate]
        if not sources or not (includes or revincludes):
            break
        new: list[Stored] = []
        for stored in (queries.included(tx, sources, includes, scope=scope)
                       + queries.revincluded(tx, sources, revincludes, scope=scope)):
            if stored.pk not in seen:
                seen.add(stored.pk)
                new.append(stored)
        found += new
        sources = new
    return found


def _entry(base: str, stored: Stored, mode: str, query: SearchQuery, elements: tuple[str, ...],
           resource: dict | None) -> dict:
    """`_elements` names elements of the searched type, so it shapes the matches only; `_summary` all. `resource`:
    the row as shaped for the caller (a List, `reads.lists_shown`), None: as stored."""
    if query.summary is None and not elements:  # nothing to shape: the stored text, never parsed
        return results.match_entry(base, stored, mode, content.as_stored(stored) if resource is None else resource)
    return results.match_entry(base, stored, mode, shape.subset(resource or content.resource_of(stored),
                                                                query.summary, elements))
