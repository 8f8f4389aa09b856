"""The models' shortcut (`validation/primitives.py`): skipping the `fhir.resources` models never changes what the
structural check says. Every shipped example (the invalid ones included), every R4 and ANS guide example, and
thousands of mutations of their values with the awkward forms each primitive type has (bad calendar days, leap
seconds, time zones past 14:00, padding, whitespace, 32-bit bounds, exponents...), give the same issues with the
shortcut as with the models always run."""

from __future__ import annotations

import copy
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from fhir_dmp.fhirjson import ExactDecimal
from fhir_dmp.validation import structure
from fhir_dmp.validation.primitives import plain
from tests.validation.test_fhirpath_compile import RESOURCES

AWKWARD: list[Any] = [
    "", " ", "a", "a b", "a  b", " a", "a ", "a\tb", "a\nb", "\u00a0a", "é", "ÉLODIE", "x" * 64, "x" * 65, "a_b",
    "ab-.9", "2020", "0000", "0999", "2020-01", "2020-13", "2020-00-10", "2020-02-29", "2019-02-29", "2020-02-30",
    "2020-04-31", "2020-01-01T10:00:00Z", "2020-01-01T10:00:00", "2020-01-01T10:00Z", "2020-01-01T24:00:00Z",
    "2020-01-01T23:59:60Z", "2020-01-01T10:00:00.1234567+01:00", "2020-01-01T10:00:00.123+14:00",
    "2020-01-01T10:00:00+14:30", "2020-01-01T10:00:00-13:59", "2020-02-30T10:00:00Z", "2020-01-01 10:00:00Z",
    "10:00:00", "24:00:00", "10:00", "10:00:60", "10:00:00.5", "urn:oid:1.2.250.1.213", "urn:oid:1.02",
    "urn:oid:3.1", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "http://x y", "http://example.org/a",
    "Patient/123", "AAAA", "AAA=", "AA==", "A===", "AB=C", "abc", "QUJD\nREVG", "-1", "+1", "01", "1e5",
    0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 10**20, True, False, None,
    ExactDecimal("1.50"), ExactDecimal("-0.0"), ExactDecimal("1e5"), ExactDecimal("1E-7"), ExactDecimal("0.0000001"),
    Decimal("12345678901234567890.5"), [], {}, ["a"], {"a": 1},
]


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """The path of every primitive leaf of a JSON value (resourceType excepted)."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() if key != "resourceType" for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [path]


def _set(value: Any, path: tuple, new: Any) -> Any:
    out = copy.deepcopy(value)
    holder = out
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = new
    return out


def _both(resource: dict) -> tuple[list, list]:
    rtype = resource["resourceType"]
    if rtype not in structure._tables().resource_types:
        return [], []
    return (structure._issues(resource, rtype, always_model=False),
            structure._issues(resource, rtype, always_model=True))


def test_examples_give_the_same_issues_with_and_without_the_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(RESOURCES) > 100
    modelled = []
    model = structure._model_issues
    monkeypatch.setattr(structure, "_model_issues", lambda r, t: modelled.append(r) or model(r, t))
    for resource in RESOURCES:
        fast, full = _both(resource)
        assert fast == full, (resource.get("resourceType"), resource.get("id"), fast, full)
    assert len(modelled) < 2 * len(RESOURCES) - 50  # the shortcut is taken, and often


@pytest.mark.parametrize("seed", range(4))
def test_mutated_values_give_the_same_issues(seed: int) -> None:
    rng = random.Random(seed)
    tried = 0
    for resource in rng.sample(RESOURCES, min(len(RESOURCES), 60)):
        leaves = _leaves(resource)
        for path in rng.sample(leaves, min(len(leaves), 12)):
            mutated = _set(resource, path, rng.choice(AWKWARD))
            fast, full = _both(mutated)
            assert fast == full, (path, json.dumps(mutated, default=str)[:300], fast, full)
            tried += 1
    assert tried > 300


@pytest.mark.parametrize(("value", "fhir_type"), [
    ("2020-02-30", "date"), ("2020-01-01T10:00:00", "dateTime"), ("2020-01-01", "instant"), ("a  b", "code"),
    ("x" * 65, "id"), ("AB=C", "base64Binary"), ("A", "base64Binary"), (2**31, "integer"), (0, "positiveInt"),
    ("2020-01-01T23:59:60Z", "instant"), (True, "integer"), ("1", "integer"), ("<div/>", "xhtml"), (1, "boolean"),
])
def test_awkward_values_are_left_to_the_models(value: Any, fhir_type: str) -> None:
    assert not plain(value, fhir_type)


@pytest.mark.parametrize(("value", "fhir_type"), [
    ("2020-02-29", "date"), ("2020-01-01T10:00:00.123+01:00", "dateTime"), ("2020", "dateTime"),
    ("2020-01-01T10:00:00Z", "instant"), ("urn:oid:1.2.250.1.213.1.4.10", "oid"), ("QUJD", "base64Binary"),
    ("", "base64Binary"), ("Compte rendu", "string"), (ExactDecimal("1.50"), "decimal"), (0, "unsignedInt"),
])
def test_plain_values(value: Any, fhir_type: str) -> None:
    assert plain(value, fhir_type)
