"""Index rows of a resource: every supported search parameter of its type, computed at write time.

The parameters come from the official definitions (data/search-parameters.json); their expressions
are compiled once per process by `paths.compile_path`. Parameters whose expression cannot be
compiled (e.g. `_content`, `_filter`, Patient `age`) are left out of `indexed_params`, which is
what the search parser accepts and the CapabilityStatement lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_dmp.search import values
from fhir_dmp.search.definitions import definition, definitions
from fhir_dmp.search.paths import Getter, Unsupported, compile_path, split_union

# Handled by the resource table itself, not by index rows.
BUILT_IN = frozenset({"_id", "_lastUpdated"})
SERVED_TYPES = ("Patient", "DocumentReference", "Binary", "List", "Consent", "AuditEvent", "Composition",
                "Communication", "Practitioner", "PractitionerRole", "Organization", "Condition",
                "AllergyIntolerance", "MedicationStatement", "Procedure", "DeviceUseStatement", "Immunization",
                "Observation")


@dataclass(frozen=True)
class IndexedParam:
    code: str
    type: str
    url: str
    description: str
    getters: tuple[Getter, ...]
    targets: tuple[str, ...] = ()
    components: tuple[tuple[str, Getter], ...] = ()  # composite: (component type, getter on the element)


@cache
def indexed_params(resource_type: str) -> dict[str, IndexedParam]:
    out: dict[str, IndexedParam] = {}
    for base, code in definitions():
        if base not in (resource_type, "Resource") or code in out:
            continue
        if base == "Resource" and (resource_type, code) in definitions():
            continue
        param = _compile(resource_type, definition(resource_type, code))
        if param is not None:
            out[code] = param
    return out


def _compile(resource_type: str, sp: dict) -> IndexedParam | None:
    code, kind = sp["code"], sp["type"]
    desc = sp.get("description", "").split("\n")[0].strip()[:300]
    if code in BUILT_IN:
        return IndexedParam(code, kind, sp["url"], desc, ())
    expression = sp.get("expression") or ""
    try:
        parts = [p for p in split_union(expression) if _about(p, resource_type)]
        getters = tuple(compile_path(p, resource_type) for p in parts)
        components: tuple[tuple[str, Getter], ...] = ()
        if kind == "composite":
            components = tuple(_component(c) for c in sp.get("component", []))
            if len(components) != 2:
                return None
    except Unsupported:
        return None
    if not getters or kind == "special":
        return None
    return IndexedParam(code, kind, sp["url"], desc, getters, tuple(sp.get("target", ())), components)


def _about(part: str, resource_type: str) -> bool:
    text = part.lstrip("(")
    return text.startswith((resource_type + ".", "Resource.")) or not text[:1].isupper()


# R4 4.0.1 errata: DocumentReference-relationship gives its relatesto (reference) component the
# expression `code` and its relation (token) component `target`, so neither ever yields a value of its
# type; the later definitions (and the SDKs) pair relatesto with `target` and relation with `code`.
_SWAPPED_COMPONENTS = {
    ("http://hl7.org/fhir/SearchParameter/DocumentReference-relatesto", "code"): "target",
    ("http://hl7.org/fhir/SearchParameter/DocumentReference-relation", "target"): "code",
}


def _component(component: dict) -> tuple[str, Getter]:
    url = component["definition"]
    target = next((sp for sp in definitions().values() if sp["url"] == url), None)
    if target is None:
        raise Unsupported(f"composite component {url}")
    expression = _SWAPPED_COMPONENTS.get((url, component["expression"]), component["expression"])
    return target["type"], compile_path(expression, "")


Rows = dict[str, list[dict[str, Any]]]


def index_rows(resource_type: str, resource: dict, base_url: str = "") -> Rows:
    """Rows per index table ("token", "string", ...) for every indexed parameter of the resource."""
    rows: Rows = {}
    for param in indexed_params(resource_type).values():
        if not param.getters:
            continue
        nodes = [n for get in param.getters for n in get(resource)]
        if not nodes:
            continue
        if param.type == "composite":
            _composite(param, nodes, rows, base_url)
            continue
        _ROW_MAKERS[param.type](param.code, nodes, rows, base_url)
    return rows


def _add(rows: Rows, table: str, items: list[dict[str, Any]]) -> None:
    if items:
        rows.setdefault(table, []).extend(items)


def _token_rows(code: str, nodes: list[Any], rows: Rows, _base: str) -> None:
    items = [{"param": code, "system": s[:255], "code": c[:255], "text": t}
             for n in nodes for s, c, t in values.tokens(n)]
    items += [{"param": f"{code}:of-type", "system": s[:255], "code": c[:255], "text": None}
              for n in nodes for s, c in values.identifier_types(n)]
    _add(rows, "token", _unique(items))


def _string_rows(code: str, nodes: list[Any], rows: Rows, _base: str) -> None:
    _add(rows, "string", _unique([{"param": code, "value_norm": values.normalise(s), "value_exact": s[:255]}
                                  for n in nodes for s in values.strings(n)]))


def _date_rows(code: str, nodes: list[Any], rows: Rows, _base: str) -> None:
    _add(rows, "date", _unique([{"param": code, "low": lo, "high": hi} for n in nodes for lo, hi in values.dates(n)]))


def _reference_rows(code: str, nodes: list[Any], rows: Rows, base: str) -> None:
    _add(rows, "reference", _unique([{"param": code, "target_type": t, "target_id": i, "url": u}
                                     for n in nodes for t, i, u in values.references(n, base)]))
    _add(rows, "token", _unique([{"param": f"{code}:identifier", "system": s[:255], "code": c[:255], "text": None}
                                 for n in nodes for s, c, _t in values.reference_identifiers(n)]))


def _uri_rows(code: str, nodes: list[Any], rows: Rows, _base: str) -> None:
    _add(rows, "uri", _unique([{"param": code, "uri": u} for n in nodes for u in values.uris(n)]))


def _number_rows(code: str, nodes: list[Any], rows: Rows, _base: str) -> None:
    _add(rows, "number", [{"param": code, "low": lo, "high": hi} for n in nodes for lo, hi in values.numbers(n)])


def _quantity_rows(code: str, nodes: list[Any], rows: Rows, _base: str) -> None:
    _add(rows, "quantity", [{"param": code, "system": s, "code": c, "low": lo, "high": hi}
                            for n in nodes for s, c, lo, hi in values.quantities(n)])


def _composite(param: IndexedParam, nodes: list[Any], rows: Rows, base_url: str) -> None:
    items = []
    for node in nodes:
        (kind1, get1), (kind2, get2) = param.components
        for first in _composite_values(kind1, get1(node), base_url):
            for second in _composite_values(kind2, get2(node), base_url):
                items.append({"param": param.code, "first": first[:255], "second": second[:255]})
    _add(rows, "composite", _unique(items))


def _composite_values(kind: str, nodes: list[Any], base_url: str) -> list[str]:
    """Composite components are compared as canonical text: a token's code, a reference's Type/id."""
    if kind == "token":
        return [c for n in nodes for _s, c, _t in values.tokens(n)]
    if kind == "reference":
        return [f"{t}/{i}" if i else u for n in nodes for t, i, u in values.references(n, base_url)]
    return [values.normalise(s) for n in nodes for s in values.strings(n)]


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for item in items:
        key = tuple(item.values())
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


_ROW_MAKERS: dict[str, Callable[[str, list[Any], Rows, str], None]] = {
    "token": _token_rows, "string": _string_rows, "date": _date_rows, "reference": _reference_rows,
    "uri": _uri_rows, "number": _number_rows, "quantity": _quantity_rows,
}
