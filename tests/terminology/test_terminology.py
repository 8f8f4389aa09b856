"""The terminology package over the shipped files, without HTTP: $lookup, compose semantics, $expand,
$validate-code and the loader's checks. That the shipped files are exactly what their generator makes is checked
by tools/tests/test_generators.py (the generator reads ../shared)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fhir_dmp.config import project_dir
from fhir_dmp.errors import FhirError
from fhir_dmp.terminology.expansion import codes_of, expand, validate_code
from fhir_dmp.terminology.store import Conformance, load

G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
R38 = "https://mos.esante.gouv.fr/NOS/TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale"
A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
J57 = "https://mos.esante.gouv.fr/NOS/JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"
J66 = "https://mos.esante.gouv.fr/NOS/JDV_J66-TypeCode-DMP/FHIR/JDV-J66-TypeCode-DMP"
HOME = project_dir()


@pytest.fixture(scope="module")
def conf() -> Conformance:
    return load(HOME)


def vs(*include: dict, exclude: tuple[dict, ...] = ()) -> dict:
    """An inline ValueSet (what a client may POST to $expand)."""
    return {"resourceType": "ValueSet", "url": "http://example.org/vs", "status": "active",
            "compose": {"include": list(include), "exclude": list(exclude)}}


def codes(conf: Conformance, valueset: dict) -> list[str]:
    return [c.code for c in codes_of(conf, valueset)]


# -- what is shipped -------------------------------------------------------------------------------------------
def test_the_shipped_resources_keep_their_official_url_version_and_name_their_source(conf):
    expected = {
        ("CodeSystem", "TRE-G15-ProfessionSante"): "20250328120000",
        ("CodeSystem", "TRE-R38-SpecialiteOrdinale"): "20240531120000",
        ("CodeSystem", "TRE-A03-ClasseDocument"): "20231215120000",
        ("CodeSystem", "TRE-A05-TypeDocComplementaire"): "20240329120000",
        ("CodeSystem", "TRE-A07-StatutVisibiliteDocument"): "20231215120000",
        ("CodeSystem", "TRE-A08-HL7Confidentiality"): "20231215120000",
        ("CodeSystem", "v3-Confidentiality"): "2018-08-12",
        ("ValueSet", "JDV-J57-ClassCode-DMP"): "20230922120000",
        ("ValueSet", "JDV-J58-ConfidentialityCode-DMP"): "20200424120000",
        ("ValueSet", "JDV-J66-TypeCode-DMP"): "20240927120000",
        ("ValueSet", "dmp-document-types"): "20240223120000",
        ("ConceptMap", "ASS-X16-CorrespondanceType-Classe-DMP"): "20240223120000",
    }
    for (rtype, rid), version in expected.items():
        resource = conf.read(rtype, rid)
        assert resource is not None, rid
        assert resource["version"] == version and resource["status"] == "active", rid
        assert resource["meta"]["source"].startswith("https://"), rid
        assert conf.resolve(rtype, resource["url"]) is resource
        assert conf.resolve(rtype, f"{resource['url']}|{version}") is resource
        assert conf.resolve(rtype, f"{resource['url']}|0") is None


def test_the_dmp_document_types_value_set_is_the_csv_the_matrix_is_checked_against(conf):
    rows = (HOME / "terminologies" / "dmp-document-types.csv").read_text(encoding="utf-8").splitlines()[1:]
    listed = {(line.split(",")[1], line.split(",")[0]) for line in rows}
    types = codes_of(conf, conf.read("ValueSet", "dmp-document-types"))
    assert {(c.system, c.code) for c in types} == listed and len(types) == 102
    x16 = conf.read("ConceptMap", "ASS-X16-CorrespondanceType-Classe-DMP")
    mapped = {(g["source"], e["code"]) for g in x16["group"] if g["target"] == A03 for e in g["element"]}
    assert mapped == listed


# -- $lookup ---------------------------------------------------------------------------------------------------
def test_lookup_a_profession(conf):
    found = conf.lookup(G15, "10")
    assert (found.name, found.version, found.display) == ("TRE_G15_ProfessionSante", "20250328120000", "Médecin")
    assert ("status", "valueCode", "active") in found.properties
    assert ("inactive", "valueBoolean", True) not in found.properties


def test_lookup_a_specialty_ignores_case_as_the_code_system_says(conf):
    found = conf.lookup(R38, "sm26")
    assert found.display == "Qualifié en Médecine générale (SM)"
    assert [d["value"] for d in found.designations] == ["Qualifié MG"]
    assert conf.lookup(R38, "SM26", "20240531120000").display == found.display


def test_lookup_a_deprecated_profession_says_it_is_inactive(conf):
    found = conf.lookup(G15, "35")
    assert found.display == "Aide-soignant"
    assert ("status", "valueCode", "deprecated") in found.properties
    assert ("inactive", "valueBoolean", True) in found.properties


def test_lookup_walks_a_hierarchy_and_returns_only_the_properties_asked_for(conf):
    top = conf.lookup(V3, "_Confidentiality")
    assert [v for code, _, v in top.properties if code == "child"] == ["L", "M", "N", "R", "U", "V"]
    normal = conf.lookup(V3, "N", properties=frozenset({"parent"}))
    assert normal.properties == (("parent", "valueCode", "_Confidentiality"),)
    with pytest.raises(FhirError) as exc:
        conf.lookup(V3, "n")  # HL7 codes are case-sensitive
    assert exc.value.status == 404


@pytest.mark.parametrize("system, code, version", [
    (G15, "999", None), ("http://loinc.org", "11488-4", None), (G15, "10", "20000101000000"),
])
def test_lookup_of_what_is_not_shipped_is_404(conf, system, code, version):
    with pytest.raises(FhirError) as exc:
        conf.lookup(system, code, version)
    assert exc.value.status == 404 and exc.value.issues[0].code == "not-found"


# -- compose and $expand ---------------------------------------------------------------------------------------
def test_expand_jdv_j57_lists_its_classes_and_the_digital_signature(conf):
    expansion = expand(conf, conf.resolve("ValueSet", J57))["expansion"]
    assert expansion["total"] == 12 and expansion["offset"] == 0
    assert [c["code"] for c in expansion["contains"]] == [
        "10", "11", "31", "42", "43", "44", "45", "52", "60", "90", "95", "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"]
    assert expansion["contains"][0] == {"system": A03, "version": "20231215120000", "code": "10",
                                        "display": "Compte rendu"}
    assert {"name": "used-codesystem", "valueUri": f"{A03}|20231215120000"} in expansion["parameter"]


@pytest.mark.parametrize("text, expected", [
    ("rendu", ["10"]), ("SYNTHESE", ["11"]), ("de soins", ["44"]), ("4", ["42", "43", "44", "45"]),
    ("patient déposé", ["90"]), ("nothing like it", []),
])
def test_expand_with_a_text_filter(conf, text, expected):
    expansion = expand(conf, conf.resolve("ValueSet", J57), text=text)["expansion"]
    assert [c["code"] for c in expansion.get("contains", [])] == expected
    assert expansion["total"] == len(expected)
    assert {"name": "filter", "valueString": text} in expansion["parameter"]


def test_expand_pages_with_offset_and_count(conf):
    j57 = conf.resolve("ValueSet", J57)
    pages = [expand(conf, j57, offset=o, count=5)["expansion"] for o in (0, 5, 10, 15)]
    assert [p["total"] for p in pages] == [12] * 4 and [p["offset"] for p in pages] == [0, 5, 10, 15]
    seen = [c["code"] for p in pages for c in p.get("contains", [])]
    assert seen == [c["code"] for c in expand(conf, j57)["expansion"]["contains"]]
    assert "contains" not in pages[3] and "contains" not in expand(conf, j57, count=0)["expansion"]


def test_expand_jdv_j66_enumerates_its_loinc_codes_without_shipping_loinc(conf):
    expansion = expand(conf, conf.resolve("ValueSet", J66))["expansion"]
    assert expansion["total"] == 108
    loinc = {c["code"]: c for c in expansion["contains"] if c["system"] == "http://loinc.org"}
    assert len(loinc) == 76 and loinc["11488-4"]["display"] == "CR ou fiche de consultation ou de visite"
    assert "version" not in loinc["11488-4"]


def test_a_whole_system_filters_exclusions_and_included_value_sets(conf):
    assert len(codes(conf, vs({"system": A03}))) == 12
    assert codes(conf, vs({"system": V3, "filter": [{"property": "concept", "op": "is-a",
                                                       "value": "_Confidentiality"}]})) == [
        "_Confidentiality", "L", "M", "N", "R", "U", "V"]
    assert codes(conf, vs({"system": V3, "filter": [{"property": "concept", "op": "descendent-of",
                                                       "value": "_Confidentiality"}]},
                          exclude=({"system": V3, "concept": [{"code": "U"}]},))) == ["L", "M", "N", "R", "V"]
    deprecated = codes(conf, vs({"system": G15, "filter": [{"property": "status", "op": "=", "value": "deprecated"}]}))
    assert deprecated == ["35", "36", "37", "38", "39", "93"]
    both = vs({"system": A03, "valueSet": [J57]})  # A03 codes that J57 lists too: 99 (document technique) is not
    assert codes(conf, both) == ["10", "11", "31", "42", "43", "44", "45", "52", "60", "90", "95"]
    assert len(codes(conf, vs({"valueSet": [J57]}))) == 12


def test_expand_drops_inactive_and_abstract_codes_on_request(conf):
    g15 = vs({"system": G15})
    assert expand(conf, g15)["expansion"]["total"] == 30
    active = expand(conf, g15, active_only=True)["expansion"]
    assert active["total"] == 24 and not any(c.get("inactive") for c in active["contains"])
    v3 = vs({"system": V3})  # 20 codes: 3 retired, abstract groups (notSelectable) of 10 retired codes
    whole = expand(conf, v3)["expansion"]
    assert whole["total"] == 20
    assert [c["code"] for c in whole["contains"] if c.get("abstract")] == [
        "_ConfidentialityByAccessKind", "_ConfidentialityByInfoType", "_ConfidentialityModifiers"]
    assert expand(conf, v3, selectable_only=True)["expansion"]["total"] == 17
    assert [c["code"] for c in expand(conf, v3, active_only=True)["expansion"]["contains"]] == [
        "_Confidentiality", "L", "M", "N", "R", "U", "V"]


@pytest.mark.parametrize("part, says", [
    ({"system": "http://loinc.org"}, "does not ship"),
    ({"system": "http://loinc.org", "filter": [{"property": "CLASS", "op": "=", "value": "DOC"}]}, "does not ship"),
    ({"system": A03, "filter": [{"property": "concept", "op": "regex", "value": "1.*"}]}, "not supported"),
    ({"valueSet": ["http://example.org/unknown"]}, "does not ship"),
    ({}, "neither a system nor a valueSet"),
])
def test_what_cannot_be_expanded_is_said_not_faked(conf, part, says):
    with pytest.raises(FhirError) as exc:
        expand(conf, vs(part))
    assert exc.value.status == 400 and exc.value.issues[0].code == "not-supported"
    assert says in exc.value.issues[0].diagnostics


def test_a_code_systems_implicit_value_set_is_all_its_codes(conf):
    implicit = conf.resolve("ValueSet", f"{G15}?vs")
    assert implicit is not None and implicit["version"] == "20250328120000"
    assert len(codes(conf, implicit)) == 30
    v3 = conf.resolve("ValueSet", "http://terminology.hl7.org/ValueSet/v3-Confidentiality")  # CodeSystem.valueSet
    assert v3 is not None and len(codes(conf, v3)) == 20
    assert conf.resolve("ValueSet", "http://loinc.org?vs") is None


# -- $validate-code --------------------------------------------------------------------------------------------
def test_validate_code(conf):
    j57 = conf.resolve("ValueSet", J57)
    ok = validate_code(conf, j57, A03, "10", "compte  RENDU")
    assert ok.result and ok.message is None and ok.display == "Compte rendu"
    wrong_code = validate_code(conf, j57, A03, "99")
    assert not wrong_code.result and "not in the value set" in (wrong_code.message or "")
    unknown = validate_code(conf, j57, A03, "12345")
    assert not unknown.result and "Unknown code" in (unknown.message or "")
    wrong_display = validate_code(conf, j57, A03, "10", "Synthèse")
    assert not wrong_display.result and wrong_display.display == "Compte rendu"
    assert "should be 'Compte rendu'" in (wrong_display.message or "")
    assert not validate_code(conf, j57, "http://loinc.org", "10").result
    assert not validate_code(conf, j57, A03, "10", system_version="1").result


def test_validate_code_accepts_a_designation_as_display_and_flags_inactive_codes(conf):
    r38 = vs({"system": R38})
    assert validate_code(conf, r38, R38, "SM26", "Qualifié MG").result
    retired = next(c for c in codes_of(conf, r38) if c.inactive)
    check = validate_code(conf, r38, R38, retired.code)
    assert check.result and "inactive" in (check.message or "")


# -- loading ---------------------------------------------------------------------------------------------------
def _home(tmp_path: Path, *resources: dict | str) -> Path:
    (tmp_path / "terminologies").mkdir()
    shutil.copytree(HOME / "terminologies" / "fhir", tmp_path / "terminologies" / "fhir")
    (tmp_path / "profiles").mkdir()
    for i, resource in enumerate(resources):
        text = resource if isinstance(resource, str) else json.dumps(resource)
        (tmp_path / "profiles" / f"r{i}.json").write_text(text, encoding="utf-8")
    return tmp_path


def test_profiles_are_loaded_beside_the_terminologies(tmp_path):
    sd = {"resourceType": "StructureDefinition", "id": "p", "url": "http://example.org/StructureDefinition/p",
          "status": "draft", "kind": "resource", "type": "Patient", "derivation": "constraint"}
    ig = {"resourceType": "ImplementationGuide", "id": "ig", "url": "http://example.org/ig"}
    conf = load(_home(tmp_path, sd, ig))
    assert conf.read("StructureDefinition", "p") == sd
    assert conf.read("ImplementationGuide", "ig") is None and conf.all("ValueSet")


@pytest.mark.parametrize("bad, says", [
    ("{not json", "Malformed JSON"),
    ({"resourceType": "ValueSet", "url": "http://example.org/x"}, "no valid id"),
    ({"resourceType": "ValueSet", "id": "x"}, "has no url"),
    ({"resourceType": "ValueSet", "id": "JDV-J57-ClassCode-DMP", "url": "http://example.org/x"}, "is also in"),
    ({"resourceType": "ValueSet", "id": "other", "url": J57, "version": "20230922120000"}, "defined twice"),
    ({"resourceType": "CodeSystem", "id": "cs", "url": "http://example.org/cs",
      "concept": [{"code": "a"}, {"code": "a"}]}, "defined twice"),
])
def test_bad_files_stop_the_loading(tmp_path, bad, says):
    with pytest.raises(ValueError, match=says):
        load(_home(tmp_path, bad))
