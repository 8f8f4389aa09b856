"""A small instance checker for the generated profiles, enough to test that they say what the server does.

It walks a resource along a StructureDefinition's snapshot and reports, as strings: cardinalities (of
elements and slices, where the snapshot lists them), the types of choices, fixed and pattern values, and
the profile's own invariants (FHIRPath, evaluated with fhirpathpy; core R4 invariants are left to the
core's validators).
Slices are matched by their discriminators (value/pattern on a path or `$this`, `url` of extensions,
`type` of `resource`); a slice typed with another of our profiles (an extension, a Bundle entry's
resource) is checked against that profile too. Not a validator: other types, bindings and references are
not checked, and nothing the snapshot does not list (unexpanded datatypes) is looked at.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

R4 = models["r4"]


def evaluate(node: Any, base: str, expression: str, resource: dict) -> list:
    """fhirpathpy's evaluate() with `node` typed as `base` (a type or a backbone path), parsed once."""
    return apply_parsed_path(ResourceNode.create_node(node, base), _parsed(expression), {"resource": resource}, R4)


@cache
def _parsed(expression: str) -> dict:
    return parse(expression)


def problems(sds: dict[str, dict], url: str, resource: dict) -> list[str]:
    """Everything `resource` breaks in profile `url` (`sds`: our StructureDefinitions by canonical)."""
    return _Walk(sds, sds[url], resource).run()


class _Walk:
    def __init__(self, sds: dict[str, dict], sd: dict, resource: dict) -> None:
        self.sds, self.sd, self.resource = sds, sd, resource
        self.by_id = {e["id"]: e for e in sd["snapshot"]["element"]}
        self.ours = set(sds)
        self.out: list[str] = []

    def run(self) -> list[str]:
        root = self.sd["snapshot"]["element"][0]["id"]
        self.visit(root, [self.resource], root)
        return self.out

    # -- the tree of the snapshot --------------------------------------------------------------------
    def children(self, eid: str) -> list[str]:
        return [i for i in self.by_id if i.startswith(eid + ".") and not {".", ":"} & set(i[len(eid) + 1:])]

    def slices(self, eid: str) -> list[str]:
        return [i for i in self.by_id if i.startswith(eid + ":") and "." not in i[len(eid) + 1:]
                and ":" not in i[len(eid) + 1:]]

    def visit(self, eid: str, nodes: list[Any], where: str) -> None:
        el = self.by_id[eid]
        for i, node in enumerate(nodes):
            here = f"{where}[{i}]" if len(nodes) > 1 else where
            self.values(el, node, here)
            self.invariants(el, node, here)
            for profile in (p for t in el.get("type", []) for p in t.get("profile", []) if p in self.ours):
                if isinstance(node, dict) and eid != self.sd["snapshot"]["element"][0]["id"]:
                    self.out += [f"{here}: {p}" for p in problems(self.sds, profile, node)]
            if not isinstance(node, dict):
                continue
            for child in self.children(eid):
                name = self.by_id[child]["path"].rsplit(".", 1)[1]
                found = _values(node, name)
                if name.endswith("[x]"):  # a choice: only the types the profile leaves
                    allowed = {t["code"][:1].upper() + t["code"][1:] for t in self.by_id[child].get("type", [])}
                    for key in node:
                        kind = key[len(name) - 3:]
                        if key.startswith(name[:-3]) and kind[:1].isupper() and kind not in allowed:
                            self.out.append(f"{here}.{key}: {kind} is not one of {sorted(allowed)}")
                self.count(child, found, f"{here}.{name}")
                for slice_id in self.slices(child):
                    matched = [v for v in found if self.matches(slice_id, v)]
                    self.count(slice_id, matched, f"{here}.{name}:{self.by_id[slice_id]['sliceName']}")
                    self.visit(slice_id, matched, f"{here}.{name}:{self.by_id[slice_id]['sliceName']}")
                self.visit(child, found, f"{here}.{name}")

    def count(self, eid: str, found: list, where: str) -> None:
        el = self.by_id[eid]
        if len(found) < el["min"] or (el["max"] != "*" and len(found) > int(el["max"])):
            self.out.append(f"{where}: {len(found)} found, {el['min']}..{el['max']} allowed")

    def values(self, el: dict, node: Any, where: str) -> None:
        for key, expected in el.items():
            if key.startswith("fixed") and node != expected:
                self.out.append(f"{where}: {node!r} is not the fixed {expected!r}")
            elif key.startswith("pattern") and not _contains(node, expected):
                self.out.append(f"{where}: {node!r} does not match the pattern {expected!r}")

    def invariants(self, el: dict, node: Any, where: str) -> None:
        for c in el.get("constraint", []):
            if c.get("source") != self.sd["url"] or c["severity"] != "error":
                continue
            types = [t["code"] for t in el.get("type", [])]
            base = types[0] if len(types) == 1 and types[0] not in ("BackboneElement", "Element") else el["path"]
            result = evaluate(node, base, c["expression"], self.resource)
            if result != [True]:
                self.out.append(f"{where}: {c['key']} ({c['human']}) gives {result}")

    # -- slices --------------------------------------------------------------------------------------
    def matches(self, slice_id: str, value: Any) -> bool:
        unsliced = self.by_id[slice_id.rsplit(":", 1)[0]]
        return all(self.discriminated(slice_id, d, value) for d in unsliced["slicing"]["discriminator"])

    def discriminated(self, slice_id: str, disc: dict, value: Any) -> bool:
        path, el = disc["path"], self.by_id[slice_id]
        if path == "url" and el["type"][0].get("profile"):  # an extension slice by its definition's url
            return isinstance(value, dict) and value.get("url") == el["type"][0]["profile"][0]
        target = el if path == "$this" else self.by_id[f"{slice_id}.{path}"]
        actual = value if path == "$this" else (value.get(path) if isinstance(value, dict) else None)
        if disc["type"] == "type":
            return isinstance(actual, dict) and actual.get("resourceType") == target["type"][0]["code"]
        for key, expected in target.items():
            if key.startswith("fixed"):
                return actual == expected
            if key.startswith("pattern"):
                return _contains(actual, expected)
        raise AssertionError(f"{slice_id}: no fixed or pattern value for discriminator {path}")


def _values(node: dict, name: str) -> list[Any]:
    """The values of element `name` (a choice `value[x]`: any `valueX`) as a list."""
    if name.endswith("[x]"):
        prefix = name[:-3]
        keys = [k for k in node if k.startswith(prefix) and k[len(prefix):][:1].isupper()]
    else:
        keys = [name] if name in node else []
    out: list[Any] = []
    for key in keys:
        out += node[key] if isinstance(node[key], list) else [node[key]]
    return out


def _contains(actual: Any, pattern: Any) -> bool:
    """FHIR pattern matching: every part of the pattern is in the value (list items: in some item)."""
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(_contains(actual.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and all(any(_contains(a, p) for a in actual) for p in pattern)
    return actual == pattern
