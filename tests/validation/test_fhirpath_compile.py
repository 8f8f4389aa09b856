"""The compiled invariants (`validation/fhirpath_compile.py`) against fhirpathpy's interpreter.

Every invariant of every shipped profile (R4's own ele-1, dom-*, ext-1... included, not only those the
validator evaluates) is evaluated with both engines on every node the profile walk reaches in every shipped
example (examples/, the invalid ones included), the R4 examples and the ANS guides' examples of the profiled
types; then every invariant on every object of examples/, whatever its element. Where both engines tell a verdict
it is the same, except `extension(url)`: R4 gives every matching extension, fhirpathpy 2.2.4 only the first,
so a node with two extensions of one url may differ there, and only there. The compiler covers every node
fhirpathpy does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_dmp.validation import invariants, profile
from fhir_dmp.validation.fhirpath_compile import Unsupported, compiled

ROOT = Path(__file__).resolve().parents[2]
PROFILES = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "profiles").glob("Structure*.json"))]
REFERENCE = ROOT / "tests" / "data" / "reference"
SOURCES = [*sorted((ROOT / "examples").glob("**/*.json")), *sorted((REFERENCE / "fhir-r4" / "examples").glob("*.json")),
           *sorted((REFERENCE / "ig").glob("*/examples/*.json")), *sorted((REFERENCE / "ig").glob("*/built-*.json"))]
EXPRESSIONS = sorted({c["expression"] for sd in PROFILES for e in sd["snapshot"]["element"]
                      for c in e.get("constraint") or () if isinstance(c.get("expression"), str)})


def _resources(value: Any) -> Iterator[dict]:
    """A resource, the resources of its Bundle entries and its contained ones, at any depth."""
    if not isinstance(value, dict):
        return
    if isinstance(value.get("resourceType"), str):
        yield value
    for entry in value.get("entry") or () if value.get("resourceType") == "Bundle" else ():
        if isinstance(entry, dict):
            yield from _resources(entry.get("resource"))
    for inner in value.get("contained") or ():
        yield from _resources(inner)
    if "resource" in value and "expected" in value:  # an invalid example: {"resource": ..., "expected": ...}
        yield from _resources(value["resource"])


def _loaded(sources: list[Path]) -> list[dict]:
    found = []
    for path in sources:
        try:
            found += list(_resources(json.loads(path.read_text(encoding="utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    return found


RESOURCES = _loaded(SOURCES)
SHIPPED = [r for r in (next(_resources(json.loads(p.read_text(encoding="utf-8"))), None) for p in SOURCES
                       if p.is_relative_to(ROOT / "examples")) if r is not None]  # outer ones, entries within


def _verdict(engine: Any, node: Any, base: str, expression: str, resource: dict) -> bool | None:
    try:
        return engine(node, base, expression, resource)
    except invariants.Unevaluable:
        return None


class _Recording(profile._Walk):
    """The profile walk, recording the (element, node) pairs it evaluates invariants on."""

    def __init__(self, resource: dict) -> None:
        super().__init__(invariants_conf(), profile.Report(), resource)
        self.seen: list[tuple[dict, Any]] = []

    def invariants(self, el: dict, here: str, node: Any) -> None:
        if el.get("constraint"):
            self.seen.append((el, node))


def invariants_conf() -> Any:
    from tests.validation.test_examples import CONF
    return CONF


def _two_of_one_url(node: Any) -> bool:
    urls = [e.get("url") for e in node.get("extension") or () if isinstance(e, dict)] if isinstance(node, dict) else []
    return len(urls) != len(set(urls))


def _compare(cases: Iterator[tuple[Any, str, str, dict]]) -> tuple[Counter, list]:
    tally: Counter = Counter()
    differences = []
    for node, base, expression, resource in cases:
        if isinstance(compiled(expression), Unsupported):  # both engines are fhirpathpy there
            continue
        fast = _verdict(invariants.holds, node, base, expression, resource)
        slow = _verdict(invariants.interpreted, node, base, expression, resource)
        tally["both" if fast is not None and slow is not None else "compiled only" if fast is not None
              else "fhirpathpy only" if slow is not None else "neither"] += 1
        if slow is not None and fast != slow:
            differences.append((expression, base, node, fast, slow))
    return tally, differences


def _walked() -> Iterator[tuple[Any, str, str, dict]]:
    for resource in RESOURCES:
        for sd in (sd for sd in PROFILES if sd["type"] == resource["resourceType"] and sd.get("kind") == "resource"):
            walk = _Recording(resource)
            walk.profile(sd, [(resource["resourceType"], resource)], depth=0)
            for el, node in walk.seen:
                for c in el["constraint"]:
                    if isinstance(c.get("expression"), str):
                        yield node, invariants.context_type(el), c["expression"], resource


def _every_object(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from _every_object(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _every_object(inner)


def _swept() -> Iterator[tuple[Any, str, str, dict]]:
    bases = {c["expression"]: invariants.context_type(e) for sd in PROFILES for e in sd["snapshot"]["element"]
             for c in e.get("constraint") or () if isinstance(c.get("expression"), str)}
    for resource in SHIPPED:
        for node in _every_object(resource):
            for expression, base in sorted(bases.items()):
                yield node, base, expression, resource


@pytest.mark.parametrize("cases", [_walked, _swept], ids=["walked", "every-object"])
def test_compiled_and_interpreted_agree(cases):
    tally, differences = _compare(cases())
    assert tally["both"] > 1000, tally
    assert tally["fhirpathpy only"] == 0, tally
    unexplained = [d for d in differences if "extension('" not in d[0] or not _two_of_one_url(d[2])]
    assert unexplained == [], unexplained[:5]


def test_extension_url_gives_every_matching_extension():
    """R4's extension(url) (the compiled form) against fhirpathpy 2.2.4's (the first matching one only)."""
    node = {"url": "x", "extension": [{"url": "comment", "valueString": "a"}, {"url": "comment", "valueString": "b"},
                                      {"url": "other", "valueString": "c"}]}
    run = compiled("extension('comment').value.count() = 2")
    assert not isinstance(run, Unsupported)
    assert run(node, "Extension", node) == [True]
    assert invariants.holds(node, "Extension", "extension('comment').value.count() = 2", node) is True
    assert invariants.interpreted(node, "Extension", "extension('comment').value.count() = 2", node) is False


def test_only_dom_3_falls_back():
    """What the compiler leaves to fhirpathpy among the shipped profiles' invariants: dom-3 (`+`, `|`, trace)."""
    left = invariants.fallbacks(EXPRESSIONS)
    assert [e[:40] for e in left] == ["contained.where((('#'+id in (%resource.d"]


@pytest.mark.parametrize("expression, node, expected", [
    ("hasValue() or (children().count() > id.count())", {"id": "a"}, False),
    ("hasValue() or (children().count() > id.count())", {"id": "a", "url": "u"}, True),
    ("extension.exists() != value.exists()", {"url": "u", "valueString": "x"}, True),
    ("extension.exists() != value.exists()", {"url": "u"}, False),
    ("value.ofType(integer) >= 1", {"url": "u", "valueInteger": 0}, False),
    ("value.ofType(string).matches('^[0-9a-f]{2}$')", {"url": "u", "valueString": "0f"}, True),
    ("value.ofType(string).matches('^[0-9a-f]{2}$')", {"url": "u", "valueCode": "zz"}, False),
    ("extension[1].url = 'b' and extension[2].empty()", {"url": "u", "extension": [{"url": "a"}, {"url": "b"}]}, True),
    ("url.startsWith('u') and url.length() = 2 and (url.contains('v') xor true)", {"url": "uv"}, False),
])
def test_shapes(expression, node, expected):
    assert invariants.holds(node, "Extension", expression, node) is expected


def test_a_path_from_the_resource_is_read_once_per_resource_and_afresh_for_the_next():
    """An operand that does not depend on the focus (`%resource....` inside `all()`) is evaluated once per resource:
    the verdicts on Bundles taken in turn are each one's own, as fhirpathpy gives them."""
    expression = ("entry.where(resource is DocumentReference).fullUrl.all($this in "
                  "%resource.entry.resource.ofType(List).entry.item.reference)")

    def bundle(listed: list[str], documents: list[str]) -> dict:
        items = [{"item": {"reference": url}} for url in listed]
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:l", "resource": {"resourceType": "List", "status": "current", "mode": "working",
                                                   "entry": items}},
            *({"fullUrl": url, "resource": {"resourceType": "DocumentReference", "status": "current"}}
              for url in documents)]}

    bundles = [bundle(["urn:uuid:a", "urn:uuid:b"], ["urn:uuid:a", "urn:uuid:b"]),
               bundle(["urn:uuid:a"], ["urn:uuid:a", "urn:uuid:b"]),
               bundle(["urn:uuid:a", "urn:uuid:b"], ["urn:uuid:b"]),
               bundle([], ["urn:uuid:c"])]
    expected = [True, False, True, False]
    for _ in range(2):
        assert [invariants.holds(b, "Bundle", expression, b) for b in bundles] == expected
        assert [invariants.interpreted(b, "Bundle", expression, b) for b in bundles] == expected
