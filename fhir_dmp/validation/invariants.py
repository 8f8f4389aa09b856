"""A profile's invariants (ElementDefinition.constraint), evaluated at their element.

Each expression is compiled once into Python (`fhirpath_compile.py`, about ten times faster than interpreting
it); an expression outside the compiled subset is interpreted by fhirpathpy (`fallbacks()` lists them).

Only the constraints a profile adds are evaluated (`source` outside core R4): core R4's own invariants
(ele-1 on every element, dom-*, ...) would cost far more than the rest of the walk and are the structural
validator's business. An expression fhirpathpy cannot parse or evaluate is skipped and counted, never raised.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
from fhirpathpy.models import models
from fhirpathpy.parser import parse

from fhir_dmp.validation.fhirpath_compile import Unsupported, compiled
from fhir_dmp.validation.fhirpath_nodes import Undefined

_R4 = models["r4"]
CORE = "http://hl7.org/fhir/StructureDefinition/"


class Unevaluable(Exception):
    """fhirpathpy could not parse or evaluate an expression."""


@cache
def _parsed(expression: str) -> Any:
    try:
        return parse(expression)
    except Exception as error:  # fhirpathpy raises anything from its ANTLR parser
        return Unevaluable(str(error))


def own_constraints(element: dict) -> list[dict]:
    """The constraints to evaluate on the element: those without a core `source`. The snapshots carry their
    own invariants and R4's own resource invariants (ppc-1, cmp-1, lst-1...) without a source, so both hold on
    every write; the `dom-*` and `ele-1` of every element carry R4's source and are left to the structural
    validator."""
    out = []
    for c in element.get("constraint") or ():
        core = str(c.get("source", "")).startswith(CORE) if isinstance(c, dict) else True
        if not core and isinstance(c.get("expression"), str):
            out.append(c)
    return out


def context_type(element: dict) -> str:
    """The type fhirpathpy evaluates a node as: its only type, else the element's path (backbone elements)."""
    types = [t.get("code") for t in element.get("type") or () if isinstance(t, dict)]
    if len(types) == 1 and types[0] not in ("BackboneElement", "Element") and isinstance(types[0], str):
        return types[0]
    return str(element.get("path", ""))


def holds(node: Any, base: str, expression: str, resource: Any) -> bool:
    """Whether the invariant holds on `node` (empty counts as true); Unevaluable when it cannot be told.
    Compiled when the compiler covers the expression, else interpreted by fhirpathpy."""
    run = compiled(expression)
    if isinstance(run, Unsupported):
        return interpreted(node, base, expression, resource)
    try:
        result = run(node, base, resource)
    except (Undefined, TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
        raise Unevaluable(str(error)) from None
    return _verdict(expression, result)


def interpreted(node: Any, base: str, expression: str, resource: Any) -> bool:
    """`holds` by fhirpathpy's interpreter (the fallback, and the reference the compiled form is tested against).
    Its type tests use the R4 model only once an `is`/`as` has run in the process (a global it sets): it is set
    here first, so `ofType(string)` sees a `code` as a string on every call, not only after some `is`."""
    parsed = _parsed(expression)
    if isinstance(parsed, Unevaluable):
        raise parsed
    TypeInfo.model = _R4
    try:
        result = apply_parsed_path(ResourceNode.create_node(node, base), parsed, {"resource": resource}, _R4)
    except Exception as error:
        raise Unevaluable(str(error)) from None
    return _verdict(expression, result)


def _verdict(expression: str, result: list) -> bool:
    if result in ([], [True]):
        return True
    if result == [False]:
        return False
    raise Unevaluable(f"{expression} gives {result!r}, not a boolean")


def fallbacks(expressions: list[str]) -> dict[str, str]:
    """The expressions left to fhirpathpy, with what the compiler does not cover in each."""
    return {e: str(run) for e in expressions if isinstance(run := compiled(e), Unsupported)}
