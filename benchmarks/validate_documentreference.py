"""Time of validating one DocumentReference as every write does (R4 structure, dmp-documentreference, the
document rules: class per ASS_X16, size and SHA-1 of its inline bytes), on the project's example."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fhir_dmp.services.validating import conformity_issues
from fhir_dmp.terminology.store import load
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure

REPO = Path(__file__).resolve().parents[1]


def main(rounds: int = 2000) -> None:
    conf = load(REPO)
    sd = conf.resolve("StructureDefinition", "https://fhir-dmp.example.org/StructureDefinition/dmp-documentreference")
    bundle = json.loads((REPO / "examples" / "01-dmp-claire-martin.json").read_text(encoding="utf-8"))
    doc = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference")
    assert not validate_structure(doc) and not validate_profile(conf, sd, doc).issues

    def unknown(_url: str) -> bytes | None:
        return None
    assert not conformity_issues(conf, doc, unknown)
    for name, work in (("profile", lambda: validate_profile(conf, sd, doc)),
                       ("structure", lambda: validate_structure(doc)),
                       ("write (structure + profile + document rules)",
                        lambda: (validate_structure(doc), conformity_issues(conf, doc, unknown)))):
        work()
        start = time.perf_counter()
        for _ in range(rounds):
            work()
        print(f"{name}: {(time.perf_counter() - start) / rounds * 1000:.3f} ms per DocumentReference")


if __name__ == "__main__":
    main()
