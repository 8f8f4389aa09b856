"""The habilitation matrix: the cells dmp-reference.md 6.5 fixes, most-specific-wins, deny by default, and a
loader that refuses every kind of bad row by line (so the server cannot start on a matrix that fails open)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.policy.habilitation import LOINC, TRE_A05, HabilitationMatrix, load_code_lists, load_matrix

TERMINOLOGIES = Path(__file__).resolve().parents[2] / "terminologies"
SHIPPED = TERMINOLOGIES / "habilitation-matrix.csv"
HEADER = "profession,specialty,class,type,type_system,access,source"
REF = "dmp-reference 6.5"

# Decided from the labels of dmp-document-types.csv (terminologies/README.md lists them too).
BIOLOGY_REPORTS = {"11502-2", "51969-4", "DOCPAT05"}
LAB_RELATED = {"11526-1", "60568-3", "96173-0", "PRESC-BIO"}  # pathology, rapid tests, biology prescription
HOSPITAL_REPORTS = {"34112-3", "11490-0", "67851-6", "15507-7", "34874-8", "34875-5", "77436-4", "34749-2",
                    "15508-5"}


@pytest.fixture(scope="module")
def matrix() -> HabilitationMatrix:
    return load_matrix(SHIPPED)


def codes_of(visible: frozenset[tuple[str, str]]) -> set[str]:
    return {code for _, code in visible}


def all_types(matrix: HabilitationMatrix) -> set[str]:
    return set(matrix.codes.types)


# -- the cells the reference fixes ---------------------------------------------------------------

def test_medecins_see_every_type_but_residence_certificates(matrix: HabilitationMatrix) -> None:
    expected = all_types(matrix) - {"ATTEST-RESID"}
    assert codes_of(matrix.visible_types("10", None)) == expected
    assert not matrix.allows("10", None, "95", "ATTEST-RESID")
    assert matrix.allows("10", None, "60", "REMB") and matrix.allows("10", "SM26", "11", "60591-5")
    for specialty, profession in matrix.codes.specialties.items():
        if profession == "10":
            assert codes_of(matrix.visible_types("10", specialty)) == expected, specialty


def test_dentists_see_the_bilan_medicamenteux_kines_do_not(matrix: HabilitationMatrix) -> None:
    assert matrix.allows("40", None, "11", "56445-0")
    assert all(matrix.allows("40", s, "11", "56445-0") for s in ("SCD01", "SCD02", "SCD03"))
    assert not matrix.allows("70", None, "11", "56445-0")
    assert ("http://loinc.org", "56445-0") in matrix.visible_types("40", None)
    assert "56445-0" not in codes_of(matrix.visible_types("70", None))


def test_orthophonistes_never_see_biology(matrix: HabilitationMatrix) -> None:
    visible = codes_of(matrix.visible_types("91", None))
    assert visible, "orthophonistes see their own field's documents"
    assert not visible & (BIOLOGY_REPORTS | LAB_RELATED)
    assert not any(matrix.allows("91", None, None, code) for code in BIOLOGY_REPORTS)


def test_podologues_never_see_hospital_reports(matrix: HabilitationMatrix) -> None:
    visible = codes_of(matrix.visible_types("80", None))
    assert visible, "pédicures-podologues see their own field's documents"
    assert not visible & HOSPITAL_REPORTS
    assert not matrix.allows("80", None, "10", "34112-3")


def test_fixed_cells_are_sourced_to_the_reference() -> None:
    with SHIPPED.open(encoding="utf-8", newline="") as f:
        sources = {(r["profession"], r["specialty"], r["class"], r["type"]): r["source"] for r in csv.DictReader(f)}
    fixed = {("10", "", "", ""), ("10", "", "95", "ATTEST-RESID"), ("40", "", "11", "56445-0"),
             ("70", "", "11", "56445-0")}
    fixed |= {("91", "", "10", code) for code in BIOLOGY_REPORTS}
    fixed |= {("80", "", "10", code) for code in HOSPITAL_REPORTS}
    assert {key: sources.get(key) for key in fixed} == dict.fromkeys(fixed, REF)
    assert all(sources.values()), "every cell says where it comes from"


# -- semantics -----------------------------------------------------------------------------------

def write(tmp_path: Path, *rows: str, name: str = "matrix.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join((HEADER, *rows)) + "\n", encoding="utf-8")
    return path


def test_most_specific_row_wins(tmp_path: Path) -> None:
    m = load_matrix(write(
        tmp_path,
        "60,,,,,allow,profession-any",
        "60,,10,,,deny,profession+class",
        f"60,,10,11502-2,{LOINC},allow,profession+type",
        f"60,,11,56445-0,{LOINC},allow,profession+type",
        "60,SI04,,,,deny,specialty-any",
        "60,SI04,10,,,allow,specialty+class",
        f"60,SI04,10,11502-2,{LOINC},deny,specialty+type",
    ))
    assert m.allows("60", None, "11", "60591-5")  # profession-any
    assert not m.allows("60", None, "10", "11488-4")  # profession+class > profession-any
    assert m.allows("60", None, "10", "11502-2")  # profession+type > profession+class
    assert not m.allows("60", "SI04", "11", "56445-0")  # specialty-any > profession+type
    assert m.allows("60", "SI04", "10", "11488-4")  # specialty+class > specialty-any
    assert not m.allows("60", "SI04", "10", "11502-2")  # specialty+type > specialty+class
    assert m.allows("60", "SI01", "10", "11502-2")  # a specialty without rows falls back on its profession's
    assert not m.allows("21", None, "10", "11502-2")  # no matching row: deny


def test_unknown_means_deny(matrix: HabilitationMatrix) -> None:
    assert matrix.visible_types("99", None) == frozenset()
    assert matrix.visible_types(None, None) == frozenset()
    assert matrix.visible_types("35", None) == frozenset()  # deprecated TRE_G15 code: no row
    assert not matrix.allows("99", None, "10", "11488-4")
    assert not matrix.allows("10", "SM999", "10", "11488-4")  # unknown specialty
    assert not matrix.allows("10", None, "10", "99999-9")  # unknown type
    assert not matrix.allows("10", None, None, None)
    assert not matrix.allows("10", None, "11", "11502-2")  # class contradicting the type (ASS_X16)
    assert matrix.allows("10", None, None, "11502-2")  # no class given: the type's own


def test_visible_types_agree_with_allows(matrix: HabilitationMatrix) -> None:
    for caller in (("21", None), ("60", None), ("60", "SI04"), ("69", None), ("50", None), ("98", None)):
        visible = matrix.visible_types(*caller)
        expected = {(t.system, t.code) for t in matrix.codes.types.values() if matrix.allows(*caller, None, t.code)}
        assert visible == expected and visible is matrix.visible_types(*caller)


# -- loader --------------------------------------------------------------------------------------

GOOD = f"10,,10,11488-4,{LOINC},allow,test"
BAD_ROWS = [
    ("99,,,,,allow,x", "unknown profession '99'"),
    ("10,SM999,,,,allow,x", "unknown specialty 'SM999'"),
    ("60,SM26,,,,allow,x", "specialty SM26 belongs to profession 10, not 60"),
    ("10,,77,,,allow,x", "unknown document class '77'"),
    (f"10,,10,99999-9,{LOINC},allow,x", "unknown document type '99999-9'"),
    (f"10,,11,11502-2,{LOINC},allow,x", "type 11502-2 belongs to class 10 (ASS_X16), not '11'"),
    (f"10,,,11502-2,{LOINC},allow,x", "type 11502-2 belongs to class 10 (ASS_X16), not ''"),
    (f"10,,95,ATTEST-RESID,{LOINC},deny,x", f"type ATTEST-RESID has system {TRE_A05}, not '{LOINC}'"),
    ("10,,95,ATTEST-RESID,,deny,x", "type ATTEST-RESID has system"),
    (f"10,,95,,{TRE_A05},deny,x", "type_system given without a type"),
    ("10,,,,,maybe,x", "access 'maybe' is neither allow nor deny"),
    ("10,,,,,allow,", "no source"),
    ("10,,,,allow,x", "6 columns, expected 7"),
    (GOOD, "the same profession, specialty, class and type as line 2"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS, ids=[m for _, m in BAD_ROWS])
def test_loader_rejects_bad_rows_naming_the_line(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path, GOOD, row)
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: {message}")):
        load_matrix(path)


def test_loader_rejects_a_bad_header_and_an_empty_matrix(tmp_path: Path) -> None:
    bad_header = tmp_path / "header.csv"
    bad_header.write_text("profession,class,access\n10,,allow\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{bad_header}:1: the header must be")):
        load_matrix(bad_header)
    with pytest.raises(ValueError, match="no rows; refusing to start"):
        load_matrix(write(tmp_path, name="empty.csv"))


def test_loader_accepts_a_small_valid_matrix_and_caches_it(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, "", f"10,,95,ATTEST-RESID,{TRE_A05},deny,test", "40,SCD01,,,,allow,test")
    m = load_matrix(path)
    assert load_matrix(path) is m
    assert codes_of(m.visible_types("10", None)) == {"11488-4"}
    assert codes_of(m.visible_types("40", "SCD01")) == all_types(m)


# -- shipped data --------------------------------------------------------------------------------

def test_shipped_matrix_covers_every_active_profession(matrix: HabilitationMatrix) -> None:
    with (TERMINOLOGIES / "professions.csv").open(encoding="utf-8", newline="") as f:
        active = {r["code"] for r in csv.DictReader(f) if r["status"] == "active"}
    assert {"10", "21", "40", "50", "60", "70", "80", "91"} <= active
    assert active == {profession for profession, *_ in matrix.cells}


def test_every_shipped_type_has_a_known_class() -> None:
    codes = load_code_lists(TERMINOLOGIES)
    assert len(codes.types) == 102
    assert {t.system for t in codes.types.values()} == {LOINC, TRE_A05}
    assert all(t.doc_class in codes.classes and t.display for t in codes.types.values())
    assert set(codes.types) >= BIOLOGY_REPORTS | LAB_RELATED | HOSPITAL_REPORTS
    assert {codes.types[c].doc_class for c in BIOLOGY_REPORTS | HOSPITAL_REPORTS} == {"10"}


def test_settings_name_the_matrix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shipped = Path("terminologies") / "habilitation-matrix.csv"
    assert Settings(home=tmp_path).habilitation_matrix == tmp_path / shipped
    monkeypatch.delenv("FHIR_DMP_HABILITATION_MATRIX", raising=False)
    assert Settings.from_env().habilitation_matrix == Settings().home / shipped
    assert Settings.from_env(home=tmp_path).habilitation_matrix == tmp_path / shipped
    monkeypatch.setenv("FHIR_DMP_HABILITATION_MATRIX", str(tmp_path / "annex.csv"))
    assert Settings.from_env().habilitation_matrix == tmp_path / "annex.csv"
