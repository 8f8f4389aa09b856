"""Regenerate the compact code lists of `terminologies/` that the habilitation matrix is checked against.

The server cannot read ../shared at run time, so it ships these derived copies (sources and versions in
terminologies/README.md):
- `dmp-document-types.csv`: every type code ASS_X16 maps to a DMP class (LOINC and TRE_A05), French label
  from `loinc-dmp-types.csv`;
- `document-classes.csv`: TRE_A03;
- `professions.csv`: TRE_G15 with each code's status;
- `specialties.csv`: TRE_R38, each with the TRE_G15 profession its prefix (SM, SCD, SI, SP) belongs to.

Run from the repository root: `python tools/build_dmp_code_lists.py [../shared/reference]`.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
# TRE_R38 code prefix -> TRE_G15 profession (the display of each code ends with the same tag: "(SM)", ...).
SPECIALTY_PROFESSION = {"SCD": "40", "SI": "60", "SM": "10", "SP": "21"}


def _concepts(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["concept"]


def _status(concept: dict) -> str:
    return next((p["valueCode"] for p in concept.get("property", []) if p["code"] == "status"), "active")


def _profession_of(code: str) -> str:
    prefix = code.rstrip("0123456789")
    if prefix not in SPECIALTY_PROFESSION:
        raise ValueError(f"TRE_R38 code {code}: unknown prefix {prefix!r}")
    return SPECIALTY_PROFESSION[prefix]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"{len(rows)} rows -> {path}")


def main(terminologies: Path, out: Path) -> None:
    labels = {row["code"]: row["display"] for row in csv.DictReader(
        (terminologies / "loinc-dmp-types.csv").open(encoding="utf-8"))}
    x16 = json.loads((terminologies / "ConceptMap-ASS-X16-CorrespondanceType-Classe-DMP.json").read_text("utf-8"))
    types = [[element["code"], group["source"], element["target"][0]["code"], labels[element["code"]]]
             for group in x16["group"] if group.get("target") == TRE_A03 for element in group["element"]]
    _write(out / "dmp-document-types.csv", ["code", "system", "class", "display"], types)
    _write(out / "document-classes.csv", ["code", "display"],
           [[c["code"], c["display"]] for c in _concepts(terminologies / "CodeSystem-TRE-A03-ClasseDocument.json")])
    _write(out / "professions.csv", ["code", "display", "status"],
           [[c["code"], c["display"], _status(c)]
            for c in _concepts(terminologies / "CodeSystem-TRE-G15-ProfessionSante.json")])
    _write(out / "specialties.csv", ["code", "display", "profession"],
           [[c["code"], c["display"], _profession_of(c["code"])]
            for c in _concepts(terminologies / "CodeSystem-TRE-R38-SpecialiteOrdinale.json")])


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    reference = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "reference"
    main(reference / "terminologies", root / "terminologies")
