"""Which slice a value belongs to: value/pattern discriminators on a path (or `$this`), extensions by
their definition's url, `type` of a resource. A discriminator this module cannot read (`exists`,
`resolve()`, no fixed/pattern value at its path) makes the slicing unreadable: None, so the caller skips it.
"""

from __future__ import annotations

from typing import Any


def contains(actual: Any, pattern: Any) -> bool:
    """FHIR pattern matching: every part of the pattern is in the value (list items: in some item)."""
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(contains(actual.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = actual if isinstance(actual, list) else [actual]
        return all(any(contains(a, p) for a in items) for p in pattern)
    return actual == pattern


def expected_value(element: dict) -> tuple[str, Any] | None:
    """('fixed'|'pattern', value) of an element, or None."""
    for key, value in element.items():
        if key.startswith("fixed"):
            return "fixed", value
        if key.startswith("pattern"):
            return "pattern", value
    return None


def _at(value: Any, path: str) -> list[Any]:
    values = [value]
    for step in path.split("."):
        nxt: list[Any] = []
        for v in values:
            got = v.get(step) if isinstance(v, dict) else None
            nxt += got if isinstance(got, list) else ([] if got is None else [got])
        values = nxt
    return values


def matcher(by_id: dict[str, dict], slice_id: str, slicing: dict) -> Any:
    """A predicate value -> bool for the slice, or None when a discriminator cannot be read."""
    tests = []
    for disc in slicing.get("discriminator") or ():
        test = _test(by_id, slice_id, disc if isinstance(disc, dict) else {})
        if test is None:
            return None
        tests.append(test)
    if not tests:
        return None
    return lambda value: all(t(value) for t in tests)


def _test(by_id: dict[str, dict], slice_id: str, disc: dict) -> Any:
    path, kind, el = disc.get("path"), disc.get("type"), by_id[slice_id]
    if not isinstance(path, str) or "(" in path:
        return None
    profiles = [p for t in el.get("type") or () for p in t.get("profile") or ()]
    if path == "url" and profiles:  # an extension slice, by its definition's url
        return lambda v: isinstance(v, dict) and v.get("url") == profiles[0]
    if kind == "type":
        target = el if path == "$this" else by_id.get(f"{slice_id}.{path}")
        codes = [t.get("code") for t in (target or {}).get("type") or ()]
        if len(codes) != 1:
            return None
        if path == "$this":
            return lambda v: isinstance(v, dict) and v.get("resourceType") == codes[0]
        return lambda v: any(isinstance(a, dict) and a.get("resourceType") == codes[0] for a in _at(v, path))
    if kind not in ("value", "pattern"):
        return None
    target = el if path == "$this" else by_id.get(f"{slice_id}.{path}")
    wanted = expected_value(target) if target else None
    if wanted is None:
        return None
    how, expected = wanted
    if path == "$this":
        return (lambda v: v == expected) if how == "fixed" else (lambda v: contains(v, expected))
    if how == "fixed":
        return lambda v: any(a == expected for a in _at(v, path))
    return lambda v: any(contains(a, expected) for a in _at(v, path))
