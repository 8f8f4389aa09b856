"""The R4 element table the XML <-> JSON converter walks, and the primitive value rules.

XML needs what JSON leaves implicit: element order, which primitives are numbers or booleans, which
elements are XML attributes (Element.id, Extension.url) and where a nested resource sits. That comes
from `fhir_dmp/data/r4-elements.json` (built from the official StructureDefinitions), loaded once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

from fhir_dmp.errors import bad_request

ELEMENTS_FILE = Path(__file__).resolve().parents[1] / "data" / "r4-elements.json"

# Value kinds: how a primitive's text maps to JSON, and the non-primitive kinds.
BOOL, INT, UINT, PINT, DEC, STR = "bool", "int", "uint", "pint", "dec", "str"
COMPLEX, RESOURCE, XHTML = "complex", "resource", "xhtml"
PRIMITIVE_KINDS = frozenset((BOOL, INT, UINT, PINT, DEC, STR))
_KIND_OF = {
    "boolean": BOOL,
    "integer": INT,
    "unsignedInt": UINT,
    "positiveInt": PINT,
    "decimal": DEC,
    "xhtml": XHTML,
    "Resource": RESOURCE,
}

# FHIR R4 datatype regexes (http://hl7.org/fhir/R4/datatypes.html); integers are 32-bit signed.
_NUMBER = {
    INT: re.compile(r"-?(0|[1-9][0-9]*)"),
    UINT: re.compile(r"0|[1-9][0-9]*"),
    PINT: re.compile(r"\+?[1-9][0-9]*"),
    DEC: re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"),
}


@dataclass(frozen=True, slots=True)
class Elem:
    """One element of a type: `type` names the complex type to recurse into."""

    name: str
    type: str
    kind: str
    array: bool
    attr: bool  # an XML attribute (Element.id, Extension.url), not a child element
    order: int  # its place in the definition: XML order (two choices of one element are the walk's to refuse)


@dataclass(frozen=True, slots=True)
class TypeInfo:
    name: str
    elems: dict[str, Elem]
    attrs: tuple[Elem, ...]


@dataclass(frozen=True, slots=True)
class Model:
    types: dict[str, TypeInfo]
    resources: frozenset[str]
    source: str


@cache
def model() -> Model:
    """Load and index the table once per process (a few ms)."""
    raw = json.loads(ELEMENTS_FILE.read_text(encoding="utf-8"))
    primitives = set(raw["primitives"])
    types: dict[str, TypeInfo] = {}
    for tname, rows in raw["types"].items():
        elems = {}
        for i, row in enumerate(rows):
            name, typ, flags = row[0], row[1], row[2]
            kind = _KIND_OF.get(typ) or (STR if typ in primitives else COMPLEX)
            elems[name] = Elem(name, typ, kind, "*" in flags, "@" in flags, i)
        attrs = tuple(e for e in elems.values() if e.attr)
        types[tname] = TypeInfo(tname, elems, attrs)
    return Model(types, frozenset(raw["resources"]), raw["source"])


def read_value(kind: str, text: str) -> bool | int | Decimal | str:
    """XML `value` attribute -> JSON value. A text that is no value of its kind is carried as JSON would carry it
    (`yes` for a boolean: the string; `1.5` for an integer: the number), so the structural walk reports it with
    the same words and expression as the same JSON (one round of errors, docs/conformance.md)."""
    if kind == STR or text == "":
        return text
    if kind == BOOL:
        return {"true": True, "false": False}.get(text, text)
    if _NUMBER[INT].fullmatch(text) is not None or (kind == PINT and _NUMBER[PINT].fullmatch(text) is not None):
        return Decimal(text) if kind == DEC else int(text)
    return Decimal(text) if _NUMBER[DEC].fullmatch(text) is not None else text


def format_primitive(kind: str, value: object, path: str) -> str:
    """JSON value -> XML `value` text; a Decimal keeps its digits (1.50 stays 1.50, 1E-7 is 0.0000001)."""
    if kind == STR:
        if type(value) is str and value:
            return value
    elif kind == BOOL:
        if value is True:
            return "true"
        if value is False:
            return "false"
    elif kind == DEC:
        if isinstance(value, Decimal) and value.is_finite():
            return format(value, "f") if value.as_tuple().exponent <= 0 else str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            return repr(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise bad_request(f"Invalid {kind_label(kind)} value {value!r} at {path}", path)


def kind_label(kind: str) -> str:
    return {INT: "integer", UINT: "unsignedInt", PINT: "positiveInt", DEC: "decimal"}.get(kind, kind)
