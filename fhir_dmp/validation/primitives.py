"""Primitive values in their plainest form: what lets the structural check skip the `fhir.resources` models.

The models (pydantic, `structure.py`'s first layer) cost more than the rest of a write's validation put together
(about 4.6 ms for a 10-document ITI-65 Bundle). A value `plain` accepts here is one those models accept whatever
the element: the tests hold this against the models on every shipped and R4 example and on mutations of their
values (`tests/validation/test_primitives.py`). A resource whose every primitive is plain, and which the R4 walk
finds nothing wrong with, skips the models; any other value sends it through them, so the issues they would give
are exactly those they gave before. `plain` may say no to a valid value (then the models decide); it must never say
yes to one they refuse.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from decimal import Decimal

_INT32 = 2**31 - 1
# Single spaces only inside, none at the ends: what the strictest string pattern of the models (code) accepts.
_TOKEN = re.compile(r"[^\s]+(?: [^\s]+)*")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_URI = re.compile(r"\S+")
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_DAY = r"(?P<y>[12][0-9]{3})(?:-(?P<m>0[1-9]|1[0-2])(?:-(?P<d>0[1-9]|[12][0-9]|3[01]))?)?"
_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_ZONE = r"(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])"
_DATE = re.compile(_DAY)
_DATETIME = re.compile(_DAY + rf"(?P<t>T{_CLOCK}{_ZONE})?")
_INSTANT = re.compile(_DAY + rf"T{_CLOCK}{_ZONE}")
_TIME = re.compile(_CLOCK)


def _valid_day(match: re.Match[str] | None, *, needs_time: bool = False) -> bool:
    if match is None:
        return False
    if match.group("d") is None:
        return not needs_time
    try:
        date(int(match.group("y")), int(match.group("m")), int(match.group("d")))
    except ValueError:
        return False
    return True


def _whole(low: int) -> Callable[[object], bool]:
    return lambda v: type(v) is int and low <= v <= _INT32


def _matching(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


_PLAIN: dict[str, Callable[[object], bool]] = {
    "boolean": lambda v: v is True or v is False,
    "integer": _whole(-_INT32 - 1),
    "unsignedInt": _whole(0),
    "positiveInt": _whole(1),
    "decimal": lambda v: (type(v) is int and abs(v) <= _INT32) or (
        isinstance(v, Decimal) and _DECIMAL.fullmatch(str(v)) is not None),
    "string": _matching(_TOKEN),
    "markdown": _matching(_TOKEN),
    "code": _matching(_TOKEN),
    "id": _matching(_ID),
    "uri": _matching(_URI),
    "url": _matching(_URI),
    "canonical": _matching(_URI),
    "uuid": _matching(_URI),
    "oid": _matching(_OID),
    "base64Binary": lambda v: isinstance(v, str) and _padded_base64(v),
    "date": lambda v: isinstance(v, str) and _valid_day(_DATE.fullmatch(v)),
    "dateTime": lambda v: isinstance(v, str) and _valid_day(_DATETIME.fullmatch(v)),
    "instant": lambda v: isinstance(v, str) and _valid_day(_INSTANT.fullmatch(v), needs_time=True),
    "time": _matching(_TIME),
}


def _padded_base64(text: str) -> bool:
    """`[A-Za-z0-9+/]*={0,2}` with a length multiple of 4, without the regular expression (a Binary's 70 KB of base64
    took it 0.12 ms; deleting the alphabet's bytes and finding nothing left takes a fifth of that)."""
    if len(text) % 4 or not text.isascii():
        return False
    body = text.rstrip("=")
    return len(text) - len(body) <= 2 and not body.encode("ascii").translate(None, _BASE64)


def plain(value: object, fhir_type: str) -> bool:
    """Whether `value` of an element of R4 primitive type `fhir_type` is certainly accepted by the models (xhtml
    and any type not listed: no)."""
    check = _PLAIN.get(fhir_type)
    return check is not None and check(value)

