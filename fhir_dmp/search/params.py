"""The search parameters this server supports, and parsing of a query into a criteria tree.

Only what the engine really does is listed here; the CapabilityStatement is generated from
this table, so it can never advertise a parameter the server ignores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fhir_dmp.errors import Issue, bad_request
from fhir_dmp.search.dates import parse_date_range
from fhir_dmp.search.definitions import definition
from fhir_dmp.storage import criteria as c

# Result parameters: they shape the answer, they do not filter it.
RESULT_PARAMS = frozenset({"_count", "_total", "_format", "_pretty", "_cursor", "_summary", "_elements"})
PATIENT_SCOPED = frozenset({"DocumentReference", "List", "Consent", "Composition", "Communication", "AuditEvent"})
WITH_IDENTIFIER = frozenset({
    "Patient", "DocumentReference", "List", "Consent", "Composition", "Communication",
    "Practitioner", "PractitionerRole", "Organization",
})


@dataclass(frozen=True)
class ParamDef:
    name: str
    type: str
    url: str
    documentation: str


# The parameters the engine implements; everything else about them comes from the official definitions.
_ENGINE = ("_id", "_lastUpdated", "identifier", "patient")


def supported_params(resource_type: str) -> tuple[ParamDef, ...]:
    out = []
    for name in _ENGINE:
        if name == "identifier" and resource_type not in WITH_IDENTIFIER:
            continue
        if name == "patient" and resource_type not in PATIENT_SCOPED:
            continue
        sp = definition(resource_type, name)
        out.append(ParamDef(name, sp["type"], sp["url"], sp.get("description", "").split("\n")[0][:300]))
    return tuple(out)


@dataclass(frozen=True)
class SearchQuery:
    criteria: c.Criterion
    count: int
    cursor: int | None
    total: str  # none | estimate | accurate
    ignored: tuple[str, ...] = field(default=())

    def warnings(self) -> list[Issue]:
        return [Issue("not-supported", f"Search parameter '{name}' is not supported and was ignored",
                      severity="warning") for name in self.ignored]


def parse_query(
    resource_type: str,
    query: list[tuple[str, str]],
    *,
    strict: bool,
    default_count: int,
    max_count: int,
) -> SearchQuery:
    """Type every parameter; unknown ones are a 400 when strict, else ignored and reported."""
    known = {p.name: p for p in supported_params(resource_type)}
    parts: list[c.Criterion] = []
    ignored: list[str] = []
    count, cursor, total = default_count, None, "accurate"
    for raw_name, value in query:
        name, _, modifier = raw_name.partition(":")
        if "\x00" in raw_name or "\x00" in value:  # no stored value holds one, and PostgreSQL refuses it
            raise bad_request(f"Search parameter {raw_name!r} contains a NUL character", raw_name)
        if name == "_count":
            count = min(_non_negative_int(raw_name, value), max_count)
        elif name == "_cursor":
            cursor = _non_negative_int(raw_name, value)
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad_request("_total must be none, estimate or accurate", "_total")
            total = value
        elif name in RESULT_PARAMS:
            continue
        elif name in known and not modifier:
            parts.append(_criterion(known[name], value))
        elif strict:
            raise bad_request(f"Search parameter '{raw_name}' is not supported for {resource_type}",
                              code="not-supported")
        else:
            ignored.append(raw_name)
    return SearchQuery(c.AllOf(tuple(parts)), count, cursor, total, tuple(ignored))


def _non_negative_int(name: str, value: str) -> int:
    if not value.isdigit():
        raise bad_request(f"{name} must be a non-negative integer, not {value!r}", name)
    return int(value)


def _criterion(param: ParamDef, value: str) -> c.Criterion:
    alternatives = [v for v in _split_or(value)]
    if not alternatives or any(v == "" for v in alternatives):
        raise bad_request(f"Search parameter '{param.name}' has an empty value", param.name)
    if param.name == "_id":
        return c.IdIn(tuple(alternatives))
    if param.name == "_lastUpdated":
        if len(alternatives) != 1:
            raise bad_request("_lastUpdated takes one value per repetition", "_lastUpdated")
        return _last_updated(alternatives[0])
    if param.name == "patient":
        return c.AnyOf(tuple(c.PatientIs(_patient_id(v)) for v in alternatives))
    return c.AnyOf(tuple(_token(param.name, v) for v in alternatives))


def _split_or(value: str) -> list[str]:
    """Split on commas not escaped with a backslash, then unescape."""
    out, current, escaped = [], [], False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def _token(name: str, value: str) -> c.Token:
    if "|" not in value:
        return c.Token(name, None, value)
    system, _, code = value.partition("|")
    return c.Token(name, system, code or None)


def _patient_id(value: str) -> str:
    ref = value.split("/_history/")[0]
    if ref.startswith("Patient/"):
        ref = ref[len("Patient/"):]
    if "/" in ref:
        raise bad_request(f"patient must be 'Patient/<id>' or '<id>', not {value!r}", "patient")
    return ref


_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _last_updated(value: str) -> c.Criterion:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text = value[2:] if value[:2] in _PREFIXES else value
    low, high = parse_date_range(text, "_lastUpdated")
    if prefix == "eq":
        return c.UpdatedCompare(low, high)
    if prefix in ("gt", "sa"):
        return c.UpdatedCompare(high, None)
    if prefix == "ge":
        return c.UpdatedCompare(low, None)
    if prefix in ("lt", "eb"):
        return c.UpdatedCompare(None, low)
    if prefix == "le":
        return c.UpdatedCompare(None, high)
    if prefix == "ap":
        slack = max((high - low) / 10, timedelta(seconds=1))
        return c.UpdatedCompare(low - slack, high + slack)
    # ne: outside the range
    return c.AnyOf((c.UpdatedCompare(None, low), c.UpdatedCompare(high, None)))


