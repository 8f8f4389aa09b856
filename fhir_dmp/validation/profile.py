"""Validation of a resource against a profile, driven by the StructureDefinition's snapshot alone.

The walk follows the snapshot's element tree over the JSON and reports `Issue`s with FHIRPath expressions
(`DocumentReference.content[0].attachment.hash`): cardinalities (of elements and of slices), the types left to
a choice, fixed[x] (equality) and pattern[x] (subset) values, slicing (value/pattern/type discriminators,
closed slicing), required bindings whose ValueSet the terminology store ships (`validate_code`; an extensible
one gives a warning), and the profile's invariants (`invariants.py`). An element typed with a profile the
store has (an extension, a Bundle entry's resource) is walked against that profile too.

Left out, and counted in the report where they occur: bindings neither required nor extensible or whose
ValueSet is not shipped, invariants fhirpathpy cannot evaluate, slicings whose discriminator cannot be read. Nothing
the snapshot does not list is looked at (the structural validator covers R4 itself). Never raises on a
resource of any shape: what does not fit is an issue, or is not walked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_dmp.errors import Issue
from fhir_dmp.terminology.expansion import codes_of, label, validate_code
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.validation import invariants
from fhir_dmp.validation.slicing import contains, matcher

Node = tuple[str, Any]  # (FHIRPath expression, JSON value)


@dataclass
class Report:
    issues: list[Issue] = field(default_factory=list)
    skipped_invariants: int = 0
    skipped_bindings: int = 0
    skipped_slicings: int = 0


@dataclass(frozen=True)
class _Tree:
    by_id: dict[str, dict]
    children: dict[str, list[str]]
    slices: dict[str, list[str]]
    root: str


_TREES: dict[int, tuple[dict, _Tree]] = {}
_CODES: dict[tuple[int, str], tuple[dict, frozenset[tuple[str, str]]]] = {}


@dataclass(frozen=True)
class _Facts:
    """What the walk asks of an element, read from its definition once (the walk visits an element of a Bundle
    profile hundreds of times a Bundle)."""

    name: str  # the last step of its path
    values: tuple[tuple[bool, Any], ...]  # (fixed?, value) of its fixed[x] and pattern[x]
    binding: tuple[str, str, frozenset] | None  # (value set url, strength, type codes) when required/extensible
    constraints: tuple[tuple[dict, str], ...]  # its own invariants, with the type they are evaluated on
    profiles: tuple[str, ...]  # the profiles its types name
    low: int | None
    high: int | None
    removed: bool  # max = 0


_FACTS: dict[int, tuple[dict, _Facts]] = {}


def _facts(el: dict) -> _Facts:
    held = _FACTS.get(id(el))
    if held is not None and held[0] is el:
        return held[1]
    binding = el.get("binding")
    strength = binding.get("strength") if isinstance(binding, dict) else None
    low, high = el.get("min", 0), el.get("max", "*")
    base = invariants.context_type(el)
    facts = _Facts(
        name=str(el.get("path", "")).rsplit(".", 1)[-1],
        values=tuple((key.startswith("fixed"), value) for key, value in el.items()
                     if key.startswith(("fixed", "pattern"))),
        binding=(binding["valueSet"], strength, frozenset(t.get("code") for t in el.get("type") or ()
                                                          if isinstance(t, dict)))
        if isinstance(binding, dict) and isinstance(binding.get("valueSet"), str)
        and strength in ("required", "extensible") else None,
        constraints=tuple((c, base) for c in invariants.own_constraints(el)),
        profiles=tuple(p for t in el.get("type") or () for p in t.get("profile") or ()),
        low=low if isinstance(low, int) else None,
        high=int(high) if isinstance(high, str) and high.isdigit() else None,
        removed=el.get("max") == "0")
    _FACTS[id(el)] = (el, facts)
    return facts


_KIDS: dict[tuple[int, str], tuple[_Tree, tuple[tuple[str, dict, _Facts, bool, bool], ...]]] = {}


def _kids(tree: _Tree, eid: str) -> tuple[tuple[str, dict, _Facts, bool, bool], ...]:
    """An element's children as the walk asks of them, once per element: (id, definition, facts, a choice?,
    sliced?)."""
    held = _KIDS.get((id(tree), eid))
    if held is not None and held[0] is tree:
        return held[1]
    kids = tuple((child, tree.by_id[child], _facts(tree.by_id[child]), _facts(tree.by_id[child]).name.endswith("[x]"),
                  bool(tree.slices[child])) for child in tree.children[eid])
    _KIDS[(id(tree), eid)] = (tree, kids)
    return kids


def _tree(sd: dict) -> _Tree:
    held = _TREES.get(id(sd))
    if held is not None and held[0] is sd:
        return held[1]
    elements = [e for e in (sd.get("snapshot") or {}).get("element") or () if isinstance(e, dict) and "id" in e]
    by_id = {e["id"]: e for e in elements}
    children: dict[str, list[str]] = {i: [] for i in by_id}
    slices: dict[str, list[str]] = {i: [] for i in by_id}
    for eid in by_id:
        head, dot, _ = eid.rpartition(".")
        colon_head, colon, tail = eid.rpartition(":")
        if colon and "." not in tail and colon_head in slices:
            slices[colon_head].append(eid)
        elif dot and head in children:
            children[head].append(eid)
    tree = _Tree(by_id, children, slices, elements[0]["id"] if elements else "")
    _TREES[id(sd)] = (sd, tree)
    return tree


def validate_profile(conf: Conformance, sd: dict, resource: Any, *, entries_checked: bool = False) -> Report:
    """Everything `resource` breaks in profile `sd`. `entries_checked`: a Bundle's entries were validated against
    their own profiles already (a transaction checks each one), so the Bundle's profile checks what is its own
    (entries, their order and slices) without walking each entry's resource through its profile again."""
    report = Report()
    if not isinstance(resource, dict):
        report.issues.append(Issue("structure", "The resource is not a JSON object"))
        return report
    if resource.get("resourceType") != sd.get("type"):
        rtype = resource.get("resourceType")
        report.issues.append(Issue("invalid", f"Profile {sd.get('url')} is for {sd.get('type')}, not {rtype!r}",
                                   (str(rtype),)))
        return report
    walk = _Walk(conf, report, resource, skip=_ENTRY_RESOURCE if entries_checked else "")
    walk.profile(sd, [(str(sd.get("type")), resource)], depth=0)
    return report


_ENTRY_RESOURCE = "Bundle.entry.resource"


class _Walk:
    def __init__(self, conf: Conformance, report: Report, resource: dict, skip: str = "") -> None:
        self.conf, self.report, self.resource, self.skip = conf, report, resource, skip

    def issue(self, code: str, text: str, where: str, severity: str = "error") -> None:
        self.report.issues.append(Issue(code, text, (where,), severity))

    def profile(self, sd: dict, nodes: list[Node], depth: int) -> None:
        tree = _tree(sd)
        if tree.root and depth < 8:
            self.visit(tree, sd, tree.root, nodes, depth)

    def visit(self, tree: _Tree, sd: dict, eid: str, nodes: list[Node], depth: int) -> None:
        if not nodes:
            return
        el = tree.by_id[eid]
        facts = _facts(el)
        deeper = eid != tree.root and el.get("path") != self.skip and facts.profiles
        for here, node in nodes:
            if facts.values:
                self.values(el, here, node)
            if facts.binding is not None:
                self.binding(el, here, node)
            if facts.constraints:
                self.invariants(el, here, node)
            if deeper:
                for url in facts.profiles:
                    other = self.conf.resolve("StructureDefinition", url) if isinstance(url, str) else None
                    if other is not None and other is not sd and isinstance(node, dict):
                        self.profile(other, [(here, node)], depth + 1)
            if not isinstance(node, dict):
                continue
            for child, cel, cfacts, choice, has_slices in _kids(tree, eid):
                name = cfacts.name
                # most of a profile's elements are absent from a given node: no list, no call for them
                found = self.children_of(cel, name, here, node) if choice or name in node else []
                n = len(found)
                if cfacts.low is not None and n < cfacts.low or cfacts.high is not None and n > cfacts.high:
                    self.count(cel, found, f"{here}.{name}", name)
                if cfacts.removed:
                    continue
                if found or has_slices:  # a slice may be required
                    self.sliced(tree, sd, child, found, f"{here}.{name}", depth)
                if found:
                    self.visit(tree, sd, child, found, depth)

    def children_of(self, el: dict, name: str, here: str, node: dict) -> list[Node]:
        if name.endswith("[x]"):
            prefix = name[:-3]
            keys = [k for k in node if k.startswith(prefix) and k[len(prefix):][:1].isupper()]
            allowed = {str(t.get("code", ""))[:1].upper() + str(t.get("code", ""))[1:] for t in el.get("type") or ()}
            for key in keys:
                if allowed and key[len(prefix):] not in allowed:
                    self.issue("structure", f"{key[len(prefix):]} is not one of the types allowed here: "
                                            f"{', '.join(sorted(allowed))}", f"{here}.{key}")
        else:
            keys = [name] if name in node else []
        out: list[Node] = []
        for key in keys:
            value = node[key]
            if isinstance(value, list):
                out += [(f"{here}.{key}[{i}]", v) for i, v in enumerate(value)]
            else:
                out.append((f"{here}.{key}", value))
        return out

    def count(self, el: dict, found: list[Node], where: str, what: str) -> None:
        facts = _facts(el)
        if facts.low is not None and len(found) < facts.low:
            self.issue("required", f"{what}: minimum required = {facts.low}, but only found {len(found)}", where)
        if facts.high is not None and len(found) > facts.high:
            self.issue("structure", f"{what}: maximum allowed = {facts.high}, but found {len(found)}", where)

    def sliced(self, tree: _Tree, sd: dict, eid: str, found: list[Node], where: str, depth: int) -> None:
        slicing = tree.by_id[eid].get("slicing")
        slice_ids = tree.slices[eid]
        if not isinstance(slicing, dict) or not slice_ids:
            return
        tests = [matcher(tree.by_id, s, slicing) for s in slice_ids]
        if any(t is None for t in tests):
            self.report.skipped_slicings += 1
            return
        claimed: set[str] = set()
        for slice_id, test in zip(slice_ids, tests, strict=True):
            name = tree.by_id[slice_id].get("sliceName", slice_id)
            matched = [(h, v) for h, v in found if h not in claimed and test(v)]
            claimed |= {h for h, _ in matched}
            self.count(tree.by_id[slice_id], matched, where, f"slice '{name}'")
            self.visit(tree, sd, slice_id, matched, depth)
        if slicing.get("rules") == "closed":
            for h, _ in found:
                if h not in claimed:
                    self.issue("structure", "This element matches no slice of a closed slicing", h)

    def values(self, el: dict, here: str, node: Any) -> None:
        for fixed, expected in _facts(el).values:
            if fixed and node != expected:
                self.issue("value", f"Value is not the fixed value {_show(expected)}", here)
            elif not fixed and not contains(node, expected):
                self.issue("value", f"Value does not match the pattern {_show(expected)}", here)

    def binding(self, el: dict, here: str, node: Any) -> None:
        bound = _facts(el).binding
        if bound is None:
            return
        url, strength, kinds = bound
        vs = self.conf.resolve("ValueSet", url)
        if vs is None:
            self.report.skipped_bindings += 1
            return
        if isinstance(node, str):
            ok = node in _codes(self.conf, vs)
        elif isinstance(node, dict) and ("coding" in node or "code" in node or "CodeableConcept" in kinds):
            # a CodeableConcept with text alone carries no code of the value set
            codings = node.get("coding", []) if "coding" in node or "CodeableConcept" in kinds else [node]
            members = _members(self.conf, vs)  # the common case, a listed code, without expanding again
            ok = any(isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
                     and ((c["system"], c["code"]) in members
                          or validate_code(self.conf, vs, c["system"], c["code"]).result)
                     for c in (codings if isinstance(codings, list) else []))
        else:
            return
        if not ok and strength == "required":
            self.issue("code-invalid", f"The code is not in the required value set {label(vs)}", here)
        elif not ok:  # extensible: another code is allowed when none of the value set fits
            self.issue("code-invalid", f"The code is not in the extensible value set {label(vs)}; use one of its "
                       "codes if one fits", here, "warning")

    def invariants(self, el: dict, here: str, node: Any) -> None:
        for c, base in _facts(el).constraints:
            try:
                ok = invariants.holds(node, base, c["expression"], self.resource)
            except invariants.Unevaluable:
                self.report.skipped_invariants += 1
                continue
            if not ok:
                severity = "warning" if c.get("severity") == "warning" else "error"
                self.issue("invariant", f"Constraint failed: {c.get('key')}: {c.get('human')}", here, severity)


def _codes(conf: Conformance, vs: dict) -> frozenset[str]:
    return frozenset(code for _, code in _members(conf, vs))


def _members(conf: Conformance, vs: dict) -> frozenset[tuple[str, str]]:
    """(system, code) of the value set's selectable codes, expanded once per store and value set."""
    held = _CODES.get((id(conf), label(vs)))
    if held is None or held[0] is not vs:
        held = (vs, frozenset((c.system, c.code) for c in codes_of(conf, vs) if not c.abstract))
        _CODES[(id(conf), label(vs))] = held
    return held[1]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
