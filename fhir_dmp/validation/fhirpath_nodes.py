"""The data model the compiled invariants (`fhirpath_compile.py`) walk: FHIRPath items over plain JSON.

Why not fhirpathpy's ResourceNode: each one costs an object, a regular expression on its path and, for a
choice element, a scan of the model; an invariant touches a handful of nodes, so that is most of its ~10 us.
Here an item is a `(type path, value)` tuple and the model lookups are cached per (path, name). The type paths,
the choice resolution (`value` -> `valueString`, typed `string`), the `_name` companions of primitives (an item
of their own, as in fhirpathpy) and the type tests (`is`, `ofType`: R4's type hierarchy, `code` is a `string`)
follow fhirpathpy 2.2.4 with the R4 model, so both engines agree (`tests/validation/test_fhirpath_compile.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from fhirpathpy.models import models

Item = tuple[str | None, Any]  # (type path, JSON value); path None: a System value (a literal, a result)

_R4 = models["r4"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
_PATH2TYPE: dict[str, str] = _R4["path2Type"]
_PARENT: dict[str, str] = _R4["type2Parent"]


TRUE: list[Item] = [(None, True)]
FALSE: list[Item] = [(None, False)]


class Undefined(Exception):
    """The expression has no value here (fhirpathpy raises in the same case): the invariant cannot be told."""


def item(value: Any, path: str | None) -> Item:
    """An item for a JSON value: a resource is typed by its resourceType, whatever its path."""
    if isinstance(value, Mapping) and "resourceType" in value:
        return (value["resourceType"], value)
    return (path, value)


_TYPED: dict[str, str] = {}


def _typed(path: str) -> str:
    held = _TYPED.get(path)
    if held is None:
        held = _TYPED[path] = _PATH2TYPE.get(path, path)
    return held


def member(name: str) -> Callable[[list[Item]], list[Item]]:
    """`items.name`: the values of `name` (of `nameX` for a choice element), then those of `_name`. The model
    lookups are made once per parent path (a dict lookup per item afterwards)."""
    companion_key = "_" + name
    plans: dict[str | None, tuple[str, list[str] | None, str]] = {}

    def plan(path: str | None) -> tuple[str, list[str] | None, str]:
        """(the child's type path, the types of a choice element, the path the choice's type is appended to)"""
        child = f"{path}.{name}" if path else f"_.{name}"
        child = _ELSEWHERE.get(child, child)
        choices = _CHOICES.get(child)
        typed = _typed("Extension" if name == "extension" and not choices else child)
        held = plans[path] = (typed, choices, child)
        return held

    def step(items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for path, value in items:
            if value.__class__ is not dict:
                continue
            child, choices, untyped = plans.get(path) or plan(path)
            if choices:
                kind = _choice(value, name, choices)
                if kind is None:
                    continue
                found, companion = value.get(name + kind), value.get(f"_{name}{kind}")
                child = _typed(untyped + kind)
            else:
                found, companion = value.get(name), value.get(companion_key)
            for got in (found, companion):
                if got is None:
                    continue
                if got.__class__ is list:
                    out += [(v["resourceType"], v) if v.__class__ is dict and "resourceType" in v else (child, v)
                            for v in got]
                elif got.__class__ is dict and "resourceType" in got:
                    out.append((got["resourceType"], got))
                else:
                    out.append((child, got))
        return out

    return step


_ORDERS: dict[int, dict[str, int]] = {}


def _choice(value: dict, name: str, choices: list[str]) -> str | None:
    """The type of the choice element `name` the object holds (`valueString` -> `String`), by its keys rather
    than by trying each of the ~50 types; when it holds several, the first in the model's order, as fhirpathpy."""
    order = _ORDERS.get(id(choices))
    if order is None:
        order = _ORDERS[id(choices)] = {kind: i for i, kind in enumerate(choices)}
    best = None
    for key in value:
        kind = key[len(name):] if key.startswith(name) else key[len(name) + 1:] if key[1:].startswith(name) else ""
        if kind in order and (best is None or order[kind] < order[best]):
            best = kind
    return best


def children(items: list[Item], companions: bool = False) -> list[Item]:
    """`children()` (`descendants()` one level at a time, with the `_name` companions): every property."""
    out: list[Item] = []
    for path, value in items:
        if not isinstance(value, Mapping):
            continue
        if path is None:
            raise Undefined("children() of an untyped value")
        for prop, found in value.items():
            if prop.startswith("_") and not companions:
                continue
            child = "Extension" if prop == "extension" else f"{path}.{prop}"
            child = _typed(_ELSEWHERE.get(child, child))
            if isinstance(found, list):
                out.extend(item(v, child) for v in found)
            else:
                out.append(item(found, child))
    return out


def descendants(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    level = children(items, True)
    while level:
        out += level
        level = children(level, True)
    return out


def _system_name(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float | Decimal):
        return "Decimal"
    if isinstance(value, str):
        return "String"
    if isinstance(value, Mapping):
        return "Object"
    return type(value).__name__.capitalize()


def _is_type(name: str | None, wanted: str) -> bool:
    while name:
        if name == wanted:
            return True
        name = _PARENT.get(name) or _PATH2TYPE.get(name)
    return False


def is_a(entry: Item, namespace: str | None, wanted: str) -> bool:
    """Whether the item is of type `wanted` (or derives from it), fhirpathpy's TypeInfo.is_ with the R4 model."""
    path, value = entry
    if path is None:
        return namespace in (None, "System") and _system_name(value) == wanted
    if path.startswith("System."):
        return namespace in (None, "System") and path[len("System."):] == wanted
    if namespace not in (None, "FHIR"):
        return False
    return _is_type(path if "." not in path else "BackboneElement", wanted)


def data(entry: Item) -> Any:
    """The value as fhirpathpy's functions see it (a JSON float is a Decimal)."""
    value = entry[1]
    return Decimal(str(value)) if isinstance(value, float) else value


# -- the functions and operator parts that need no compiling (fhirpathpy's behaviour, see fhirpath_compile) ----
def index(coll: list[Item], at: list[Item]) -> list[Item]:
    if not at:
        return []
    i = int(at[0][1])
    return [coll[i]] if 0 <= i < len(coll) else []


def boolean(value: Any) -> list[Item]:
    return TRUE if value else FALSE


def negate(focus: list[Item]) -> list[Item]:
    if len(focus) != 1:
        return []
    value = data(focus[0])
    return boolean(not value) if isinstance(value, bool) else FALSE


def first_of(focus: list[Item]) -> list[Item]:
    return focus[:1]


def has_value(focus: list[Item]) -> list[Item]:
    return boolean(len(focus) == 1 and focus[0][1] is not None and not isinstance(focus[0][1], dict | list))


def to_string(focus: list[Item]) -> list[Item]:
    return [(None, str(data(focus[0])))] if len(focus) == 1 else []


def is_distinct(focus: list[Item]) -> list[Item]:
    seen = set()
    for _, value in focus:
        try:
            seen.add(json.dumps(value, sort_keys=True))
        except TypeError:
            seen.add(str(value))
    return boolean(len(seen) == len(focus))


def string_of(focus: list[Item]) -> str:
    if len(focus) == 1 and isinstance(focus[0][1], str):
        return focus[0][1]
    raise Undefined("a string function on something other than one string")


def is_true(found: list[Item]) -> bool:
    return len(found) == 1 and found[0][1] == True  # noqa: E712 - fhirpathpy's test, 1 == True included


def logic3(found: list[Item]) -> bool | None:
    """A boolean operand: empty is unknown, one boolean is itself, anything else is an error (as fhirpathpy)."""
    if not found:
        return None
    if len(found) > 1 or not isinstance(found[0][1], bool):
        raise Undefined("a boolean operator on a non-boolean")
    return found[0][1]


def same(a: list[Item], b: list[Item]) -> bool:
    return len(a) == len(b) and all(x[1] == y[1] for x, y in zip(a, b, strict=True))


def is_fn(focus: list[Item], namespace: str | None, name: str, cast: bool) -> list[Item]:
    if not focus:
        return []
    if len(focus) > 1:
        raise Undefined("is/as on more than one item")
    if cast:
        return focus if is_a(focus[0], namespace, name) else []
    return boolean(is_a(focus[0], namespace, name))


def equal(a: list[Item], b: list[Item], unequal: bool) -> list[Item]:
    """`=` / `!=`: empty if either side is; item by item (fhirpathpy compares the first items only)."""
    if not a or not b:
        return []
    if any(isinstance(x[1], dict) and x[0] and x[0].endswith("Quantity") for x in a + b):
        raise Undefined("quantity equality")
    return boolean(same(a, b) != unequal)


_TEMPORAL = frozenset({"date", "dateTime", "instant", "time"})
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def compare(op: str, a: list[Item], b: list[Item]) -> list[Item]:
    """`<` `>` `<=` `>=` on numbers or strings; dates (fhirpathpy compares them as dates) are left undefined."""
    if not a or not b or a[0][1] is None or b[0][1] is None:
        return []
    if len(a) > 1 or len(b) > 1:
        raise Undefined("a comparison of collections")
    if a[0][0] in _TEMPORAL or b[0][0] in _TEMPORAL:
        raise Undefined("a comparison of dates")
    x, y = data(a[0]), data(b[0])
    numbers = all(isinstance(v, int | Decimal) and not isinstance(v, bool) for v in (x, y))
    if type(x) is not type(y) and not numbers or not isinstance(x, int | Decimal | str):
        raise Undefined("a comparison of different types")
    return boolean(_COMPARE[op](x, y))


def within(single: list[Item], coll: list[Item]) -> list[Item]:
    """`single in coll` (and `coll contains single`)."""
    if not single:
        return []
    if not coll:
        return FALSE
    if len(single) > 1:
        raise Undefined("more than one item on the single side of in/contains")
    return boolean(any(x[1] == single[0][1] for x in coll))


def concatenate(a: list[Item], b: list[Item]) -> list[Item]:
    """`&`: string concatenation, an empty side counting as ''."""
    def text(found: list[Item]) -> str:
        if len(found) > 1 or found and not isinstance(found[0][1], str):
            raise Undefined("& on something other than a string")
        return found[0][1] if found else ""
    return [(None, text(a) + text(b))]
