"""Regenerate r4-summary.json: what `_summary` and `_elements` keep of each served resource type.

The StructureDefinitions of the official package are the authority (`isSummary`, `min`); only top-level
elements are listed, since the server subsets at the top level. Choice elements are written under their
JSON names (`deceased[x]` -> deceasedBoolean, deceasedDateTime) and also listed under `choices`, so that
`_elements=deceased` can name them all.

Output: {"source", "types": {T: {"summary": [...], "mandatory": [...], "choices": {base: [json names]}}}}.
Run: python tools/build_r4_summary.py (paths are relative to this file, not the cwd).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TGZ = ROOT.parent / "shared" / "reference" / "fhir-r4" / "hl7.fhir.r4.core-4.0.1.tgz"
OUT = ROOT / "fhir_dmp" / "data" / "r4-summary.json"
SERVED = ("Patient", "DocumentReference", "Binary", "List", "Consent", "AuditEvent", "Composition",
          "Communication", "Practitioner", "PractitionerRole", "Organization",
          "Condition", "AllergyIntolerance", "MedicationStatement", "Procedure", "DeviceUseStatement",
          "Immunization", "Observation",  # VSM section entries (dmp-reference.md 8)
          "CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition")  # the last four: shipped, read-only


def load(types: tuple[str, ...]) -> dict[str, dict]:
    wanted = {f"package/StructureDefinition-{t}.json": t for t in types}
    out = {}
    with tarfile.open(TGZ) as tgz:
        for member in tgz.getmembers():
            if member.name in wanted:
                out[wanted[member.name]] = json.load(tgz.extractfile(member))  # type: ignore[arg-type]
    missing = set(types) - set(out)
    if missing:
        raise SystemExit(f"no StructureDefinition for {sorted(missing)} in {TGZ}")
    return out


def table(sd: dict) -> dict:
    summary: list[str] = []
    mandatory: list[str] = []
    choices: dict[str, list[str]] = {}
    for element in sd["snapshot"]["element"][1:]:
        path = element["path"]
        if path.count(".") != 1:
            continue
        name = path.split(".", 1)[1]
        if name.endswith("[x]"):
            base = name[:-3]
            names = [base + t["code"][0].upper() + t["code"][1:] for t in element["type"]]
            choices[base] = names
        else:
            names = [name]
        if element.get("isSummary"):
            summary += names
        if element.get("min", 0) >= 1:
            mandatory += names
    return {"summary": summary, "mandatory": mandatory, "choices": choices}


def main() -> None:
    sds = load(SERVED)
    doc = {"source": "hl7.fhir.r4.core 4.0.1 StructureDefinitions (snapshot: isSummary, min)",
           "types": {t: table(sds[t]) for t in SERVED}}
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(doc['types'])} types)")


if __name__ == "__main__":
    main()
