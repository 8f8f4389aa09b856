"""Regenerate `terminologies/fhir/`: the CodeSystems, ValueSets and ConceptMap the server serves read-only
(read, search, CodeSystem/$lookup, ValueSet/$expand and $validate-code; `fhir_dmp/terminology`).

Why a generator: the server never reads ../shared at run time, so it ships copies, and copies made by hand
drift. Each output is the official resource as published (same id, url, version, concepts, compose, groups)
with `meta.source` added, naming where it was taken from; the generated `text` narrative of the HL7 one is
dropped, as the ANS transcriptions in ../shared already omit theirs. The one project resource, the ValueSet
of the DMP document types, is built from `terminologies/dmp-document-types.csv` and checked against ASS_X16.

Run: `python tools/build_terminologies.py [../shared/reference]` (paths relative to this file).
"""

from __future__ import annotations

import csv
import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "terminologies" / "fhir"
EXTRA = Path(__file__).with_name("sources")  # inputs ../shared does not hold (see its README.md)
ANS = "https://github.com/ansforge/ig-terminlogie-de-sante/blob/{commit}/ig/main/{file}"
# (file, commit of ansforge/ig-terminlogie-de-sante it was transcribed from: ../shared/reference/README.md)
ANS_FILES = (
    ("CodeSystem-TRE-G15-ProfessionSante.json", "1fec2ce5c6797e4ef2d570f2afde66b079d88bf4"),
    ("CodeSystem-TRE-R38-SpecialiteOrdinale.json", "4d3cff01dd6ae74d523d3bef83c49db762b89e71"),
    ("CodeSystem-TRE-A03-ClasseDocument.json", "02954c31f0e5ad097a7a2b74fa8300f09a566e43"),
    ("CodeSystem-TRE-A05-TypeDocComplementaire.json", "4d3cff01dd6ae74d523d3bef83c49db762b89e71"),
    ("CodeSystem-TRE-A07-StatutVisibiliteDocument.json", "02954c31f0e5ad097a7a2b74fa8300f09a566e43"),
    ("CodeSystem-TRE-A08-HL7Confidentiality.json", "4d3cff01dd6ae74d523d3bef83c49db762b89e71"),
    ("ValueSet-JDV-J57-ClassCode-DMP.json", "0c26cfe5528d4530cb901ddedd0650a8e5001eed"),
    ("ValueSet-JDV-J58-ConfidentialityCode-DMP.json", "02954c31f0e5ad097a7a2b74fa8300f09a566e43"),
    ("ValueSet-JDV-J66-TypeCode-DMP.json", "45486487e0f5ad1716613a0fe579f6765c0ff0fe"),
    ("ConceptMap-ASS-X16-CorrespondanceType-Classe-DMP.json", "02954c31f0e5ad097a7a2b74fa8300f09a566e43"),
)
R4_CORE = "https://packages.fhir.org/hl7.fhir.r4.core/4.0.1#package/{file}"
R4_FILES = ("CodeSystem-v3-Confidentiality.json",)  # the HL7 codes N/R/V the server also accepts
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
X16 = "ConceptMap-ASS-X16-CorrespondanceType-Classe-DMP.json"
TYPES_URL = "https://fhir-dmp.example.org/ValueSet/dmp-document-types"


def with_source(resource: dict, source: str) -> dict:
    """The resource as published, `meta.source` set and the generated narrative left out; key order kept."""
    out: dict = {"resourceType": resource["resourceType"], "id": resource["id"],
                 "meta": {**resource.get("meta", {}), "source": source}}
    out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta", "text"))
    return out


def ans_resources(terminologies: Path) -> list[dict]:
    out = []
    for name, commit in ANS_FILES:
        path = terminologies / name if (terminologies / name).exists() else EXTRA / name
        out.append(with_source(json.loads(path.read_text(encoding="utf-8")), ANS.format(commit=commit, file=name)))
    return out


def r4_resources(reference: Path) -> list[dict]:
    with tarfile.open(reference / "fhir-r4" / "hl7.fhir.r4.core-4.0.1.tgz") as tgz:
        return [with_source(json.load(tgz.extractfile(f"package/{name}")), R4_CORE.format(file=name))  # type: ignore[arg-type]
                for name in R4_FILES]


def document_types(x16: dict) -> dict:
    """The project ValueSet of the DMP document types: the rows of dmp-document-types.csv, which must be
    exactly the LOINC and TRE_A05 types ASS_X16 gives a DMP class (TRE_A03)."""
    rows = list(csv.DictReader((ROOT / "terminologies" / "dmp-document-types.csv").open(encoding="utf-8")))
    mapped = {(g["source"], e["code"], e["target"][0]["code"]) for g in x16["group"] if g.get("target") == TRE_A03
              for e in g["element"]}
    listed = {(r["system"], r["code"], r["class"]) for r in rows}
    if listed != mapped:
        raise SystemExit(f"dmp-document-types.csv and ASS_X16 differ: {sorted(listed ^ mapped)}")
    systems = list(dict.fromkeys(r["system"] for r in rows))
    return {
        "resourceType": "ValueSet",
        "id": "dmp-document-types",
        "meta": {"source": "https://fhir-dmp.example.org/terminologies/dmp-document-types.csv"},
        "url": TYPES_URL,
        "version": x16["version"],
        "name": "DmpDocumentTypes",
        "title": "Types de documents du DMP (avec leur classe ASS_X16)",
        "status": "active",
        "experimental": False,
        "date": x16["date"],
        "publisher": "fhir-dmp contributors",
        "description": (
            "The document types a DMP stores: every LOINC and TRE_A05 type code that the ConceptMap ASS_X16 "
            f"v{x16['version']} maps to a DMP class (TRE_A03), {len(rows)} codes; French labels from JDV_J66. "
            "Built by tools/build_terminologies.py from terminologies/dmp-document-types.csv; its version "
            "is the ASS_X16 version it derives from. JDV_J66 codes that ASS_X16 gives no class are not in it."),
        "jurisdiction": [{"coding": [{"system": "urn:iso:std:iso:3166", "code": "FR"}]}],
        "compose": {"include": [
            {"system": system, "concept": [{"code": r["code"], "display": r["display"]}
                                           for r in rows if r["system"] == system]}
            for system in systems]},
    }


def main(reference: Path, out: Path = OUT) -> None:
    terminologies = reference / "terminologies"
    resources = ans_resources(terminologies) + r4_resources(reference)
    x16 = next(r for r in resources if r["resourceType"] == "ConceptMap")
    resources.append(document_types(x16))
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    for resource in resources:
        for key in ("id", "url", "version", "status"):
            if not resource.get(key):
                raise SystemExit(f"{resource['resourceType']}/{resource.get('id')} has no {key}")
        path = out / f"{resource['resourceType']}-{resource['id']}.json"
        path.write_text(json.dumps(resource, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.add(path.name)
        print(f"{resource['resourceType']} {resource['url']}|{resource['version']} -> {path}")
    for stale in out.glob("*.json"):
        if stale.name not in written:
            stale.unlink()
            print(f"removed {stale}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "reference")
