"""A search query string -> a typed `SearchQuery` (criteria tree + result parameters).

Semantics of http://hl7.org/fhir/R4/search.html: OR by comma, AND by repetition, modifiers,
prefixes with precision ranges, chains (several levels), reverse chains (`_has`). A bad value is
always a 400; an unknown parameter is a 400 under `Prefer: handling=strict`, else ignored and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from fhir_dmp.errors import Issue, bad_request
from fhir_dmp.search.dates import now_utc, parse_date_range, shift
from fhir_dmp.search.extract import SERVED_TYPES, IndexedParam, indexed_params
from fhir_dmp.search.values import normalise, precision_range
from fhir_dmp.storage import criteria as c

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = frozenset({"_count", "_total", "_sort", "_include", "_revinclude", "_summary", "_elements",
                           "_format", "_pretty", "_cursor"})
SORTABLE = frozenset({"token", "string", "date", "number", "quantity", "uri", "reference"})
MODIFIERS = {
    "token": {"not", "text", "of-type", "missing"},
    "string": {"exact", "contains", "missing"},
    "uri": {"below", "above", "missing"},
    "date": {"missing"}, "number": {"missing"}, "quantity": {"missing"}, "composite": {"missing"},
    "reference": {"identifier", "missing"},
}
_KIND = {"token": "token", "string": "string", "uri": "uri", "date": "date", "number": "number",
         "quantity": "quantity", "reference": "reference", "composite": "composite"}
MAX_CHAIN = 4
# Reference parameters whose Patient target is, by construction, the row's patient key (the server
# files each resource in the DMP its subject/patient names: services/references.py). Saying so lets
# the patient-key index drive a DMP's searches; the reference match itself is still applied.
PATIENT_KEY_PARAMS = {
    "DocumentReference": {"patient", "subject"}, "Composition": {"patient", "subject"},
    "List": {"patient", "subject"}, "Consent": {"patient"}, "Communication": {"patient", "subject"},
    "AuditEvent": {"patient"},  # the server files each trace under the DMP its patient entity names
    # VSM section entries (services/registry.py patient paths)
    "Condition": {"patient", "subject"}, "AllergyIntolerance": {"patient"},
    "MedicationStatement": {"patient", "subject"}, "Procedure": {"patient", "subject"},
    "DeviceUseStatement": {"patient", "subject"}, "Immunization": {"patient"}, "Observation": {"patient", "subject"},
}


@dataclass(frozen=True)
class SortKey:
    param: str
    kind: str  # "_id", "_lastUpdated" or an index table kind
    descending: bool


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str
    target_type: str | None
    iterate: bool


@dataclass(frozen=True)
class SearchQuery:
    criteria: c.Criterion
    count: int
    cursor: str | None = None
    total: str = "accurate"  # none | estimate | accurate
    sort: tuple[SortKey, ...] = ()
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    summary: str | None = None
    elements: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())

    def warnings(self) -> list[Issue]:
        return [Issue("not-supported", f"Search parameter '{name}' is not supported and was ignored",
                      severity="warning") for name in self.ignored]


class _Unknown(Exception):
    """A parameter name this server does not know (400 or ignored, by the handling preference)."""


def parse_query(resource_type: str, pairs: list[tuple[str, str]], *, strict: bool, default_count: int,
                max_count: int, base_url: str = "") -> SearchQuery:
    parts: list[c.Criterion] = []
    ignored: list[str] = []
    result: dict = {"count": default_count, "sort": (), "includes": [], "revincludes": []}
    for name, value in pairs:
        if name.split(":")[0] in RESULT_PARAMS:
            _result_param(resource_type, name, value, result, max_count)
            continue
        try:
            parts.append(parse_param(resource_type, name, value, base_url))
        except _Unknown as exc:
            if strict:
                raise bad_request(f"Search parameter '{name}' is not supported for {resource_type}: {exc}",
                                  code="not-supported") from None
            ignored.append(name)
    return SearchQuery(
        criteria=c.AllOf(tuple(parts)), count=result["count"], cursor=result.get("cursor"),
        total=result.get("total", "accurate"), sort=result["sort"], includes=tuple(result["includes"]),
        revincludes=tuple(result["revincludes"]), summary=result.get("summary"),
        elements=result.get("elements", ()), ignored=tuple(ignored),
    )


def parse_criteria(resource_type: str, pairs: list[tuple[str, str]], base_url: str = "") -> c.Criterion:
    """Strict criteria only (conditional interactions): unknown or result parameters are a 400."""
    parts = []
    for name, value in pairs:
        if name in ("_format", "_pretty"):
            continue
        try:
            parts.append(parse_param(resource_type, name, value, base_url))
        except _Unknown as exc:
            raise bad_request(f"Search parameter '{name}' is not supported for {resource_type}: {exc}",
                              code="not-supported") from None
    return c.AllOf(tuple(parts))


def parse_param(resource_type: str, name: str, value: str, base_url: str = "", depth: int = 0) -> c.Criterion:
    if "\x00" in name or "\x00" in value:  # no stored value holds one, and PostgreSQL refuses it (500)
        raise bad_request(f"Search parameter {name!r} contains a NUL character", name)
    if depth > MAX_CHAIN:
        raise bad_request(f"'{name}': chains are limited to {MAX_CHAIN} levels")
    if name.startswith("_has:"):
        return _has(resource_type, name, value, base_url, depth)
    head, dot, rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param = indexed_params(resource_type).get(code)
    if param is None:
        raise _Unknown("unknown parameter")
    if dot:
        chain = _chain(resource_type, param, modifier, rest, value, base_url, depth)
        if code in PATIENT_KEY_PARAMS.get(resource_type, ()) and chain.target_types == ("Patient",):
            return c.AllOf((c.PatientMatches(chain.inner), chain))
        return chain
    if modifier == "missing":
        if value not in ("true", "false"):
            raise bad_request(f"{name} takes true or false", name)
        if code in ("_id", "_lastUpdated"):
            return c.IdIn(()) if value == "true" else c.AllOf(())
        return c.Missing(code, _KIND[param.type], value == "true")
    if modifier and param.type == "reference":
        if modifier not in MODIFIERS["reference"] and modifier not in SERVED_TYPES:
            raise bad_request(f"Modifier ':{modifier}' is not supported on reference parameter '{code}'", name)
    elif modifier and modifier not in MODIFIERS.get(param.type, set()) and not (code == "_id" and not modifier):
        raise bad_request(f"Modifier ':{modifier}' is not supported on {param.type} parameter '{code}'", name)
    alternatives = split_or(value)
    if not alternatives or any(v == "" for v in alternatives):
        raise bad_request(f"Search parameter '{name}' has an empty value", name)
    if code == "_id":
        if modifier not in ("", "not"):
            raise bad_request(f"Modifier ':{modifier}' is not supported on '_id'", name)
        ids = c.IdIn(tuple(alternatives))
        return c.Not(ids) if modifier == "not" else ids
    if param.type == "token" and modifier == "not":
        return c.Not(c.AnyOf(tuple(_token(code, v, None) for v in alternatives)))
    matches = tuple(_value(param, modifier, v, name, base_url) for v in alternatives)
    keys = tuple(m.target_id for m in matches if isinstance(m, c.Reference) and m.target_type == "Patient")
    if code in PATIENT_KEY_PARAMS.get(resource_type, ()) and keys and len(keys) == len(matches):
        return c.AllOf((c.AnyOf(tuple(c.PatientIs(k) for k in keys if k)), c.AnyOf(matches)))
    return c.AnyOf(matches)


def _value(param: IndexedParam, modifier: str, value: str, name: str, base_url: str) -> c.Criterion:
    kind = param.type
    if param.code == "_lastUpdated":
        return _date("_lastUpdated", value, name)
    if kind == "token":
        return _token(param.code, value, modifier or None)
    if kind == "string":
        if modifier == "exact":
            return c.String(param.code, value, "exact")
        return c.String(param.code, normalise(value), "contains" if modifier == "contains" else "start")
    if kind == "uri":
        return c.Uri(param.code, value, modifier or "exact")
    if kind == "date":
        return _date(param.code, value, name)
    if kind in ("number", "quantity"):
        return _number(param.code, value, name, quantity=kind == "quantity")
    if kind == "reference":
        return _reference(param, modifier, value, base_url)
    if kind == "composite":
        first, sep, second = value.partition("$")
        if not sep:
            raise bad_request(f"{name}: a composite value is 'a$b'", name)
        (kind1, _), (kind2, _) = param.components
        return c.Composite(param.code, _composite_part(kind1, first, base_url),
                           _composite_part(kind2, second, base_url))
    raise _Unknown(f"{kind} parameters are not supported")


def _composite_part(kind: str, value: str, base_url: str) -> str:
    """One component as the canonical text the index keeps (extract._composite_values)."""
    if kind == "token":  # the index keeps the code only
        return value.split("|", 1)[1] if "|" in value else value
    if kind == "reference":
        text = value.split("/_history/")[0]
        base = base_url.rstrip("/") + "/"
        return text[len(base):] if base_url and text.startswith(base) else text
    return normalise(value)


def split_or(value: str) -> list[str]:
    """Split on commas not escaped with a backslash, then unescape `\\,`, `\\|`, `\\$`, `\\\\`."""
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


def _token(code: str, value: str, modifier: str | None) -> c.Criterion:
    if modifier == "text":
        return c.Token(code, None, None, normalise(value))
    if modifier == "of-type":
        parts = value.split("|")
        if len(parts) != 3 or not all(parts[1:]):
            raise bad_request(f"{code}:of-type takes system|code|value", f"{code}:of-type")
        return c.Token(f"{code}:of-type", parts[0], f"{parts[1]}|{parts[2]}")
    if "|" not in value:
        return c.Token(code, None, value)
    system, _, token_code = value.partition("|")
    return c.Token(code, system, token_code or None)


def _prefixed(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and len(value) > 2 and (value[2].isdigit() or value[2] in "-."):
        return value[:2], value[2:]
    return "eq", value


def _date(code: str, value: str, name: str) -> c.DateRange:
    prefix, text = _prefixed(value)
    low, high = parse_date_range(text, name)
    if prefix == "ap":
        gap = abs(now_utc() - low) * 0.1 if low < datetime(9999, 1, 1) else timedelta(0)
        low, high = shift(low, -gap), shift(high, gap)
    return c.DateRange(code, prefix, low, high)


def _number(code: str, value: str, name: str, *, quantity: bool) -> c.NumberRange:
    prefix, text = _prefixed(value)
    number, system, unit = text, None, None
    if quantity and "|" in text:
        number, system, unit = (text.split("|") + ["", ""])[:3]
    try:
        decimal = Decimal(number)
        if not decimal.is_finite():  # NaN, sNaN, Infinity: no R4 decimal (and sNaN raises on any arithmetic)
            raise InvalidOperation
        low, high = precision_range(decimal)
        if prefix == "ap":
            slack = abs(decimal) * Decimal("0.1")
            low, high = decimal - slack, decimal + slack
    except InvalidOperation:  # also an exponent beyond the context's range (1e999999999)
        raise bad_request(f"{name}: {number!r} is not a number", name) from None
    return c.NumberRange(code, prefix, decimal, low, high, quantity, system or None, unit or None)


def _reference(param: IndexedParam, modifier: str, value: str, base_url: str) -> c.Criterion:
    if modifier == "identifier":
        return _token(f"{param.code}:identifier", value, None)
    text = value.split("/_history/")[0]
    if base_url and text.startswith(base_url.rstrip("/") + "/"):
        text = text[len(base_url.rstrip("/")) + 1:]
    if "://" in text or text.startswith("urn:"):
        return c.Reference(param.code, url=value)
    parts = text.split("/")
    if len(parts) == 2 and parts[0][:1].isupper():
        if modifier and modifier != parts[0]:
            return c.IdIn(())
        return c.Reference(param.code, parts[0], parts[1])
    if len(parts) != 1:
        return c.Reference(param.code, url=value)
    targets = [modifier] if modifier else [t for t in param.targets if t in SERVED_TYPES] or None
    if targets and len(targets) == 1:
        return c.Reference(param.code, targets[0], text)
    return c.Reference(param.code, None, text)


def _chain(resource_type: str, param: IndexedParam, modifier: str, rest: str, value: str, base_url: str,
           depth: int) -> c.Chain:
    if param.type != "reference":
        raise bad_request(f"'{param.code}' is a {param.type} parameter: it cannot be chained")
    targets = [modifier] if modifier else [t for t in param.targets if t in SERVED_TYPES]
    branches = []
    for target in targets:
        if target not in SERVED_TYPES:
            raise bad_request(f"Chain target '{target}' is not a type served here")
        try:
            inner = parse_param(target, rest, value, base_url, depth + 1)
        except _Unknown:
            continue
        branches.append(c.AllOf((c.TypeIs((target,)), inner)))
    if not branches:
        raise _Unknown(f"no target of '{param.code}' has a parameter '{rest.split(':')[0]}'")
    inner_node = branches[0] if len(branches) == 1 else c.AnyOf(tuple(branches))
    return c.Chain(param.code, tuple(targets), inner_node)


def _has(resource_type: str, name: str, value: str, base_url: str, depth: int) -> c.Criterion:
    pieces = name.split(":", 3)
    if len(pieces) != 4 or not all(pieces[1:]):
        raise bad_request(f"'{name}': _has takes _has:Type:reference-parameter:parameter", name)
    _, source, ref_code, rest = pieces
    if source not in SERVED_TYPES:
        raise bad_request(f"'{name}': {source} is not a type served here", name)
    ref = indexed_params(source).get(ref_code)
    if ref is None or ref.type != "reference":
        raise bad_request(f"'{name}': {ref_code} is not a reference parameter of {source}", name)
    return c.Has(source, ref_code, parse_param(source, rest, value, base_url, depth + 1))


def _result_param(resource_type: str, name: str, value: str, result: dict, max_count: int) -> None:
    base, _, modifier = name.partition(":")
    if base == "_count":
        if not (value.isascii() and value.isdigit()):
            raise bad_request(f"_count must be a non-negative integer, not {value!r}", "_count")
        # int() refuses more than 4,300 digits (ValueError: a 500): any count that long is beyond the bound
        digits = value.lstrip("0")
        result["count"] = max_count if len(digits) > len(str(max_count)) else min(int(value), max_count)
    elif base == "_cursor":
        result["cursor"] = value
    elif base == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise bad_request("_total must be none, estimate or accurate", "_total")
        result["total"] = value
    elif base == "_summary":
        if value not in ("true", "false", "text", "data", "count"):
            raise bad_request("_summary must be true, false, text, data or count", "_summary")
        result["summary"] = value
    elif base == "_elements":
        result["elements"] = tuple(e.strip() for e in value.split(",") if e.strip())
    elif base == "_sort":
        result["sort"] = tuple(_sort_key(resource_type, key) for key in value.split(",") if key)
    elif base in ("_include", "_revinclude"):
        if modifier not in ("", "iterate", "recurse"):
            raise bad_request(f"{name}: the only modifier is :iterate", name)
        result["includes" if base == "_include" else "revincludes"].append(
            _include(resource_type, base, value, modifier != ""))


def _sort_key(resource_type: str, key: str) -> SortKey:
    descending = key.startswith("-")
    code = key[1:] if descending else key
    if code in ("_id", "_lastUpdated"):
        return SortKey(code, code, descending)
    param = indexed_params(resource_type).get(code)
    if param is None or param.type not in SORTABLE:
        raise bad_request(f"_sort: '{code}' is not a sortable parameter of {resource_type}", "_sort")
    return SortKey(code, _KIND[param.type], descending)


def _include(resource_type: str, name: str, value: str, iterate: bool) -> Include:
    pieces = value.split(":")
    if len(pieces) not in (2, 3):
        raise bad_request(f"{name}={value}: expected SourceType:parameter[:TargetType]", name)
    source, code = pieces[0], pieces[1]
    target = pieces[2] if len(pieces) == 3 else None
    if source not in SERVED_TYPES:
        raise bad_request(f"{name}: {source} is not a type served here", name)
    if name == "_include" and source != resource_type and not iterate:
        raise bad_request(f"_include={value}: the source type must be {resource_type} (or use :iterate)", name)
    if code != "*":
        param = indexed_params(source).get(code)
        if param is None or param.type != "reference":
            raise bad_request(f"{name}: '{code}' is not a reference parameter of {source}", name)
    if target is not None and target not in SERVED_TYPES:
        raise bad_request(f"{name}: {target} is not a type served here", name)
    return Include(source, code, target, iterate)


__all__ = ["SearchQuery", "SortKey", "Include", "parse_query", "parse_criteria", "parse_param"]
