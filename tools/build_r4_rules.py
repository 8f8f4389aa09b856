"""Regenerate the data of `fhir_dmp/validation/r4rules.py` from the official R4 core package:

- `r4-primitives.json`: each primitive type's value regex (the `regex` extension on `<type>.value`);
- `r4-extensions.json`: each core extension's contexts, the value types it allows (none: a complex one) and,
  for a complex one, the urls of its sub-extensions.

Run: python tools/build_r4_rules.py (paths are relative to this file, not the cwd).
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TGZ = ROOT.parent / "shared" / "reference" / "fhir-r4" / "hl7.fhir.r4.core-4.0.1.tgz"
DATA = ROOT / "fhir_dmp" / "data"
REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
SOURCE = "hl7.fhir.r4.core 4.0.1 (package/StructureDefinition-*.json)"
sys.path.insert(0, str(ROOT))
from fhir_dmp.validation.r4rules import extension_rule  # noqa: E402 - one reading of an extension, shared


def main() -> None:
    primitives: dict[str, str] = {}
    extensions: dict[str, dict] = {}
    with tarfile.open(TGZ) as tgz:
        for member in tgz.getmembers():
            name = member.name
            if not (name.startswith("package/StructureDefinition-") and name.endswith(".json")):
                continue
            sd = json.load(tgz.extractfile(member))  # type: ignore[arg-type]
            if sd.get("kind") == "primitive-type":
                for e in sd["snapshot"]["element"]:
                    if e["id"] == f"{sd['type']}.value":
                        regex = [x["valueString"] for t in e.get("type", []) for x in t.get("extension", [])
                                 if x.get("url") == REGEX]
                        if regex:
                            primitives[sd["type"]] = regex[0]
            elif sd.get("type") == "Extension" and sd.get("derivation") == "constraint":
                extensions[sd["url"]] = extension_rule(sd)
    (DATA / "r4-primitives.json").write_text(json.dumps({"source": SOURCE, "types": dict(sorted(
        primitives.items()))}, indent=1) + "\n", encoding="utf-8")
    (DATA / "r4-extensions.json").write_text(json.dumps({"source": SOURCE, "extensions": dict(sorted(
        extensions.items()))}, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(primitives)} primitive regexes, {len(extensions)} extensions")


if __name__ == "__main__":
    main()
