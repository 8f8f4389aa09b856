"""CodeSystem, ValueSet, ConceptMap and StructureDefinition: read and search over the shipped files
(`fhir_dmp.terminology.store`), never the database; their operations are in `services/operations.py`.

Why apart from the store's interactions: these are public reference data (ANS and HL7 code lists, our
profiles), versioned with the code, the same for every caller. Any admitted caller may read them (refused
actors were turned away by `Pipeline.admit`); they touch no DMP, so their AuditEvent goes on the server's
chain like every other request's (`Pipeline.run`). Writes, history and vread are 405: nothing changes
them but a new release.

Search: `_id`, `version`, `status` (token, exact), `url` (uri: exact, `:below`, `:above`), `name` (string:
starts with, case and accents ignored; `:exact`, `:contains`), `_lastUpdated` (date prefixes), `:missing` on
all; OR by comma, AND by repetition; `_count`, `_sort`, `_summary`, `_elements`, `_total`; pages by offset
(`_cursor`: the data cannot change under a reader). Unknown parameters: ignored and reported, or a 400 under
`Prefer: handling=strict`, as for every other type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta

from fhir_dmp.errors import FhirError, Issue, bad_request, not_found, operation_outcome
from fhir_dmp.search import shape
from fhir_dmp.search.dates import now_utc, parse_date_range, shift
from fhir_dmp.search.parse import PREFIXES, split_or
from fhir_dmp.search.values import normalise
from fhir_dmp.services import operations, results
from fhir_dmp.services.registry import RESOURCES, ResourceDef
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.terminology.store import Conformance

# code -> (type, official definition, documentation); every one applies to the four types
PARAMS: dict[str, tuple[str, str, str]] = {
    "_id": ("token", "http://hl7.org/fhir/SearchParameter/Resource-id", "Logical id of this artifact"),
    "_lastUpdated": ("date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
                     "When the resource version last changed (meta.lastUpdated; absent from most shipped files)"),
    "url": ("uri", "http://hl7.org/fhir/SearchParameter/conformance-url", "The canonical url (exact, :below, :above)"),
    "name": ("string", "http://hl7.org/fhir/SearchParameter/conformance-name", "Computationally friendly name"),
    "version": ("token", "http://hl7.org/fhir/SearchParameter/conformance-version", "The business version"),
    "status": ("token", "http://hl7.org/fhir/SearchParameter/conformance-status", "draft | active | retired | unknown"),
}
_MODIFIERS = {"token": ("not",), "uri": ("below", "above"), "string": ("exact", "contains"), "date": ()}
_IGNORED = ("_format", "_pretty")
Test = Callable[[dict], bool]


def handle(u: Unit, req: FhirRequest) -> FhirResponse:
    interaction = req.interaction
    if interaction == "operation":
        return operations.run(u, req)
    if interaction == "read":
        return read(u, req)
    if interaction == "search-type":
        return search(u, req)
    raise method_not_allowed(req)


def found(conf: Conformance, rtype: str, rid: str) -> dict:
    resource = conf.read(rtype, rid)
    if resource is None:
        raise not_found(f"{rtype}/{rid} does not exist")
    return resource


def read(u: Unit, req: FhirRequest) -> FhirResponse:
    conf = u.rt.conformance
    assert req.resource_type and req.id
    resource = found(conf, req.resource_type, req.id)
    u.touch("", f"{req.resource_type}/{req.id}")
    summary, elements = shape.requested(req.query)
    return FhirResponse(200, shape.subset(copy.deepcopy(resource), summary, elements))


def search(u: Unit, req: FhirRequest) -> FhirResponse:
    conf, settings = u.rt.conformance, u.rt.settings
    assert req.resource_type
    rtype = req.resource_type
    u.touch("", query=req.query_text)
    tests: list[Test] = []
    ignored: list[str] = []
    count, offset, summary, elements, sort = settings.default_count, 0, None, (), [("_id", False)]
    for name, value in req.query:
        base, _, modifier = name.partition(":")
        if base in _IGNORED:
            continue
        if base == "_count":
            count = min(_natural(name, value), settings.max_count)
        elif base == "_cursor":
            offset = _natural(name, value)
        elif base == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad_request("_total must be none, estimate or accurate", "_total")
        elif base == "_summary":
            if value not in shape.SUMMARY_MODES:
                raise bad_request("_summary must be true, false, text, data or count", "_summary")
            summary = value
        elif base == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif base == "_sort":
            sort = [_sort_key(key) for key in value.split(",") if key] + sort
        elif base in PARAMS:
            tests.append(_criterion(base, modifier, value, name))
        elif req.strict:
            raise bad_request(f"Search parameter '{name}' is not supported for {rtype}", code="not-supported")
        else:
            ignored.append(name)
    matches = [r for r in conf.all(rtype) if all(test(r) for test in tests)]
    for key, descending in reversed(sort):  # stable sorts, last key first; missing values last either way
        matches.sort(key=lambda r, k=key: _sort_value(r, k), reverse=descending)
        matches.sort(key=lambda r, k=key: _element(r, k) is None)
    page = [] if summary == "count" else matches[offset:offset + count]
    entries = [{"fullUrl": f"{req.base_url}/{rtype}/{r['id']}",
                "resource": shape.subset(copy.deepcopy(r), summary, elements), "search": {"mode": "match"}}
               for r in page]
    if ignored:
        warnings = [Issue("not-supported", f"Search parameter '{n}' is not supported and was ignored",
                          severity="warning") for n in ignored]
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    more = page and offset + count < len(matches)
    links = results.page_links(req.base_url, rtype, list(req.query), offset + count if more else None,
                               str(max(offset - count, 0)) if offset else None)
    return FhirResponse(200, results.bundle("searchset", entries, links, len(matches)))


def _natural(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise bad_request(f"{name} must be a non-negative integer, not {value!r}", name)
    return int(value)


def _sort_key(key: str) -> tuple[str, bool]:
    name = key.lstrip("-")
    if name not in PARAMS or name == "_lastUpdated":
        raise bad_request(f"_sort: {name!r} is not a sort key here (url, name, version, status, _id)", "_sort")
    return name, key.startswith("-")


def _sort_value(resource: dict, key: str) -> str:
    value = _element(resource, key) or ""
    return normalise(value) if key == "name" else value


def _element(resource: dict, code: str) -> str | None:
    if code == "_id":
        return resource.get("id")
    if code == "_lastUpdated":
        meta = resource.get("meta")
        return meta.get("lastUpdated") if isinstance(meta, dict) else None
    value = resource.get(code)
    return value if isinstance(value, str) else None


def _criterion(code: str, modifier: str, value: str, name: str) -> Test:
    kind = PARAMS[code][0]
    if modifier == "missing":
        if value not in ("true", "false"):
            raise bad_request(f"{name} takes true or false", name)
        return lambda r: (_element(r, code) is None) == (value == "true")
    if modifier and modifier not in _MODIFIERS[kind]:
        raise bad_request(f"{name}: modifier :{modifier} is not supported on a {kind} parameter", name,
                          code="not-supported")
    alternatives = [_match(kind, modifier, v, name) for v in split_or(value)]
    if modifier == "not":
        return lambda r: not any(m(_element(r, code)) for m in alternatives)
    return lambda r: any(m(_element(r, code)) for m in alternatives)


def _match(kind: str, modifier: str, value: str, name: str) -> Callable[[str | None], bool]:
    if kind == "token":
        system, bar, code = value.rpartition("|")
        return lambda v: not system and v is not None and v == (code if bar else value)
    if kind == "uri":
        if modifier == "below":
            return lambda v: v is not None and v.startswith(value)
        if modifier == "above":
            return lambda v: v is not None and value.startswith(v)
        return lambda v: v == value
    if kind == "string":
        if modifier == "exact":
            return lambda v: v == value
        wanted = normalise(value)
        if modifier == "contains":
            return lambda v: v is not None and wanted in normalise(v)
        return lambda v: v is not None and normalise(v).startswith(wanted)
    return _date_match(value, name)


def _date_match(value: str, name: str) -> Callable[[str | None], bool]:
    prefix, text = (value[:2], value[2:]) if value[:2] in PREFIXES and value[2:3].isdigit() else ("eq", value)
    low, high = parse_date_range(text, name)
    if prefix == "ap":
        gap = abs(now_utc() - low) * 0.1 if low < datetime(9999, 1, 1) else timedelta(0)
        low, high, prefix = shift(low, -gap), shift(high, gap), "eq"

    def test(v: str | None) -> bool:
        if v is None:
            return False
        try:
            at, _ = parse_date_range(v, name)
        except FhirError:
            return False
        return {"eq": low <= at < high, "ne": not low <= at < high, "gt": at >= high, "sa": at >= high,
                "lt": at < low, "eb": at < low, "ge": at >= low, "le": at < high}[prefix]
    return test


def capability_entry(definition: ResourceDef) -> dict:
    """The CapabilityStatement.rest.resource of a shipped type: read and search, its operations."""
    out: dict = {
        "type": definition.name,
        "documentation": definition.documentation + ". Served read-only from the files the server ships.",
        "interaction": [{"code": code} for code in definition.interactions],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "searchParam": [{"name": code, "definition": url, "type": kind, "documentation": doc}
                        for code, (kind, url, doc) in PARAMS.items()],
    }
    ops = operations.declared(definition.name)
    if ops:
        out["operation"] = ops
    return out


def supported_profiles(conf: Conformance) -> dict[str, list[str]]:
    """The shipped profiles of each served type (StructureDefinitions constraining it), for supportedProfile."""
    out: dict[str, list[str]] = {}
    for sd in conf.all("StructureDefinition"):
        target = sd.get("type")
        if sd.get("kind") == "resource" and sd.get("derivation") == "constraint" and target in RESOURCES:
            out.setdefault(target, []).append(sd["url"])
    return out
