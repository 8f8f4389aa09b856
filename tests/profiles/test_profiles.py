"""profiles/: the generated StructureDefinitions are valid R4, current, deterministic, and say what the DMP does.

- every file is a structurally valid R4 StructureDefinition, and keeps the R4 rules of StructureDefinition
  and ElementDefinition (sdf-*, eld-*, evaluated with fhirpathpy);
- each differential element is in the snapshot with its constraint applied; snapshot ids are unique and
  follow the base definitions' order (children after their parent, slices after the unsliced element);
- the slices the DMP relies on are there; every invariant parses as FHIRPath, holds on what the server and
  its examples write, and fails on the counter-examples it is meant to catch.

The generator (`tools/build_profiles.py`, which reads ../shared) is tested apart: tools/tests/test_generators.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from fhir_dmp.validation.structure import validate_structure

try:  # FHIRPath checks need fhirpathpy (a test extra); the structural ones do not
    import fhirpathpy
    from antlr4 import CommonTokenStream, InputStream  # fhirpathpy's own dependency
    from antlr4.error.ErrorListener import ErrorListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    from tests.profiles.checker import evaluate, problems
except ImportError:  # pragma: no cover - without the test extras
    fhirpathpy = None
    ErrorListener = object
needs_fhirpath = pytest.mark.skipif(fhirpathpy is None, reason="fhirpathpy is not installed: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "profiles"
REF = REPO / "tests" / "data" / "reference"  # copies of the few reference files read here (SOURCES.md there)
BASE_DEFINITIONS = REF / "fhir-r4" / "package"  # StructureDefinitions of hl7.fhir.r4.core 4.0.1
BASE = "https://fhir-dmp.example.org/StructureDefinition/"
OFFICIAL = {
    "pdsm-ext-is-archived": "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived",
    "fr-core-identity-reliability": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability",
}
EXPECTED = {"dmp-patient", "dmp-documentreference", "dmp-submissionset", "dmp-iti65-bundle", "dmp-consent",
            "dmp-auditevent", "dmp-vsm", "audit-chain", "dmp-closure"} | set(OFFICIAL)


SDS = {p.name.removeprefix("StructureDefinition-").removesuffix(".json"): json.loads(p.read_text(encoding="utf-8"))
       for p in sorted(PROFILES.glob("StructureDefinition-*.json"))}
BY_URL = {sd["url"]: sd for sd in SDS.values()}
OURS = set(BY_URL)


def element(pid: str, eid: str) -> dict:
    return next(e for e in SDS[pid]["snapshot"]["element"] if e["id"] == eid)


# -- the files ------------------------------------------------------------------------------------------
def test_every_profile_is_shipped_under_its_canonical():
    assert set(SDS) == EXPECTED
    for pid, sd in SDS.items():
        assert sd["id"] == pid
        assert sd["url"] == OFFICIAL.get(pid, BASE + pid)
        assert sd["fhirVersion"] == "4.0.1" and sd["derivation"] == "constraint"


@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_structurally_valid_r4(pid):
    assert validate_structure(SDS[pid]) == []


@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_served_as_xml_too(pid):
    """The server's XML converter (built from the R4 definitions) round-trips every profile."""
    from fhir_dmp.http.fhirxml import json_to_xml, xml_to_json

    assert xml_to_json(json_to_xml(SDS[pid])) == SDS[pid]


def _strings(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)
    elif isinstance(value, str):
        yield key, value


@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_canonicals_are_absolute_and_aliases_resolved(pid):
    for key, value in _strings(SDS[pid]):
        if key in ("url", "baseDefinition", "profile", "targetProfile", "valueSet", "system"):
            assert value.startswith(("http://", "https://", "urn:")), (key, value)
        if key in ("expression", "profile", "targetProfile", "valueSet", "fixedUri", "system"):
            assert not re.search(r"\$[A-Za-z]", value.replace("$this", "").replace("$index", "")), (key, value)


# -- differential and snapshot --------------------------------------------------------------------------
@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_every_differential_element_is_in_the_snapshot_with_its_constraint(pid):
    sd = SDS[pid]
    snapshot = {e["id"]: e for e in sd["snapshot"]["element"]}
    order = list(snapshot)
    diff_ids = [d["id"] for d in sd["differential"]["element"]]
    assert len(diff_ids) == len(set(diff_ids))
    assert [order.index(i) for i in diff_ids] == sorted(order.index(i) for i in diff_ids)
    for diff in sd["differential"]["element"]:
        snap = snapshot[diff["id"]]
        assert snap["path"] == diff["path"]
        for key, value in diff.items():
            if key == "constraint":
                applied = {c["key"]: c for c in snap["constraint"]}
                for c in value:
                    assert applied[c["key"]]["expression"] == c["expression"]
                    assert applied[c["key"]]["source"] == sd["url"]
            elif key == "mapping":
                assert all(m in snap["mapping"] for m in value)
            else:
                assert snap[key] == value, (diff["id"], key)


class _BaseOrder:
    """Where each snapshot element sits in the base definitions, read independently from the package."""

    def __init__(self) -> None:
        self.sds: dict[str, dict] = {}
        for path in BASE_DEFINITIONS.glob("StructureDefinition-*.json"):  # the base types the profiles reach
            sd = json.loads(path.read_text(encoding="utf-8"))
            self.sds[sd["id"]] = sd

    def key(self, profile: dict, eid: str, ordinals: dict[str, int]) -> tuple:
        """(position among its siblings, slice ordinal) for each step of the id; raises if not in the base."""
        sd = self.sds[profile["type"]]
        prefix, so_far, key = sd["snapshot"]["element"][0]["path"], eid.split(".")[0], []
        for step in eid.split(".")[1:]:
            name, _, slice_name = step.partition(":")
            siblings = [e for e in sd["snapshot"]["element"] if e["path"].rsplit(".", 1)[0] == prefix
                        and e["path"].count(".") == prefix.count(".") + 1 and ":" not in e["id"]]
            names = [e["path"].rsplit(".", 1)[1] for e in siblings]
            base = siblings[names.index(name)]
            ordinal = 0  # the unsliced element; its slices are numbered as they first appear
            if slice_name:
                group = f"{so_far}.{name}:"
                ordinal = ordinals.setdefault(group + slice_name, 1 + sum(k.startswith(group) for k in ordinals))
            key.append((names.index(name), ordinal))
            so_far = f"{so_far}.{step}"
            prefix = base["path"]
            if any(e["path"].startswith(prefix + ".") for e in sd["snapshot"]["element"]):
                continue  # a backbone element: its children are in the same definition
            if "contentReference" in base:
                prefix = base["contentReference"].lstrip("#")
                continue
            mine = next(e for e in profile["snapshot"]["element"] if e["id"] == so_far)
            codes = [t["code"] for t in mine.get("type", [])]
            if len(codes) == 1 and codes[0] in self.sds:
                sd = self.sds[codes[0]]
                prefix = sd["snapshot"]["element"][0]["path"]
        return tuple(key)


@pytest.fixture(scope="module")
def base_order() -> _BaseOrder:
    return _BaseOrder()


def _misplaced(sd: dict, base_order: _BaseOrder) -> list[tuple[str, str]]:
    """Consecutive snapshot elements out of the base order (each key must be greater than the one before)."""
    ids = [e["id"] for e in sd["snapshot"]["element"]]
    ordinals: dict[str, int] = {}
    keys = [base_order.key(sd, eid, ordinals) for eid in ids]
    return [(ids[i], ids[i + 1]) for i in range(len(ids) - 1) if not keys[i] < keys[i + 1]]


def test_the_order_check_catches_a_misplaced_element(base_order):
    sd = copy.deepcopy(SDS["dmp-patient"])
    elements = sd["snapshot"]["element"]
    system = next(i for i, e in enumerate(elements) if e["id"] == "Patient.identifier:INS-NIR.system")
    elements.insert(system + 8, elements.pop(system))  # into the INS-NIA slice
    assert _misplaced(sd, base_order)
    sd = copy.deepcopy(SDS["dmp-vsm"])
    elements = sd["snapshot"]["element"]
    elements.insert(2, elements.pop(5))  # a base element ahead of its elder sibling
    assert _misplaced(sd, base_order)


@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_snapshot_ids_are_unique_and_in_base_order(pid, base_order):
    sd = SDS[pid]
    ids = [e["id"] for e in sd["snapshot"]["element"]]
    assert len(ids) == len(set(ids))
    assert ids[0] == sd["type"]
    assert _misplaced(sd, base_order) == []
    for e in sd["snapshot"]["element"]:
        assert {"definition", "min", "max", "base"} <= set(e), e["id"]  # sdf-3, sdf-8b


def test_is_archived_is_the_published_pdsm_definition():
    official = json.loads((REF / "ig" / "pdsm" / "StructureDefinition-pdsm-ext-is-archived.json").read_text())
    mine = SDS["pdsm-ext-is-archived"]

    def shape(elements):
        return [(e["id"], e.get("min"), e.get("max"), [t["code"] for t in e.get("type", [])], e.get("fixedUri"),
                 e.get("short") if e["id"] == "Extension" else None) for e in elements]

    for key in ("url", "version", "name", "type", "context", "kind"):
        assert mine[key] == official[key]
    assert shape(mine["snapshot"]["element"]) == shape(official["snapshot"]["element"])
    assert shape(mine["differential"]["element"]) == shape(official["differential"]["element"])


# -- the slices the DMP relies on --------------------------------------------------------------------------
def test_patient_ins_slices_by_system():
    assert element("dmp-patient", "Patient.identifier")["slicing"]["discriminator"] == [
        {"type": "value", "path": "system"}]
    assert element("dmp-patient", "Patient.identifier")["min"] == 1
    systems = {"INS-NIR": "8", "INS-NIA": "9", "INS-NIR-TEST": "10", "INS-NIR-DEMO": "11"}
    for name, last in systems.items():
        assert element("dmp-patient", f"Patient.identifier:{name}")["sliceName"] == name
        system = element("dmp-patient", f"Patient.identifier:{name}.system")
        assert system["fixedUri"] == f"urn:oid:1.2.250.1.213.1.4.{last}" and system["min"] == 1
        assert element("dmp-patient", f"Patient.identifier:{name}.value")["min"] == 1
        assert element("dmp-patient", f"Patient.identifier:{name}.period")["base"]["path"] == "Identifier.period"
    for eid in ("Patient.name", "Patient.gender", "Patient.birthDate"):
        assert element("dmp-patient", eid)["min"] == 1
    profiles = {e["sliceName"]: e["type"][0]["profile"] for e in SDS["dmp-patient"]["snapshot"]["element"]
                if e["path"] == "Patient.extension" and "sliceName" in e}
    assert profiles == {"identityReliability": [OFFICIAL["fr-core-identity-reliability"]],
                        "closure": [BASE + "dmp-closure"]}
    assert element("dmp-patient", "Patient.extension")["slicing"]["discriminator"] == [{"type": "value", "path": "url"}]


def test_vsm_sections_by_code_pattern():
    section = element("dmp-vsm", "Composition.section")
    assert section["slicing"]["discriminator"] == [{"type": "pattern", "path": "code"}]
    required = {"11450-4", "48765-2", "10160-0", "47519-4", "46264-8"}
    optional = {"10157-6", "11369-6", "30954-2", "42348-3", "44944-7", "18776-5", "29762-2"}
    found = {}
    for e in SDS["dmp-vsm"]["snapshot"]["element"]:
        if e["path"] == "Composition.section" and "sliceName" in e:
            code = element("dmp-vsm", f"{e['id']}.code")
            found[code["patternCodeableConcept"]["coding"][0]["code"]] = e
            assert code["patternCodeableConcept"]["coding"][0]["system"] == "http://loinc.org" and code["min"] == 1
    assert set(found) == required | optional
    for code, e in found.items():
        assert (e["min"], e["max"]) == ((1, "1") if code in required else (0, "1"))
        rules = [c["expression"] for c in e.get("constraint", []) if c.get("source") == BASE + "dmp-vsm"]
        assert rules == (["entry.exists() or emptyReason.exists()"] if code in required else [])
    assert element("dmp-vsm", "Composition.type")["patternCodeableConcept"] == {
        "coding": [{"system": "http://loinc.org", "code": "60591-5"}]}


def test_iti65_bundle_slices_by_resource_type():
    entry = element("dmp-iti65-bundle", "Bundle.entry")
    assert entry["slicing"]["discriminator"] == [{"type": "type", "path": "resource"}]
    expected = {"SubmissionSet": ("List", 1, "1", BASE + "dmp-submissionset"),
                "DocumentRefs": ("DocumentReference", 1, "*", BASE + "dmp-documentreference"),
                "Documents": ("Binary", 0, "*", None)}
    for name, (rtype, lo, hi, profile) in expected.items():
        e = element("dmp-iti65-bundle", f"Bundle.entry:{name}")
        assert (e["min"], e["max"]) == (lo, hi)
        resource = element("dmp-iti65-bundle", f"Bundle.entry:{name}.resource")
        assert resource["type"][0]["code"] == rtype
        assert resource["type"][0].get("profile", [None])[0] == profile
    assert element("dmp-iti65-bundle", "Bundle.type")["fixedCode"] == "transaction"


def test_documentreference_requirements_and_bindings():
    for eid in ("masterIdentifier", "identifier", "date", "author", "custodian", "context.period.start",
                "content.attachment.size", "content.attachment.hash", "content.attachment.title",
                "content.attachment.contentType", "securityLabel", "type", "category"):
        assert element("dmp-documentreference", f"DocumentReference.{eid}")["min"] == 1, eid
    bindings = {eid: element("dmp-documentreference", f"DocumentReference.{eid}")["binding"]
                for eid in ("type", "category", "securityLabel")}
    assert bindings["type"]["valueSet"] == "https://mos.esante.gouv.fr/NOS/JDV_J66-TypeCode-DMP/FHIR/JDV-J66-TypeCode-DMP"
    assert bindings["category"] == {"strength": "required", "valueSet":
                                    "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"}
    assert bindings["securityLabel"]["valueSet"] == (
        "https://mos.esante.gouv.fr/NOS/JDV_J58-ConfidentialityCode-DMP/FHIR/JDV-J58-ConfidentialityCode-DMP")
    archived = element("dmp-documentreference", "DocumentReference.extension:isArchived")
    assert archived["type"][0]["profile"] == [OFFICIAL["pdsm-ext-is-archived"]] and archived["max"] == "1"


def test_audit_event_carries_its_chain_link():
    chain = element("dmp-auditevent", "AuditEvent.extension:auditChain")
    assert (chain["min"], chain["max"], chain["type"][0]["profile"]) == (1, "1", [BASE + "audit-chain"])
    assert element("audit-chain", "Extension.extension:sequence.value[x]")["type"] == [{"code": "integer"}]
    assert element("audit-chain", "Extension.extension:previous.value[x]")["type"] == [{"code": "string"}]
    assert element("audit-chain", "Extension.url")["fixedUri"] == BASE + "audit-chain"
    assert element("dmp-closure", "Extension.extension:reason.url")["fixedUri"] == "reason"
    assert element("dmp-closure", "Extension.value[x]")["max"] == "0"
    roles = element("dmp-auditevent", "AuditEvent.agent.role:profession")["binding"]
    assert roles["valueSet"].startswith("https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/")


# -- FHIRPath --------------------------------------------------------------------------------------------
class _Raise(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802,N803 - ANTLR's API
        raise SyntaxError(f"column {column}: {msg}")


def parse_strictly(expression: str) -> None:
    """fhirpathpy's own parse() ignores syntax errors: parse the whole text with errors raised."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    parser.entireExpression()


@needs_fhirpath
def test_the_strict_parser_refuses_bad_fhirpath():
    for bad in ("exists(", "a.b and", "a..b", "a = 'x"):
        with pytest.raises(SyntaxError):
            parse_strictly(bad)


@needs_fhirpath
@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_every_invariant_parses_as_fhirpath(pid):
    ours = [c for e in SDS[pid]["snapshot"]["element"] for c in e.get("constraint", [])]
    for c in ours:
        parse_strictly(c["expression"])
        assert c["severity"] in ("error", "warning") and c["human"]


def _core_rules(type_name: str) -> list[tuple[str, dict]]:
    sd = json.loads((BASE_DEFINITIONS / f"StructureDefinition-{type_name}.json").read_text(encoding="utf-8"))
    return [(e["path"], c) for e in sd["snapshot"]["element"] for c in e.get("constraint", [])
            if c["key"].startswith(("sdf-", "eld-"))]


@needs_fhirpath
@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_structure_definition_rules_of_r4_hold(pid):
    """sdf-* on the StructureDefinition, eld-* on each of its ElementDefinitions (R4's own invariants)."""
    sd = SDS[pid]
    checked = 0
    for path, rule in _core_rules("StructureDefinition"):
        nodes = {"StructureDefinition": [sd], "StructureDefinition.snapshot": [sd["snapshot"]],
                 "StructureDefinition.differential": [sd["differential"]],
                 "StructureDefinition.snapshot.element": sd["snapshot"]["element"],
                 "StructureDefinition.mapping": sd.get("mapping", [])}.get(path, [])
        for node in nodes:
            base = {"StructureDefinition.snapshot.element": "ElementDefinition"}.get(path, path)
            result = evaluate(node, base, rule["expression"], sd)
            assert result in ([True], []), (rule["key"], result)
            checked += 1
    for path, rule in _core_rules("ElementDefinition"):
        for e in sd["snapshot"]["element"] + sd["differential"]["element"]:
            nodes = {"ElementDefinition": [e], "ElementDefinition.slicing": [e.get("slicing")],
                     "ElementDefinition.type": e.get("type", []), "ElementDefinition.binding": [e.get("binding")],
                     "ElementDefinition.max": [e.get("max")], "ElementDefinition.constraint": e.get("constraint", [])}
            for node in nodes.get(path, []):
                if node is None:
                    continue
                result = evaluate(node, path, rule["expression"], sd)
                assert result in ([True], []), (rule["key"], e["id"], result)
                checked += 1
    assert checked > 100


# -- the invariants and cardinalities on real and counter examples ----------------------------------------
def _url(pid: str) -> str:
    return SDS[pid]["url"]


def _example_bundle() -> dict:
    return json.loads((REPO / "examples" / "01-dmp-claire-martin.json").read_text(encoding="utf-8"))


def _of_type(bundle: dict, rtype: str) -> dict:
    return copy.deepcopy(next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype))


def _iti65() -> dict:
    """The DMP's TD2 ITI-65 example (PDSM4DMP), completed with what PDSm requires and the example lacks."""
    bundle = json.loads((REF / "ig" / "pdsm4dmp" / "examples" / "Bundle-example-td2-iti65-lot-soumission.json")
                        .read_text(encoding="utf-8"))
    doc = bundle["entry"][1]["resource"]
    doc["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0e3a6c1e-8d36-4a3f-b1a4-bf0b2b1f0a01"}]
    doc["custodian"] = {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750000000"}}
    return bundle


def _vsm() -> dict:
    def section(code, **more):
        return {"title": code, "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, **more}
    empty = {"text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Aucun</div>"},
             "emptyReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
                                         "code": "nilknown"}]}}
    return {"resourceType": "Composition", "status": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
            "subject": {"reference": "Patient/p1"}, "date": "2026-11-15", "author": [{"reference": "Practitioner/d"}],
            "title": "Synthèse médicale",
            "section": [section("11450-4", entry=[{"reference": "Condition/c1"}]), section("48765-2", **empty),
                        section("10160-0", entry=[{"reference": "#m1"}]), section("47519-4", **empty),
                        section("46264-8", **empty), section("44944-7", text=empty["text"])]}


@needs_fhirpath
def test_the_examples_conform():
    bundle = _example_bundle()
    assert problems(BY_URL, _url("dmp-patient"), _of_type(bundle, "Patient")) == []
    assert problems(BY_URL, _url("dmp-documentreference"), _of_type(bundle, "DocumentReference")) == []
    assert problems(BY_URL, _url("dmp-iti65-bundle"), _iti65()) == []
    assert problems(BY_URL, _url("dmp-vsm"), _vsm()) == []


@needs_fhirpath
def test_the_consents_the_server_writes_conform():
    from fhir_dmp.policy.consents import authorisation

    consent = authorisation("p1", "810001234567")
    assert problems(BY_URL, _url("dmp-consent"), consent) == []
    emergency = copy.deepcopy(consent)
    emergency["provision"] = {"type": "deny", "purpose": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}]}
    assert problems(BY_URL, _url("dmp-consent"), emergency) == []


@needs_fhirpath
def test_the_audit_events_the_server_writes_conform(client, database):
    """Allowed, refused and break-the-glass traces, as stored, against dmp-auditevent and audit-chain."""
    from sqlalchemy import select

    from fhir_dmp import fhirjson
    from fhir_dmp.storage.tables import resource_version

    bundle = _example_bundle()
    assert client.post("/fhir", bundle).status_code == 200
    pid = next(e["resource"]["id"] for e in fhirjson.loads(client.get("Patient?family=MARTIN").data)["entry"])
    stranger = client.as_(actor="professional", sub="810000000555", profession="60")
    assert stranger.get(f"DocumentReference?patient={pid}").status_code == 403
    btg = client.as_(actor="professional", sub="810000000556", profession="10", purpose_of_use="BTG",
                     access_reason="Patient inconscient aux urgences")
    assert btg.get(f"DocumentReference?patient={pid}").status_code == 200
    with database.engine.connect() as conn:
        events = [fhirjson.loads(row.content) for row in conn.execute(
            select(resource_version.c.content).where(resource_version.c.resource_type == "AuditEvent"))]
    assert {e["outcome"] for e in events} >= {"0", "4"}
    assert any(p.get("text") for e in events for p in e["agent"][0]["purposeOfUse"])
    for event in events:
        assert problems(BY_URL, _url("dmp-auditevent"), json.loads(json.dumps(event, default=str))) == [], event


def _broken(pid: str, resource: dict) -> list[str]:
    found = problems(BY_URL, _url(pid), resource)
    assert found, f"{pid}: expected a problem"
    return found


def _patient(**changes) -> dict:
    patient = _of_type(_example_bundle(), "Patient")
    patient.update(changes)
    return {k: v for k, v in patient.items() if v is not None}


@needs_fhirpath
def test_patient_counter_examples():
    other = [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "180017512345678"}]
    assert any("dmp-pat-1" in p for p in _broken("dmp-patient", _patient(identifier=[
        {"system": "urn:oid:1.2.3", "value": "IPP-1"}])))
    assert any("dmp-pat-1" in p for p in _broken("dmp-patient", _patient(
        identifier=_patient()["identifier"] + other)))
    assert problems(BY_URL, _url("dmp-patient"), _patient(identifier=_patient()["identifier"] + [
        {**other[0], "use": "old"}])) == []
    assert any("birthDate" in p for p in _broken("dmp-patient", _patient(birthDate=None)))
    assert any("dmp-pat-2" in p for p in _broken("dmp-patient", _patient(name=[{"family": "MARTIN"}])))
    closure = {"url": BASE + "dmp-closure", "extension": [{"url": "date", "valueDateTime": "2026-12-01"},
                                                          {"url": "reason", "valueString": "Demande du patient"}]}
    assert problems(BY_URL, _url("dmp-patient"), _patient(active=False, extension=[closure])) == []
    assert any("dmp-pat-3" in p for p in _broken("dmp-patient", _patient(active=True, extension=[closure])))
    no_reason = {**closure, "extension": closure["extension"][:1]}
    assert any("reason" in p for p in _broken("dmp-patient", _patient(active=False, extension=[no_reason])))
    assert any("dmp-pat-4" in p for p in _broken("dmp-patient", _patient(generalPractitioner=[
        {"identifier": {"value": "810001234567"}}])))
    wrong_use = _patient(identifier=[{"use": "temp", "system": "urn:oid:1.2.250.1.213.1.4.10", "value": "1"}])
    assert any("fixed" in p for p in _broken("dmp-patient", wrong_use))


@needs_fhirpath
def test_documentreference_counter_examples():
    doc = _of_type(_example_bundle(), "DocumentReference")
    no_content = copy.deepcopy(doc)
    del no_content["content"][0]["attachment"]["data"]
    assert any("dmp-doc-2" in p for p in _broken("dmp-documentreference", no_content))
    bad_hash = copy.deepcopy(doc)
    bad_hash["content"][0]["attachment"]["hash"] = "bm90IGEgc2hhLTE="
    assert any("dmp-doc-3" in p for p in _broken("dmp-documentreference", bad_hash))
    masked_only = copy.deepcopy(doc)
    masked_only["securityLabel"] = [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A07-"
                                                 "StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument",
                                                 "code": "MASQUE_PS"}]}]
    assert any("dmp-doc-1" in p for p in _broken("dmp-documentreference", masked_only))
    for missing in ("masterIdentifier", "custodian", "author", "date", "context"):
        assert any(missing in p for p in _broken("dmp-documentreference", {
            k: v for k, v in doc.items() if k != missing})), missing
    archived = {**doc, "extension": [{"url": OFFICIAL["pdsm-ext-is-archived"], "valueBoolean": True}]}
    assert problems(BY_URL, _url("dmp-documentreference"), archived) == []
    not_boolean = {**doc, "extension": [{"url": OFFICIAL["pdsm-ext-is-archived"], "valueString": "yes"}]}
    assert _broken("dmp-documentreference", not_boolean)


@needs_fhirpath
def test_consent_counter_examples():
    from fhir_dmp.policy.consents import authorisation

    consent = authorisation("p1", "810001234567")
    not_prcp = copy.deepcopy(consent)
    not_prcp["provision"]["actor"][0]["role"]["coding"][0]["code"] = "AUT"
    assert any("dmp-consent-1" in p for p in _broken("dmp-consent", not_prcp))
    nobody = copy.deepcopy(consent)
    del nobody["provision"]["actor"]
    assert any("dmp-consent-2" in p for p in _broken("dmp-consent", nobody))
    nested = copy.deepcopy(consent)
    nested["provision"]["provision"] = [{"type": "deny"}]
    assert any("provision.provision" in p for p in _broken("dmp-consent", nested))
    assert any("patient" in p for p in _broken("dmp-consent", {k: v for k, v in consent.items() if k != "patient"}))


@needs_fhirpath
def test_iti65_counter_examples():
    two_lists = _iti65()
    two_lists["entry"].append(copy.deepcopy(two_lists["entry"][0]))
    two_lists["entry"][-1]["fullUrl"] = "urn:uuid:aaaaaaaa-0000-0000-0000-0000000000ff"
    assert any("dmp-iti65-1" in p or "SubmissionSet" in p for p in _broken("dmp-iti65-bundle", two_lists))
    unlisted = _iti65()
    unlisted["entry"][0]["resource"]["entry"][0]["item"]["reference"] = "urn:uuid:somewhere-else"
    assert any("dmp-iti65-2" in p for p in _broken("dmp-iti65-bundle", unlisted))
    batch = {**_iti65(), "type": "batch"}
    assert any("fixed" in p for p in _broken("dmp-iti65-bundle", batch))
    bad_doc = _iti65()
    del bad_doc["entry"][1]["resource"]["custodian"]
    assert any("custodian" in p for p in _broken("dmp-iti65-bundle", bad_doc))  # the entry's own profile
    no_source_id = _iti65()
    no_source_id["entry"][0]["resource"]["extension"] = no_source_id["entry"][0]["resource"]["extension"][:1]
    assert any("sourceId" in p for p in _broken("dmp-iti65-bundle", no_source_id))


@needs_fhirpath
def test_vsm_counter_examples():
    vsm = _vsm()
    del vsm["section"][1]  # allergies
    assert any("allergies" in p for p in _broken("dmp-vsm", vsm))
    empty = _vsm()
    del empty["section"][3]["emptyReason"]  # procedures: neither entries nor a reason
    assert any("dmp-vsm-procedures" in p for p in _broken("dmp-vsm", empty))
    vigilance = _vsm()
    vigilance["section"][5]["entry"] = [{"reference": "Observation/o"}]
    assert any("vigilance" in p for p in _broken("dmp-vsm", vigilance))
    assert any("type" in p for p in _broken("dmp-vsm", {**_vsm(), "type": {"coding": [
        {"system": "http://loinc.org", "code": "11488-4"}]}}))


@needs_fhirpath
def test_audit_counter_examples():
    event = {"resourceType": "AuditEvent", "extension": [{"url": BASE + "audit-chain", "extension": [
        {"url": "sequence", "valueInteger": 0}, {"url": "previous", "valueString": "abc"}]}],
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}], "action": "R",
        "recorded": "2026-11-15T10:00:00Z", "outcome": "4",
        "agent": [{"who": {"identifier": {"value": "x"}}, "requestor": True, "purposeOfUse": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}]}]}],
        "source": {"observer": {"display": "fhir-dmp"}}}
    found = _broken("dmp-auditevent", event)
    for key in ("dmp-audit-1", "dmp-audit-2", "dmp-chain-1", "dmp-chain-2"):
        assert any(key in p for p in found), key
    assert any("auditChain" in p for p in _broken("dmp-auditevent", {**event, "extension": []}))


# -- documentation -------------------------------------------------------------------------------------------
def test_the_readme_documents_every_profile_and_the_canonical_base():
    readme = (PROFILES / "README.md").read_text(encoding="utf-8")
    assert "https://fhir-dmp.example.org" in readme and "build_profiles.py" in readme
    for pid, sd in SDS.items():
        assert f"`{pid}`" in readme and sd["url"] in readme, pid
    assert "https://fhir-dmp.example.org" in (REPO / "README.md").read_text(encoding="utf-8")
