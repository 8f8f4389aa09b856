"""Profile invariants compiled once into Python closures, instead of interpreted by fhirpathpy on every node.

Why: an ITI-65 Bundle's validation spent most of its time in ~160 invariant evaluations through fhirpathpy
(~10 us a node and more: a ResourceNode per step, the ANTLR tree walked again each time). The expressions
the shipped profiles carry are a small subset of FHIRPath (paths, exists/empty/not/count, where/all/select,
the boolean operators, =/!=/comparisons, in, is/ofType, hasValue, children, matches, extension(url), %resource
and literals), so fhirpathpy's own parse tree is turned, once per expression, into closures over the
`fhirpath_nodes` items. `compile_expression` raises `Unsupported` for anything else: the caller then falls back
to fhirpathpy for that expression (`invariants.fallbacks()` lists them).

Semantics follow fhirpathpy 2.2.4 (navigation, three-valued logic, singleton errors, `where` keeping items
whose criterion starts with a non-false value) so both engines give the same verdict, with three deliberate
differences: `extension(url)` gives every matching extension (R4; fhirpathpy only the first), `hasValue()`
and `%rootResource` exist (fhirpathpy has neither), and `=` compares whole collections item by item
(fhirpathpy compares their first items only).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any

from fhirpathpy.parser import parse

from fhir_dmp.validation.fhirpath_nodes import (
    FALSE,
    TRUE,
    Item,
    boolean,
    children,
    compare,
    concatenate,
    descendants,
    equal,
    first_of,
    has_value,
    index,
    is_a,
    is_distinct,
    is_fn,
    is_true,
    item,
    logic3,
    member,
    negate,
    string_of,
    to_string,
    within,
)

Fn = Callable[[list[Item], Item], list[Item]]  # (focus, %resource) -> collection


class Unsupported(ValueError):
    """An expression (or a part of it) outside the compiled subset."""


def compile_expression(expression: str) -> Callable[[Any, str, Any], list[Any]]:
    """`expression` as a function of (node, its type or element path, the resource) -> the result's values.
    Raises Unsupported for what the compiler does not cover (or fhirpathpy cannot parse)."""
    try:
        tree = parse(expression)
    except Exception as error:  # fhirpathpy's ANTLR parser raises anything
        raise Unsupported(f"unparsable: {error}") from None
    body = _expr(tree["children"][0])

    def run(node: Any, base: str, resource: Any) -> list[Any]:
        root = item(resource, None)
        return [value for _, value in body([item(node, base)], root)]

    return run


def _only(node: dict) -> dict:
    kids = node.get("children") or []
    if len(kids) != 1:
        raise Unsupported(f"{node.get('type')} with {len(kids)} children")
    return kids[0]


def _expr(node: dict) -> Fn:
    kind = node.get("type")
    if kind in ("TermExpression", "InvocationTerm", "ParenthesizedTerm", "LiteralTerm"):
        return _expr(_only(node))
    if kind == "InvocationExpression":
        left, right = node["children"]
        first, then = _expr(left), _invocation(right)
        if right.get("type") == "MemberInvocation":  # the common step, one call fewer
            step = member(_only(right)["text"].strip("`"))
            return lambda focus, res: step(first(focus, res))
        return lambda focus, res: then(first(focus, res), res)
    if kind in ("MemberInvocation", "FunctionInvocation", "ThisInvocation"):
        return _invocation(node)
    if kind in _LITERALS:
        value = _LITERALS[kind](node)
        return lambda focus, res: value
    if kind == "ExternalConstantTerm":
        name = _only(_only(node))["text"].strip("`")
        if name not in ("resource", "rootResource"):
            raise Unsupported(f"%{name}")
        return lambda focus, res: [res]
    if kind in _OPERATORS:
        op = node["terminalNodeText"][0]
        if op not in _OPERATORS[kind]:
            raise Unsupported(f"operator {op}")
        return _OPERATORS[kind][op](*node["children"])
    if kind == "IndexerExpression":
        coll, at = (_expr(c) for c in node["children"])
        return lambda focus, res: index(coll(focus, res), at(focus, res))
    raise Unsupported(str(kind))




def _string(node: dict) -> list[Item]:
    text = re.sub(r"^['\"]|['\"]$", "", node["text"])
    if "\\" in text:
        raise Unsupported("escapes in a string literal")
    return [(None, text)]


def _number(node: dict) -> list[Item]:
    value = Decimal(node["text"])
    return [(None, int(value) if value == int(value) else value)]


_LITERALS: dict[str, Callable[[dict], list[Item]]] = {
    "StringLiteral": _string,
    "NumberLiteral": _number,
    "BooleanLiteral": lambda node: TRUE if node["text"] == "true" else FALSE,
    "NullLiteral": lambda node: [],
}


# -- invocations: a member, $this, a function ------------------------------------------------------------------
def _invocation(node: dict) -> Fn:
    kind = node.get("type")
    if kind == "ThisInvocation":
        return lambda focus, res: focus
    if kind == "MemberInvocation":
        name: str = _only(node)["text"].strip("`")
        if name[:1].isupper() or name == "length":  # fhirpathpy gives these a meaning of its own
            raise Unsupported(f"member {name}")
        step = member(name)
        return lambda focus, res: step(focus)
    if kind != "FunctionInvocation":
        raise Unsupported(str(kind))
    functn = _only(node)
    name = functn["children"][0]["text"]
    params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
    if name not in _FUNCTIONS:
        raise Unsupported(f"{name}()")
    return _FUNCTIONS[name](*params)


def _constant(param: dict) -> Any:
    """A function's literal argument (arguments that are paths are left to fhirpathpy)."""
    values = _expr(param)
    if not param.get("text") or not re.fullmatch(r"'[^'\\]*'|-?\d+", param["text"]):
        raise Unsupported(f"argument {param.get('text')}")
    found = values([], (None, None))
    return found[0][1]


def _nullary(fn: Callable[[list[Item]], list[Item]]) -> Callable[..., Fn]:
    def make(*params: dict) -> Fn:
        if params:
            raise Unsupported("arguments to a function that takes none")
        return lambda focus, res: fn(focus)
    return make
















def _string_fn(test: Callable[[str, Any], Any]) -> Callable[..., Fn]:
    """A string function with one literal argument; an empty input gives empty, as fhirpathpy does."""
    def make(*params: dict) -> Fn:
        if len(params) != 1:
            raise Unsupported("a string function's arity")
        arg = _constant(params[0])
        return lambda focus, res: [] if not focus else [(None, test(string_of(focus), arg))]
    return make


def _matches(*params: dict) -> Fn:
    if len(params) != 1:
        raise Unsupported("matches() arity")
    pattern = _constant(params[0])
    if not pattern:
        return lambda focus, res: []
    regex = re.compile(pattern, re.DOTALL)
    return lambda focus, res: [] if not focus else boolean(regex.search(string_of(focus)) is not None)


def _macro(kind: str) -> Callable[..., Fn]:
    """exists(criteria), where, all, select: the criteria evaluated on each item as its own focus."""
    def make(*params: dict) -> Fn:
        if kind == "exists" and not params:
            return lambda focus, res: boolean(focus)
        if len(params) != 1:
            raise Unsupported(f"{kind}() arity")
        criteria = _expr(params[0])

        def keep(x: Item, res: Item) -> bool:
            found = criteria([x], res)
            return bool(found) and (found[0][0] is not None or bool(found[0][1]))

        if kind == "where":
            return lambda focus, res: [x for x in focus if keep(x, res)]
        if kind == "exists":
            return lambda focus, res: boolean(any(keep(x, res) for x in focus))
        if kind == "all":
            return lambda focus, res: boolean(all(is_true(criteria([x], res)) for x in focus))
        return lambda focus, res: [y for x in focus for y in criteria([x], res)]
    return make




def _type_of(param: dict) -> tuple[str | None, str]:
    parts = str(param.get("text", "")).replace("`", "").split(".")
    if len(parts) == 1 and parts[0]:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise Unsupported(f"type {param.get('text')}")


def _of_type(*params: dict) -> Fn:
    if len(params) != 1:
        raise Unsupported("ofType() arity")
    namespace, name = _type_of(params[0])
    return lambda focus, res: [x for x in focus if is_a(x, namespace, name)]




def _is_or_as(cast: bool) -> Callable[..., Fn]:
    def make(*params: dict) -> Fn:
        if len(params) != 1:
            raise Unsupported("is()/as() arity")
        namespace, name = _type_of(params[0])
        return lambda focus, res: is_fn(focus, namespace, name, cast)
    return make


def _extension(*params: dict) -> Fn:
    """Every extension with that url (R4's extension(url); fhirpathpy 2.2.4 keeps the first one only)."""
    if len(params) != 1:
        raise Unsupported("extension() arity")
    url = _constant(params[0])

    def get(focus: list[Item], res: Item) -> list[Item]:
        return [("Extension", e) for _, value in focus if isinstance(value, dict)
                for e in value.get("extension") or () if isinstance(e, dict) and e.get("url") == url]
    return get


_FUNCTIONS: dict[str, Callable[..., Fn]] = {
    "exists": _macro("exists"),
    "where": _macro("where"),
    "all": _macro("all"),
    "select": _macro("select"),
    "empty": _nullary(lambda focus: boolean(not focus)),
    "not": _nullary(negate),
    "count": _nullary(lambda focus: [(None, len(focus))]),
    "first": _nullary(first_of),
    "hasValue": _nullary(has_value),
    "children": _nullary(children),
    "descendants": _nullary(descendants),
    "toString": _nullary(to_string),
    "isDistinct": _nullary(is_distinct),
    "length": _nullary(lambda focus: [] if not focus else [(None, len(string_of(focus)))]),
    "matches": _matches,
    "contains": _string_fn(lambda s, arg: arg in s),
    "startsWith": _string_fn(lambda s, arg: bool(s) and s.startswith(arg)),
    "endsWith": _string_fn(lambda s, arg: bool(s) and s.endswith(arg)),
    "ofType": _of_type,
    "is": _is_or_as(False),
    "as": _is_or_as(True),
    "extension": _extension,
}


# -- operators --------------------------------------------------------------------------------------------------


def _logic(op: str) -> Callable[[dict, dict], Fn]:
    def make(left_node: dict, right_node: dict) -> Fn:
        left, right = _expr(left_node), _expr(right_node)

        def run(focus: list[Item], res: Item) -> list[Item]:
            a = logic3(left(focus, res))
            if op == "and" and a is False or op == "or" and a is True:
                return boolean(a)
            if op == "implies" and a is False:
                return TRUE
            b = logic3(right(focus, res))
            if op == "and":
                return FALSE if b is False else TRUE if a and b else []
            if op == "or":
                return TRUE if b is True else FALSE if a is False and b is False else []
            if op == "xor":
                return [] if a is None or b is None else boolean(a != b)
            return TRUE if b is True else [] if a is None or b is None else boolean(b)  # implies, a True or None
        return run
    return make


def _binary(combine: Callable[[list[Item], list[Item]], list[Item]]) -> Callable[[dict, dict], Fn]:
    """An operator of two operands both evaluated on the focus (fhirpathpy sets $this to the focus for each)."""
    def make(left_node: dict, right_node: dict) -> Fn:
        left, right = _once(left_node), _once(right_node)
        return lambda focus, res: combine(left(focus, res), right(focus, res))
    return make


def _once(node: dict) -> Fn:
    """An operand, evaluated once per resource when it does not depend on the focus (`$this in
    %resource.entry.resource.ofType(List).entry.item.reference`, inside an `all()` over a Bundle's entries, read
    the whole Bundle once per entry). It holds the last resource it was evaluated on until the next one."""
    fn = _expr(node)
    if not _independent(node) or _literal(node):
        return fn
    held: list[Any] = [None, None]  # (the %resource item, the operand's value there)

    def run(focus: list[Item], res: Item) -> list[Item]:
        if held[0] is not res:  # a new item for every evaluation of the expression (`compile_expression`)
            held[1] = fn(focus, res)
            held[0] = res
        return held[1]
    return run


def _independent(node: dict) -> bool:
    """Whether an expression's value is the same whatever the focus: a path from %resource, and operators over
    such paths (a function's arguments run on its input, so only the start of a path matters)."""
    kind = node.get("type")
    if kind in ("TermExpression", "ParenthesizedTerm"):
        return _independent(_only(node))
    if kind == "ExternalConstantTerm" or kind in _LITERALS or kind == "LiteralTerm":
        return True
    if kind == "InvocationExpression":
        return _independent(node["children"][0])
    if kind in _OPERATORS or kind == "IndexerExpression":
        return all(_independent(child) for child in node.get("children") or ())
    return False  # a member, a function or $this reads the focus


def _literal(node: dict) -> bool:
    while node.get("type") in ("TermExpression", "ParenthesizedTerm", "LiteralTerm"):
        node = _only(node)
    return node.get("type") in _LITERALS


def _type_operator(cast: bool) -> Callable[[dict, dict], Fn]:
    def make(left_node: dict, type_node: dict) -> Fn:
        left = _expr(left_node)
        namespace, name = _type_of(type_node)
        return lambda focus, res: is_fn(left(focus, res), namespace, name, cast)
    return make


_OPERATORS: dict[str, dict[str, Callable[[dict, dict], Fn]]] = {
    "AndExpression": {"and": _logic("and")},
    "OrExpression": {"or": _logic("or"), "xor": _logic("xor")},
    "ImpliesExpression": {"implies": _logic("implies")},
    "EqualityExpression": {"=": _binary(lambda a, b: equal(a, b, False)),
                           "!=": _binary(lambda a, b: equal(a, b, True))},
    "InequalityExpression": {op: _binary(lambda a, b, op=op: compare(op, a, b)) for op in ("<", ">", "<=", ">=")},
    "MembershipExpression": {"in": _binary(lambda a, b: within(a, b)), "contains": _binary(lambda a, b: within(b, a))},
    "TypeExpression": {"is": _type_operator(False), "as": _type_operator(True)},
    "AdditiveExpression": {"&": _binary(concatenate)},
}


@cache
def compiled(expression: str) -> Callable[[Any, str, Any], list[Any]] | Unsupported:
    """The compiled expression, or why it is not compiled (once per expression)."""
    try:
        return compile_expression(expression)
    except Unsupported as why:
        return why
