"""Time of validating one DocumentReference as every write does (R4 structure, dmp-documentreference, the
document rules: class per ASS_X16, size and SHA-1 of its inline bytes), on the project's example; and of the
conformity check of a 10-document ITI-65 Bundle (each entry's `conformity_issues`, then the Bundle's
`bundle_issues`), built from examples/03. Each is timed twice in the same run: the profile invariants
interpreted by fhirpathpy (as before `fhirpath_compile.py`), then compiled, and the invariant count given."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

from fhir_dmp.services.validating import bundle_issues, conformity_issues
from fhir_dmp.terminology.store import load
from fhir_dmp.validation import invariants
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure

REPO = Path(__file__).resolve().parents[1]
ENGINES = {"fhirpathpy": invariants.interpreted, "compiled": invariants.holds}


def iti65(documents: int = 10) -> dict:
    """examples/03's ITI-65 with `documents` DocumentReferences (its three, copied round-robin) and their Binaries."""
    source = json.loads((REPO / "examples" / "03-iti65-sortie-cardiologie-paul-bernard.json").read_text("utf-8"))
    entries = source["entry"]
    listed = next(e for e in entries if e["resource"]["resourceType"] == "List")
    docs = [e for e in entries if e["resource"]["resourceType"] == "DocumentReference"]
    binaries = {e["fullUrl"]: e for e in entries if e["resource"]["resourceType"] == "Binary"}
    bundle = copy.deepcopy(source)
    bundle["entry"] = [copy.deepcopy(listed)]
    bundle["entry"][0]["resource"]["entry"] = []
    added = []
    for i in range(documents):
        doc = copy.deepcopy(docs[i % len(docs)])
        binary = copy.deepcopy(binaries[doc["resource"]["content"][0]["attachment"]["url"]])
        doc["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-{i:012d}"
        binary["fullUrl"] = f"urn:uuid:00000000-0000-4000-9000-{i:012d}"
        doc["resource"]["content"][0]["attachment"]["url"] = binary["fullUrl"]
        doc["resource"]["masterIdentifier"]["value"] += f".{i}"
        for ident in doc["resource"].get("identifier") or ():
            ident["value"] = f"urn:uuid:00000000-0000-4000-a000-{i:012d}"
        bundle["entry"][0]["resource"]["entry"].append({"item": {"reference": doc["fullUrl"]}})
        bundle["entry"].append(doc)
        added.append(binary)
    bundle["entry"] += added
    return bundle


def bundle_check(conf, bundle: dict) -> list:
    """What a transaction checks before writing: each entry's profiles and rules, then the Bundle's profile."""
    data = {e["fullUrl"]: base64.b64decode(e["resource"]["data"]) for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Binary"}
    issues = [i for e in bundle["entry"] for i in conformity_issues(conf, e["resource"], data.get)]
    return issues + bundle_issues(conf, bundle)


def timed(work: Callable[[], object], rounds: int) -> float:
    work()
    start = time.perf_counter()
    for _ in range(rounds):
        work()
    return (time.perf_counter() - start) / rounds * 1000


def main(rounds: int = 500) -> None:
    conf = load(REPO)
    sd = conf.resolve("StructureDefinition", "https://fhir-dmp.example.org/StructureDefinition/dmp-documentreference")
    bundle = json.loads((REPO / "examples" / "01-dmp-claire-martin.json").read_text(encoding="utf-8"))
    doc = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    ten = iti65(10)
    assert not validate_structure(doc) and not validate_profile(conf, sd, doc).issues

    def unknown(_url: str) -> bytes | None:
        return None
    assert not conformity_issues(conf, doc, unknown) and not bundle_check(conf, ten)
    counted = 0
    real = invariants.holds

    def counting(*args: object) -> bool:
        nonlocal counted
        counted += 1
        return real(*args)  # type: ignore[arg-type]
    invariants.holds = counting
    bundle_check(conf, ten)
    print(f"invariant evaluations: {counted} per 10-document ITI-65 Bundle", end="")
    counted = 0
    validate_profile(conf, sd, doc)
    print(f", {counted} per DocumentReference")
    for engine, holds in ENGINES.items():
        invariants.holds = holds
        for name, work, n in (("profile", lambda: validate_profile(conf, sd, doc), rounds),
                              ("write (structure + profile + document rules)",
                               lambda: (validate_structure(doc), conformity_issues(conf, doc, unknown)), rounds),
                              ("10-document ITI-65 Bundle conformity (entries + bundle_issues)",
                               lambda: bundle_check(conf, ten), max(rounds // 20, 5))):
            print(f"[{engine}] {name}: {timed(work, n):.3f} ms")
    invariants.holds = real


if __name__ == "__main__":
    main()
