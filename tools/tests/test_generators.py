"""The offline generators of tools/ against the reference data they read (../shared/reference, beside the
repository): each regenerates exactly what the repository ships, and the profile generator's snapshot logic holds
on synthetic differentials. Skipped when ../shared/reference is not there (a fresh clone); `.ci/run` runs them.

Run: `python -m pytest tools/tests` (the repository's own suite, `python -m pytest`, never reads ../shared).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1]
REPO = TOOLS.parent
REFERENCE = REPO.parent / "shared" / "reference"
PROFILES = REPO / "profiles"
BASE = "https://fhir-dmp.example.org/StructureDefinition/"
EXPECTED = {"dmp-patient", "dmp-documentreference", "dmp-submissionset", "dmp-iti65-bundle", "dmp-consent",
            "dmp-auditevent", "dmp-vsm", "audit-chain", "dmp-closure", "pdsm-ext-is-archived",
            "fr-core-identity-reliability"}

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is not beside the repository")


def _generator(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bp = _generator("build_profiles")


# -- each generator makes what is shipped ------------------------------------------------------------------
def test_the_shipped_terminologies_are_what_the_generator_makes(tmp_path):
    _generator("build_terminologies").main(REFERENCE, tmp_path)
    made = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    shipped = {p.name: p.read_bytes() for p in (REPO / "terminologies" / "fhir").glob("*.json")}
    assert made.keys() == shipped.keys()
    assert [n for n in made if made[n] != shipped[n]] == []


def test_the_r4_bindings_table_is_up_to_date():
    generator = _generator("build_r4_bindings")
    with contextlib.redirect_stdout(io.StringIO()):
        table = generator.build(generator.REF / "fhir.schema.json", generator.REF / "hl7.fhir.r4.core-4.0.1.tgz")
    assert table == json.loads(generator.OUT.read_text())


def test_the_profile_generator_is_deterministic_and_the_files_are_current(capsys):
    first, second = bp.build_all(), bp.build_all()
    assert first == second
    assert sorted(first) == sorted(f"StructureDefinition-{pid}.json" for pid in EXPECTED)
    for name, text in first.items():
        assert (PROFILES / name).read_text(encoding="utf-8") == text, f"{name} is stale: run build_profiles.py"
    assert bp.main(["build_profiles.py", "--check"]) == 0



# -- the generator on synthetic differentials ----------------------------------------------------------------
def _build(tmp_path: Path, differential: list[dict], rtype: str = "Observation", **meta) -> dict:
    (tmp_path / "aliases.json").write_text("{}")
    spec = {"id": "t", "name": "T", "title": "T", "description": "test", "type": rtype,
            "differential": differential, **meta}
    (tmp_path / "t.json").write_text(json.dumps(spec))
    return json.loads(bp.build_all(tmp_path)["StructureDefinition-t.json"])


def _ids(sd: dict) -> list[str]:
    return [e["id"] for e in sd["snapshot"]["element"]]


def test_children_of_a_choice_restricted_to_one_type(tmp_path):
    sd = _build(tmp_path, [{"id": "Observation.value[x]", "type": [{"code": "Quantity"}]},
                           {"id": "Observation.value[x].system", "min": 1, "fixedUri": "http://unitsofmeasure.org"}])
    ids = _ids(sd)
    at = ids.index("Observation.value[x]")
    assert ids[at + 1:at + 8] == [f"Observation.value[x].{n}" for n in
                                  ("id", "extension", "value", "comparator", "unit", "system", "code")]
    system = next(e for e in sd["snapshot"]["element"] if e["id"] == "Observation.value[x].system")
    assert system["base"]["path"] == "Quantity.system" and system["path"] == "Observation.value[x].system"
    with pytest.raises(bp.ProfileError, match="one type"):
        _build(tmp_path, [{"id": "Observation.effective[x].start", "min": 1}])


def test_type_slices_of_a_choice(tmp_path):
    sd = _build(tmp_path, [{"id": "Observation.value[x]:valueQuantity", "sliceName": "valueQuantity", "min": 1},
                           {"id": "Observation.value[x]:valueQuantity.unit", "min": 1}])
    choice = next(e for e in sd["snapshot"]["element"] if e["id"] == "Observation.value[x]")
    assert choice["slicing"]["discriminator"] == [{"type": "type", "path": "$this"}]
    sliced = next(e for e in sd["snapshot"]["element"] if e["id"] == "Observation.value[x]:valueQuantity")
    assert sliced["type"] == [{"code": "Quantity"}] and sliced["min"] == 1
    assert sd["differential"]["element"][0] == {"id": "Observation.value[x]", "path": "Observation.value[x]",
                                                "slicing": choice["slicing"]}
    with pytest.raises(bp.ProfileError, match="names no type"):
        _build(tmp_path, [{"id": "Observation.value[x]:valueFoo", "sliceName": "valueFoo"}])


def test_content_reference_children(tmp_path):
    sd = _build(tmp_path, [{"id": "Composition.section.section.title", "min": 1}], rtype="Composition")
    nested = next(e for e in sd["snapshot"]["element"] if e["id"] == "Composition.section.section")
    assert "contentReference" not in nested and nested["type"] == [{"code": "BackboneElement"}]
    title = next(e for e in sd["snapshot"]["element"] if e["id"] == "Composition.section.section.title")
    assert title["min"] == 1 and title["base"]["path"] == "Composition.section.title"


def test_slices_inherit_the_unsliced_constraints_and_children_of_slices(tmp_path):
    sd = _build(tmp_path, [
        {"id": "Observation.identifier", "slicing": {"discriminator": [{"type": "value", "path": "system"}],
                                                     "rules": "open"}},
        {"id": "Observation.identifier.value", "min": 1},
        {"id": "Observation.identifier:a", "sliceName": "a", "max": "1"},
        {"id": "Observation.identifier:a.system", "fixedUri": "urn:a"},
        {"id": "Observation.identifier:b", "sliceName": "b"}])
    ids = _ids(sd)
    assert ids.index("Observation.identifier.assigner") < ids.index("Observation.identifier:a") < ids.index(
        "Observation.identifier:a.system") < ids.index("Observation.identifier:b")
    for eid in ("Observation.identifier:a.value", "Observation.identifier:b.value"):
        assert next(e for e in sd["snapshot"]["element"] if e["id"] == eid)["min"] == 1
    root = next(e for e in sd["snapshot"]["element"] if e["id"] == "Observation.identifier:a")
    assert "slicing" not in root and root["sliceName"] == "a" and root["min"] == 0


def test_a_profile_on_another_of_ours(tmp_path):
    (tmp_path / "aliases.json").write_text("{}")
    common = {"name": "T", "title": "T", "description": "test", "type": "Observation"}
    first = {"id": "a", **common, "differential": [{"id": "Observation.identifier", "min": 1}]}
    second = {"id": "b", **common, "baseDefinition": "$a", "differential": [
        {"id": "Observation.identifier", "max": "1"}, {"id": "Observation.identifier.system", "min": 1}]}
    for spec in (first, second):
        (tmp_path / f"{spec['id']}.json").write_text(json.dumps(spec))
    sd = json.loads(bp.build_all(tmp_path)["StructureDefinition-b.json"])
    assert sd["baseDefinition"] == BASE + "a"
    snapshot = {e["id"]: e for e in sd["snapshot"]["element"]}
    assert (snapshot["Observation.identifier"]["min"], snapshot["Observation.identifier"]["max"]) == (1, "1")
    assert snapshot["Observation.identifier.system"]["min"] == 1
    second["differential"] = [{"id": "Observation.identifier", "min": 0}]
    (tmp_path / "b.json").write_text(json.dumps(second))
    with pytest.raises(bp.ProfileError, match="does not narrow"):
        bp.build_all(tmp_path)


@pytest.mark.parametrize(("differential", "message"), [
    ([{"id": "Observation.status", "min": 0}], "does not narrow"),
    ([{"id": "Observation.code", "max": "*"}], "does not narrow"),
    ([{"id": "Observation.nothing", "min": 1}], "no such element"),
    ([{"id": "Observation.identifier:x", "sliceName": "x"}], "declare its slicing"),
    ([{"id": "Observation.identifier", "slicing": {"rules": "open", "description": "d"}},
      {"id": "Observation.identifier:x.system", "min": 1}], "must be declared"),
    ([{"id": "Observation.status", "binding": {"strength": "extensible", "valueSet": "http://x"}}], "weakened"),
    ([{"id": "Observation.subject", "type": [{"code": "Reference", "targetProfile": [
        "http://hl7.org/fhir/StructureDefinition/Organization"]}]}], "not allowed"),
    ([{"id": "Observation.status", "fixedUri": "x"}], "does not match"),
    ([{"id": "Observation.code", "min": 1}, {"id": "Observation.status", "min": 1}], "out of snapshot order"),
    ([{"id": "Observation.status", "isModifier": False}], "cannot be set"),
    ([{"id": "Observation.identifier", "slicing": {"rules": "open", "description": "d"}},
      {"id": "Observation.identifier:a", "sliceName": "a"},
      {"id": "Observation.identifier:a:b", "sliceName": "a:b"}], "re-slicing"),
    ([{"id": "Observation.identifier", "slicing": {"rules": "open", "description": "d"}},
      {"id": "Observation.identifier:a"}], "give its sliceName"),
    ([{"id": "Observation.status", "constraint": [{"key": "x", "severity": "error", "human": "h",
                                                    "expression": "$nope"}]}], "unknown alias"),
])
def test_the_generator_refuses_what_it_cannot_do_right(tmp_path, differential, message):
    with pytest.raises(bp.ProfileError, match=message):
        _build(tmp_path, differential)
