"""A compiler for the FHIRPath subset the R4 search parameters of the served types use.

Measured: fhirpathpy costs about 10 us per compiled expression and lacks `resolve()`; these
expressions are plain paths plus four patterns (`where(resolve() is T)`, `as T` / `ofType(T)` (after an
element: its choice of that type),
`where(field='x')`, `extension('url')`), so they compile here to closures over dicts and lists
costing about a microsecond. An expression outside the subset raises `Unsupported` at load time,
and its parameter is then not offered (the CapabilityStatement never lists it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Getter = Callable[[Any], list[Any]]


class Unsupported(ValueError):
    """An expression this compiler does not handle."""


def split_union(expression: str) -> list[str]:
    """Split `a | b | (c as T)` at top-level bars."""
    parts, depth, current = [], 0, []
    for ch in expression:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


_STEP = re.compile(
    r"""\.?(?:
        where\(resolve\(\)\s+is\s+(?P<resolve>[A-Za-z]+)\)
      | where\((?P<field>[a-z][A-Za-z]*)\s*=\s*'(?P<fvalue>[^']*)'\)
      | extension\('(?P<ext>[^']+)'\)
      | ofType\((?P<oftype>[A-Za-z]+)\)
      | (?P<name>[a-z][A-Za-z0-9]*)
    )""",
    re.VERBOSE,
)
_AS = re.compile(r"^\((?P<inner>.+?)\s+as\s+(?P<type>[A-Za-z]+)\)$")


def compile_path(expression: str, resource_type: str) -> Getter:
    """`DocumentReference.subject.where(resolve() is Patient)` -> a function of the resource."""
    text = expression.strip()
    as_type = None
    match = _AS.match(text)
    if match:
        text, as_type = match["inner"].strip(), match["type"]
    elif text.startswith("(") and text.endswith(")"):  # IHE MHD writes `(extension('...').value.ofType(T))`
        text = text[1:-1].strip()
    if text.startswith(resource_type + "."):
        text = text[len(resource_type) + 1:]
    elif text.startswith("Resource."):
        text = text[len("Resource."):]
    elif re.match(r"^[A-Z]", text):
        raise Unsupported(f"{expression!r} is not about {resource_type}")
    steps: list[Callable[[list[Any]], list[Any]]] = []
    pos = 0
    previous: re.Match[str] | None = None
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot compile {expression!r} at {text[pos:]!r}")
        pos = m.end()
        if m["oftype"] and previous is not None and previous["name"]:  # `value.ofType(Identifier)`: valueIdentifier
            steps[-1] = _choice_step(previous["name"], m["oftype"])
        else:
            steps.append(_step(m))
        previous = m
    if as_type:
        steps[-1] = _choice_step(_last_name(text), as_type)

    def get(resource: Any) -> list[Any]:
        nodes = [resource]
        for step in steps:
            nodes = step(nodes)
            if not nodes:
                return nodes
        return nodes

    return get


def _last_name(text: str) -> str:
    return re.split(r"\.", text)[-1]


def _children(nodes: list[Any], name: str) -> list[Any]:
    out: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        value = node.get(name)
        if value is None:
            value = _choice_values(node, name)
        if isinstance(value, list):
            out.extend(value if None not in value else [v for v in value if v is not None])
        elif value is not None:
            out.append(value)
    return out


def _choice_values(node: dict, name: str) -> Any:
    """`value` on an element holding `valueQuantity`: FHIRPath sees choice elements by their base name."""
    for key, value in node.items():
        if key.startswith(name) and len(key) > len(name) and key[len(name)].isupper():
            return value
    return None


def _step(m: re.Match[str]) -> Callable[[list[Any]], list[Any]]:
    if m["name"]:
        name = m["name"]
        return lambda nodes: _children(nodes, name)
    if m["resolve"]:
        target = m["resolve"]
        return lambda nodes: [n for n in nodes if reference_type(n) == target]
    if m["field"]:
        field, value = m["field"], m["fvalue"]
        return lambda nodes: [n for n in nodes if isinstance(n, dict) and n.get(field) == value]
    if m["ext"]:
        url = m["ext"]
        return lambda nodes: [e for e in _children(nodes, "extension") if isinstance(e, dict) and e.get("url") == url]
    of_type = m["oftype"]
    return lambda nodes: [n for n in nodes if _is_type(n, of_type)]


def _choice_step(name: str, type_name: str) -> Callable[[list[Any]], list[Any]]:
    """`(X.target as Reference)`: the `targetReference` form of a choice element."""
    key = name + type_name[0].upper() + type_name[1:]

    def step(nodes: list[Any]) -> list[Any]:
        return _children(nodes, key)

    return step


def _is_type(node: Any, type_name: str) -> bool:
    if isinstance(node, dict):
        return node.get("resourceType") == type_name
    return False


def reference_type(node: Any) -> str | None:
    """The resource type a Reference points at, from its literal or its `type`."""
    if not isinstance(node, dict):
        return None
    literal = node.get("reference")
    if isinstance(literal, str) and not literal.startswith(("#", "urn:")):
        parts = literal.split("?")[0].split("/")
        for i in range(len(parts) - 1, 0, -1):
            if parts[i - 1][:1].isupper() and parts[i] and parts[i - 1] != "_history":
                if i >= 2 and parts[i - 2] == "_history":
                    continue
                return parts[i - 1]
    kind = node.get("type")
    return kind if isinstance(kind, str) else None
