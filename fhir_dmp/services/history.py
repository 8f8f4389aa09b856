"""History interactions (instance, type, system): every version, newest first, keyset-paged."""

from __future__ import annotations

from fhir_dmp.errors import bad_request
from fhir_dmp.search.dates import parse_date_range
from fhir_dmp.services import reads, results
from fhir_dmp.services.requests import FhirRequest, FhirResponse
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries

_PARAMS = ("_count", "_since", "_cursor", "_format", "_pretty")


def history(u: Unit, req: FhirRequest) -> FhirResponse:
    settings = u.rt.settings
    count, since, cursor = settings.default_count, None, None
    for name, value in req.query:
        if name == "_count":
            count = _int(name, value)
        elif name == "_cursor":
            cursor = _int(name, value)
        elif name == "_since":
            if "T" not in value:
                raise bad_request("_since must be an instant (e.g. 2026-01-01T00:00:00Z)", "_since")
            since = parse_date_range(value, "_since")[0]
        elif name not in _PARAMS:
            raise bad_request(f"History parameter '{name}' is not supported", code="not-supported")
    count = min(count, settings.max_count)
    own = None
    if req.id:  # 404 when the resource never existed or is hidden from the caller, 403 for a closed DMP
        stored = reads.current(u, req)
        scope = u.scope(u.access(stored.patient_key))
    else:  # a patient's own DMP; professionals name no DMP here, so they see their own rows only
        own = u.own_dmp() if u.caller.actor in ("patient", "representative") else None
        scope = u.scope(u.access(own) if own else None)
        u.touch(own or "")
        if not req.resource_type:  # the traces are read as AuditEvents; each history read would add to them
            scope = c.AllOf((scope, c.Not(c.TypeIs(("AuditEvent",)))))
    rows = queries.history(u.tx, req.resource_type, req.id, since=since, before_pk=cursor, limit=count + 1, scope=scope)
    page, more = rows[:count], len(rows) > count
    total = queries.history_count(u.tx, req.resource_type, req.id, since, scope=scope)
    path = "/".join(p for p in (req.resource_type, req.id, "_history") if p)
    links = results.page_links(req.base_url, path, list(req.query), page[-1].pk if more and page else None)
    if not req.id and own is None:  # read across DMPs: each DMP's trail gets the access
        u.touch_rows(page)
    shown = reads.lists_shown(u, page)
    entries = [results.history_entry(req.base_url, s, r) for s, r in zip(page, shown, strict=True)]
    return FhirResponse(200, results.bundle("history", entries, links, total))


def _int(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:  # "²".isdigit(); BIGINT bound
        raise bad_request(f"{name} must be a non-negative integer (at most 18 digits)", name)
    return int(value)
