"""Bundles of results (searchset, history): entries, totals and keyset paging links."""

from __future__ import annotations

from urllib.parse import urlencode

from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.services import content
from fhir_dmp.storage.records import Stored


def page_links(base: str, path: str, query: list[tuple[str, str]], next_cursor: int | str | None,
               previous_cursor: str | None = None) -> list[dict]:
    """`self` as asked, `first` without a cursor, `previous`/`next` with the cursors of the page's ends."""
    kept = [(k, v) for k, v in query if k != "_cursor"]
    url = f"{base}/{path}" if path else base
    links = [{"relation": "self", "url": _with_query(url, query)},
             {"relation": "first", "url": _with_query(url, kept)}]
    if previous_cursor is not None:
        links.append({"relation": "previous", "url": _with_query(url, [*kept, ("_cursor", previous_cursor)])})
    if next_cursor is not None:
        links.append({"relation": "next", "url": _with_query(url, [*kept, ("_cursor", str(next_cursor))])})
    return links


def _with_query(url: str, query: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(query)}" if query else url


def bundle(kind: str, entries: list[dict], links: list[dict], total: int | None) -> dict:
    out: dict = {"resourceType": "Bundle", "type": kind, "timestamp": instant(now_utc())}
    if total is not None:
        out["total"] = total
    out["link"] = links
    if entries:
        out["entry"] = entries
    return out


def match_entry(base: str, stored: Stored, mode: str = "match", resource: object = None) -> dict:
    """A search entry, with `resource` as shaped for the caller (by default, the stored resource parsed)."""
    resource = content.resource_of(stored) if resource is None else resource
    return {"fullUrl": f"{base}/{stored.resource_type}/{stored.id}", "resource": resource, "search": {"mode": mode}}


def history_entry(base: str, stored: Stored, resource: dict | None = None) -> dict:
    """A history entry, with `resource` as shaped for the caller (by default, the stored version parsed)."""
    entry: dict = {"fullUrl": f"{base}/{stored.resource_type}/{stored.id}"}
    if stored.content is not None:
        entry["resource"] = content.resource_of(stored) if resource is None else resource
    if stored.deleted:
        request = {"method": "DELETE", "url": f"{stored.resource_type}/{stored.id}"}
        status = 204
    elif stored.version_id == 1 and stored.method == "POST":
        request = {"method": "POST", "url": stored.resource_type}
        status = 201
    else:
        request = {"method": stored.method or "PUT", "url": f"{stored.resource_type}/{stored.id}"}
        status = 201 if stored.version_id == 1 else 200  # version 1 of a conditional update created it
    entry["request"] = request
    entry["response"] = {"status": content.status_line(status),
                         "etag": f'W/"{stored.version_id}"',
                         "lastModified": instant(stored.last_updated)}
    return entry
