"""FHIR JSON in and out, keeping decimals exactly as written.

FHIR says a decimal's precision is part of its value (`1.50` is not `1.5`); the standard
library would turn it into a float. simplejson with `use_decimal` keeps the digits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

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
        return simplejson.loads(data, parse_float=ExactDecimal, object_pairs_hook=_no_duplicates)
    except simplejson.JSONDecodeError as exc:
        raise JsonSyntaxError(f"Malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise JsonSyntaxError(f"Unreadable JSON: {exc.__class__.__name__}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 8259 leaves duplicate names undefined; FHIR JSON forbids them: refuse rather than guess."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonSyntaxError(f"Malformed JSON: the property {key!r} appears twice in one object")
        out[key] = value
    return out


def dumps(value: Any) -> str:
    return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, separators=(",", ":"))


def dumps_pretty(value: Any) -> str:
    return simplejson.dumps(value, use_decimal=True, ensure_ascii=False, indent=2)
