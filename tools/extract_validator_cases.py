"""Extract the HL7 validator's R4 test cases of the types this server stores into tests/data/validator-r4/.

Run by hand when refreshing the cases (it reads a clone of https://github.com/FHIR/fhir-test-cases):

    python tools/extract_validator_cases.py /path/to/fhir-test-cases

Selection (docs/conformance.md): `version` 4.0, a JSON or XML file, a resource of a type the server stores, a base
validation (no `packages`, `supporting`, `profiles`, `logical`, `ips`... to load first: the server validates
against R4 and its own profiles only), not the `matchetype` module (a validator mode, not R4), with an
expected outcome of the reference (Java) validator. Each case keeps its file and its expected errors (severity
error or fatal), with their expressions and messages, for the report.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

STORED = {"Patient", "DocumentReference", "Binary", "List", "Consent", "AuditEvent", "Composition", "Communication",
          "Practitioner", "PractitionerRole", "Organization", "Condition", "AllergyIntolerance",
          "MedicationStatement", "Procedure", "DeviceUseStatement", "Immunization", "Observation"}
NEEDS_MORE = {"packages", "supporting", "supporting5", "profiles", "package-map", "logical", "bundle-param", "ips"}
# the validator's modes a case may set (manifest.json "documentation"); the server runs in one mode of its own
MODES = {"examples", "security-checks", "noHtmlInMarkdown", "validateContains", "wrong-displays", "best-practice",
         "assumeValidRestReferences", "allowed-extension-domain", "for-publication", "no-tx", "explanation"}
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "validator-r4"


def _xml_type(raw: bytes) -> dict | None:
    """{"resourceType": root element} of a FHIR XML file (its type is all the selection needs)."""
    match = re.search(rb"<([A-Za-z]+)[\s>][^<]*?xmlns=\"http://hl7.org/fhir\"", raw)
    if match is None:
        raise ValueError("not FHIR XML")
    return {"resourceType": match.group(1).decode()}


def _show(repo: Path, path: str) -> bytes | None:
    done = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=False)
    return done.stdout if done.returncode == 0 else None


def _expected(repo: Path, java: object) -> list[dict] | None:
    if isinstance(java, dict) and "errorCount" in java:
        return [{"message": m} for m in java.get("output", [])][:java["errorCount"]] if java["errorCount"] else []
    if not isinstance(java, str):
        return None
    raw = _show(repo, f"validator/outcomes/{java}")
    outcome = json.loads(raw) if raw else None
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return None
    return [{"expression": (i.get("expression") or [""])[0], "code": i.get("code"),
             "message": (i.get("details") or {}).get("text", "")}
            for i in outcome.get("issue", []) if i.get("severity") in ("error", "fatal")]


def main(repo: Path) -> None:
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    manifest = json.loads(_show(repo, "validator/manifest.json") or b"{}")
    cases = []
    (OUT / "cases").mkdir(parents=True, exist_ok=True)
    for case in manifest["test-cases"]:
        name, file = case["name"], case["file"]
        if case.get("version") != "4.0" or case.get("use-test") is False or not file.endswith((".json", ".xml")):
            continue
        if set(case) & NEEDS_MORE or case.get("module") == "matchetype":
            continue
        raw = _show(repo, f"validator/{file}")
        try:
            resource = (json.loads(raw) if file.endswith(".json") else _xml_type(raw)) if raw else None
        except ValueError:
            continue
        if not isinstance(resource, dict) or resource.get("resourceType") not in STORED:
            continue
        errors = _expected(repo, case.get("java"))
        if errors is None:
            continue
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
        suffix = ".json" if file.endswith(".json") else ".xml"
        target = f"cases/{stem}{suffix}"
        while any(c["file"] == target for c in cases):
            target = target.replace(suffix, "-2" + suffix)
        (OUT / target).write_bytes(raw)  # type: ignore[arg-type]
        options = {k: v for k, v in case.items() if k in MODES}
        cases.append({"name": name, "file": target, "source": f"validator/{file}", "module": case.get("module"),
                      **({"description": case["description"]} if case.get("description") else {}),
                      **({"options": options} if options else {}),
                      "resourceType": resource["resourceType"], "valid": not errors, "errors": errors})
    (OUT / "cases.json").write_text(json.dumps({
        "source": "https://github.com/FHIR/fhir-test-cases", "commit": commit,
        "outcomes": "validator/outcomes/java (the HL7 Java validator's expected outcomes)",
        "cases": cases}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases ({sum(c['valid'] for c in cases)} valid) from {commit}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
