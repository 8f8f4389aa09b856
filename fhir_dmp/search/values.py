"""FHIR values -> index row values, per search parameter type (R4 search.html, "Search types")."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_dmp.errors import FhirError
from fhir_dmp.search.dates import parse_date_range
from fhir_dmp.search.paths import reference_type

MIN_DATE, MAX_DATE = datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)


def normalise(text: str) -> str:
    """Case- and accent-insensitive form used by string search (`Hélène` matches `helene`)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()[:255]


def tokens(node: Any) -> list[tuple[str, str, str | None]]:
    """(system, code, text) from a Coding, CodeableConcept, Identifier, ContactPoint or primitive."""
    if isinstance(node, bool):
        return [("", "true" if node else "false", None)]
    if isinstance(node, str):
        return [("", node, None)]
    if not isinstance(node, dict):
        return []
    if "coding" in node or ("text" in node and "value" not in node):
        text = node.get("text") if isinstance(node.get("text"), str) else None
        out = [row for coding in node.get("coding") or [] for row in tokens(coding)]
        if text:  # `:text` searches CodeableConcept.text as well as each Coding.display (R4)
            norm = normalise(text)
            out = [(s, c, t or norm) for s, c, t in out] + [(s, c, norm) for s, c, t in out if t] or [("", "", norm)]
        return out
    if "code" in node:  # Coding
        code, system = node.get("code"), node.get("system")
        display = node.get("display")
        if isinstance(code, str):
            return [(system if isinstance(system, str) else "", code,
                     normalise(display) if isinstance(display, str) else None)]
        return []
    if isinstance(node.get("value"), str):  # Identifier or ContactPoint (its system: phone, email...)
        system = node.get("system")
        return [(system if isinstance(system, str) else "", node["value"], None)]
    return []


def identifier_types(node: Any) -> list[tuple[str, str]]:
    """For `:of-type`: (type system, "type code|value") of an Identifier."""
    if not isinstance(node, dict) or not isinstance(node.get("value"), str):
        return []
    kind = node.get("type") if isinstance(node.get("type"), dict) else {}
    return [(s, f"{c}|{node['value']}") for s, c, _t in tokens(kind) if c]


_STRING_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district", "state",
                 "postalCode", "country")


def strings(node: Any) -> list[str]:
    """Every searchable text of a string, HumanName or Address."""
    if isinstance(node, str):
        return [node]
    if not isinstance(node, dict):
        return []
    out: list[str] = []
    for part in _STRING_PARTS:
        value = node.get(part)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                out.append(item)
    return out


def dates(node: Any) -> list[tuple[datetime, datetime]]:
    """[low, high) instants covered by a date, dateTime, instant or Period."""
    try:
        if isinstance(node, str):
            return [parse_date_range(node, "date")]
        if isinstance(node, dict) and ("start" in node or "end" in node):
            low = parse_date_range(node["start"], "date")[0] if isinstance(node.get("start"), str) else MIN_DATE
            high = parse_date_range(node["end"], "date")[1] if isinstance(node.get("end"), str) else MAX_DATE
            return [(low, high)]
    except FhirError:
        return []
    return []


def references(node: Any, base_url: str = "") -> list[tuple[str, str, str]]:
    """(target type, target id, url): a local literal gives type and id, anything else its url."""
    if isinstance(node, str):  # canonical
        return [("", "", node[:512])]
    if not isinstance(node, dict):
        return []
    literal = node.get("reference")
    if not isinstance(literal, str):
        return []
    local = literal
    if base_url and local.startswith(base_url.rstrip("/") + "/"):
        local = local[len(base_url.rstrip("/")) + 1:]
    local = local.split("/_history/")[0]
    parts = local.split("/")
    if len(parts) == 2 and parts[0][:1].isupper() and parts[1]:
        return [(parts[0], parts[1][:64], "")]
    return [(reference_type(node) or "", "", literal[:512])]


def reference_identifiers(node: Any) -> list[tuple[str, str, str | None]]:
    """For `:identifier`: the Reference.identifier as a token."""
    if isinstance(node, dict) and isinstance(node.get("identifier"), dict):
        return tokens(node["identifier"])
    return []


def numbers(node: Any) -> list[tuple[Decimal, Decimal]]:
    """[low, high] of a decimal by its precision (R4: 100 covers [99.5, 100.5))."""
    try:
        value = node if isinstance(node, Decimal) else Decimal(str(node))
    except (InvalidOperation, ValueError):
        return []
    if isinstance(node, bool):
        return []
    return [precision_range(value)]


def precision_range(value: Decimal) -> tuple[Decimal, Decimal]:
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb((exponent if isinstance(exponent, int) else 0) - 1)
    return value - half, value + half


def quantities(node: Any) -> list[tuple[str, str, Decimal, Decimal]]:
    if not isinstance(node, dict) or "value" not in node:
        return []
    ranges = numbers(node["value"])
    system = node.get("system") if isinstance(node.get("system"), str) else ""
    code = node.get("code") if isinstance(node.get("code"), str) else node.get("unit")
    return [(system, code if isinstance(code, str) else "", low, high) for low, high in ranges]


def uris(node: Any) -> list[str]:
    return [node[:512]] if isinstance(node, str) else []
