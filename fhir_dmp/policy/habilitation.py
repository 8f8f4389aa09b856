"""The habilitation matrix (dmp-reference.md 6.5): which DMP document types a profession, or a specialty, may see.

The matrix is data (terminologies/habilitation-matrix.csv, or the file FHIR_DMP_HABILITATION_MATRIX names), checked
row by row at load against the code lists shipped in terminologies/: a bad cell must stop the server, never let
documents through. For a caller and a document the most specific matching row wins; no row, an unknown code or a
class that contradicts the type all mean deny.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from fhir_dmp.config import project_dir

LOINC = "http://loinc.org"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
COLUMNS = ("profession", "specialty", "class", "type", "type_system", "access", "source")
ACCESS = {"allow": True, "deny": False}

# (profession, specialty, class, type); "" stands for "any".
Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class DocumentType:
    system: str
    code: str
    doc_class: str
    display: str


@dataclass(frozen=True)
class CodeLists:
    """The codes a matrix row may name: TRE_G15, TRE_R38 (with its profession), TRE_A03, the DMP types (ASS_X16)."""

    professions: frozenset[str]
    specialties: Mapping[str, str]
    classes: frozenset[str]
    types: Mapping[str, DocumentType]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@cache
def load_code_lists(directory: Path) -> CodeLists:
    """The compact code lists of terminologies/ (built by tools/build_dmp_code_lists.py)."""
    types: dict[str, DocumentType] = {}
    for row in _rows(directory / "dmp-document-types.csv"):
        if row["code"] in types:  # `allows` names a type by code alone, so codes must not repeat across systems
            raise ValueError(f"{directory}/dmp-document-types.csv: type {row['code']} listed twice")
        types[row["code"]] = DocumentType(row["system"], row["code"], row["class"], row["display"])
    codes = CodeLists(
        professions=frozenset(row["code"] for row in _rows(directory / "professions.csv")),
        specialties={row["code"]: row["profession"] for row in _rows(directory / "specialties.csv")},
        classes=frozenset(row["code"] for row in _rows(directory / "document-classes.csv")),
        types=types,
    )
    if not (codes.professions and codes.specialties and codes.classes and codes.types):
        raise ValueError(f"{directory}: a code list of the habilitation matrix is empty; refusing to start")
    for t in types.values():
        if t.doc_class not in codes.classes or t.system not in (LOINC, TRE_A05):
            raise ValueError(f"{directory}/dmp-document-types.csv: type {t.code} has class {t.doc_class!r} "
                             f"and system {t.system!r}")
    return codes


@dataclass(frozen=True)
class HabilitationMatrix:
    cells: Mapping[Key, bool]
    codes: CodeLists
    _visible: dict[tuple[str, str], frozenset[tuple[str, str]]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def allows(self, profession: str | None, specialty: str | None, doc_class: str | None,
               doc_type: str | None) -> bool:
        """May this caller see a document of this class and type? Unknown codes and a class that is not the
        type's own (ASS_X16) answer False; `doc_class` may be omitted, the type's class is then used."""
        doc = self.codes.types.get(doc_type or "")
        if not profession or doc is None or (doc_class and doc_class != doc.doc_class):
            return False
        if specialty and specialty not in self.codes.specialties:
            return False
        return self._decide(profession, specialty or "", doc)

    def _decide(self, profession: str, specialty: str, doc: DocumentType) -> bool:
        keys = [(profession, specialty, doc.doc_class, doc.code), (profession, specialty, doc.doc_class, ""),
                (profession, specialty, "", "")] if specialty else []
        keys += [(profession, "", doc.doc_class, doc.code), (profession, "", doc.doc_class, ""),
                 (profession, "", "", "")]
        for key in keys:
            access = self.cells.get(key)
            if access is not None:
                return access
        return False

    def visible_types(self, profession: str | None, specialty: str | None) -> frozenset[tuple[str, str]]:
        """(system, code) of every DMP type the caller may see: the future search scope's one IN predicate."""
        key = (profession or "", specialty or "")
        visible = self._visible.get(key)
        if visible is None:
            visible = frozenset((t.system, t.code) for t in self.codes.types.values()
                                if self.allows(profession, specialty, t.doc_class, t.code))
            if profession in self.codes.professions and (not specialty or specialty in self.codes.specialties):
                self._visible[key] = visible  # known codes only: token claims cannot grow the cache
        return visible


@cache
def load_matrix(path: Path, codes_dir: Path | None = None) -> HabilitationMatrix:
    """Read and check the matrix once per path; any bad row is a ValueError naming its line (no start)."""
    codes = load_code_lists(codes_dir or project_dir() / "terminologies")
    cells: dict[Key, bool] = {}
    lines: dict[Key, int] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise ValueError(f"{path}:1: the header must be {','.join(COLUMNS)}")
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            try:
                key, access = _check_row(row, codes)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
            if key in cells:
                raise ValueError(f"{path}:{line}: the same profession, specialty, class and type as line {lines[key]}")
            cells[key], lines[key] = access, line
    if not cells:
        raise ValueError(f"{path}: the habilitation matrix has no rows; refusing to start")
    return HabilitationMatrix(cells, codes)


def _check_row(row: list[str], codes: CodeLists) -> tuple[Key, bool]:
    if len(row) != len(COLUMNS):
        raise ValueError(f"{len(row)} columns, expected {len(COLUMNS)}")
    profession, specialty, doc_class, doc_type, type_system, access, source = (cell.strip() for cell in row)
    if profession not in codes.professions:
        raise ValueError(f"unknown profession {profession!r} (TRE_G15)")
    if specialty and specialty not in codes.specialties:
        raise ValueError(f"unknown specialty {specialty!r} (TRE_R38)")
    if specialty and codes.specialties[specialty] != profession:
        raise ValueError(f"specialty {specialty} belongs to profession {codes.specialties[specialty]}, "
                         f"not {profession}")
    if doc_class and doc_class not in codes.classes:
        raise ValueError(f"unknown document class {doc_class!r} (TRE_A03)")
    if doc_type:
        doc = codes.types.get(doc_type)
        if doc is None:
            raise ValueError(f"unknown document type {doc_type!r} (ASS_X16)")
        if doc_class != doc.doc_class:
            raise ValueError(f"type {doc_type} belongs to class {doc.doc_class} (ASS_X16), not {doc_class!r}")
        if type_system != doc.system:
            raise ValueError(f"type {doc_type} has system {doc.system}, not {type_system!r}")
    elif type_system:
        raise ValueError("type_system given without a type")
    if access not in ACCESS:
        raise ValueError(f"access {access!r} is neither allow nor deny")
    if not source:
        raise ValueError("no source: say where the cell comes from")
    return (profession, specialty, doc_class, doc_type), ACCESS[access]
