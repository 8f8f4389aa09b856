"""FHIR JSON in and out, keeping decimals exactly as written.

FHIR says a decimal's precision is part of its value (`1.50` is not `1.5`); the standard
library would turn it into a float. simplejson with `use_decimal` keeps the digits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import simplejson


class ExactDecimal(Decimal):
    """A Decimal that writes back exactly the text it was read from (`0.0000001`, not `1E-7`)."""

    _text: str

    def __new__(cls, text: str) -> ExactDecimal:
        value = super().__new__(cls, text)
        value._text = text
        return value

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"ExactDecimal({self._text!r})"


class JsonSyntaxError(ValueError):
    """The bytes are not JSON; carries the position for the OperationOutcome."""


def loads(data: bytes | str) -> Any:
    try:
        value = simplejson.loads(data, parse_float=ExactDecimal, object_pairs_hook=_no_duplicates)
    except simplejson.JSONDecodeError as exc:
        raise JsonSyntaxError(f"Malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise JsonSyntaxError(f"Unreadable JSON: {exc.__class__.__name__}") from exc
    _check_depth(value)
    return value


MAX_DEPTH = 100  # a FHIR resource nests about 30 deep; deeper bodies only serve to exhaust the stack


def _check_depth(value: Any) -> None:
    """Refuse absurdly nested JSON before any recursive code (validation, JSON Patch, copies) meets it."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JsonSyntaxError(f"JSON nested deeper than {MAX_DEPTH} levels is refused")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 8259 leaves duplicate names undefined; FHIR JSON forbids them: refuse rather than guess."""
    out = dict(pairs)  # in C; a name given twice leaves fewer entries than pairs
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonSyntaxError(f"Malformed JSON: the property {key!r} appears twice in one object")
            seen.add(key)
    return out


def trusted_loads(text: str) -> Any:
    """JSON this server wrote itself (a stored resource): decimals kept, without the checks a client's body needs
    (duplicate names, depth), which it passed when it was stored."""
    return simplejson.loads(text, parse_float=ExactDecimal)


Raw = simplejson.RawJSON


def raw(text: str) -> Raw:
    """Stored JSON to answer as it is: `dumps` writes it verbatim, so a read or a search page is never parsed and
    written again."""
    return simplejson.RawJSON(text)


def materialize(value: Any) -> Any:
    """`value` with every `raw` piece parsed, for what must walk the resource (XML, pretty printing, a batch's
    entries)."""
    if isinstance(value, Raw):
        return trusted_loads(value.encoded_json)
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


# Types orjson would write that simplejson refuses: refused here too (TypeError), so the output never depends on which
# of the two wrote it.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def dumps(value: Any) -> str:
    """Compact JSON, decimals and `raw` pieces as written. orjson writes the same text as simplejson about ten
    times faster (an ITI-65's ~700 KB of base64 is written twice: stored, then answered); what it cannot write (an
    integer beyond 64 bits, a lone surrogate, a key that is no string) goes to simplejson, as before."""
    try:
        return orjson.dumps(value, default=_piece, option=_PASSTHROUGH).decode()
    except TypeError:  # orjson.JSONEncodeError included
        return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, separators=(",", ":"))


def _piece(value: Any) -> orjson.Fragment:
    if isinstance(value, Raw):
        return orjson.Fragment(value.encoded_json)
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, str | int | float | dict | list | tuple):  # a subclass: as its base type writes it
        return orjson.Fragment(simplejson.dumps(value, use_decimal=True, ensure_ascii=False, separators=(",", ":")))
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps_pretty(value: Any) -> str:
    return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, indent=2)
