"""The ANS guides' own examples against the DMP profiles: the PDSm 3.1.1 package examples (`pdsm/examples/`) and
the PDSM4DMP ones (`pdsm4dmp/examples/`, `pdsm4dmp/built-*.json`), each DocumentReference against
dmp-documentreference, each Bundle against dmp-iti65-bundle, each List against dmp-submissionset, and the
DocumentReferences of the search-result Bundle one by one.

Each verdict says what the validator reports (the profile's errors, `(code, expression)`), what the DMP
document rules say (`validation/documents.py`: the type's class per ASS_X16, the attachment's size and SHA-1
against its bytes, resolved from a Binary of the same Bundle or a Binary example of the guide), and why. Both
empty: the example conforms. Warnings are left out (the guides label confidentiality with HL7
v3-Confidentiality, which the extensible JDV_J58 binding warns about and dmp-doc-1 accepts).

`identifier` is required by dmp-documentreference (1..*) but not by PDSm (0..*), and PDSM4DMP says the DMP assigns
it (XDS logicalId): no guide example has one. `custodian` is required by PDSm (1..1) as by the DMP profile.

Not checked: the PDSM4DMP ConceptMaps (`built-ConceptMap-*`, not resources of these profiles), and the other
resources of the PDSm package (Binary, Organization, Patient).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest

from fhir_dmp.errors import Issue
from fhir_dmp.services import validating
from fhir_dmp.validation.profile import validate_profile
from tests.validation.test_examples import CONF, ROOT, bundled_bytes, located, pairs, rule_errors, shown

IG = ROOT / "tests" / "data" / "reference" / "ig"  # in-repo copies (tests/data/reference/SOURCES.md)
BASE = "https://fhir-dmp.example.org/StructureDefinition/"
PROFILE_OF = {"DocumentReference": "dmp-documentreference", "Bundle": "dmp-iti65-bundle", "List": "dmp-submissionset"}


@dataclass(frozen=True)
class Verdict:
    errors: tuple[tuple[str, str], ...]  # the profile's errors
    rules: tuple[tuple[str, str], ...]  # the DMP document rules' errors
    reason: str


NOT_ITI65 = (("invariant", "Bundle"), ("required", "Bundle.entry"), ("required", "Bundle.entry"),
             ("value", "Bundle.type"))
NO_IDS = (("required", "DocumentReference.custodian"), ("required", "DocumentReference.identifier"))
CLASS = (("business-rule", "DocumentReference.category"),)
NO_IDS_WHY = "no identifier (the DMP profile's 1..*), no custodian (PDSm's 1..1 too)"
CONSULTATION_AS_11 = "a consultation report (11488-4, class 10 in ASS_X16) filed as class 11"

VERDICTS: dict[str, Verdict] = {
    # -- PDSm 3.1.1 ---------------------------------------------------------------------------------------------
    "pdsm/examples/Bundle-a9c10f8a-882d-4000-a280-7150e0aeb478.json": Verdict(
        NOT_ITI65, (),
        "an ITI-65 response (transaction-response), not a request: no SubmissionSet, no DocumentReference"),
    "pdsm/examples/DocumentReference-PDSmSimplifiedExample.json": Verdict(
        (("invariant", "DocumentReference"), ("required", "DocumentReference.context.period"),
         ("required", "DocumentReference.identifier"), ("required", "DocumentReference.securityLabel")),
        (("business-rule", "DocumentReference.content[0].attachment.hash"),
         ("business-rule", "DocumentReference.content[0].attachment.size")),
        "a generic ITI-105 example: no identifier, no confidentiality (securityLabel, dmp-doc-1), no period of the "
        "act; its size (250000) and hash (the SHA-1 of nothing) are not those of its 11 inline bytes"),
    "pdsm/examples/DocumentReference-exemple-pdsm-documentreference.json": Verdict(
        (("invariant", "DocumentReference"), ("required", "DocumentReference.identifier")),
        (("business-rule", "DocumentReference.category"),
         ("business-rule", "DocumentReference.content[0].attachment.hash"),
         ("business-rule", "DocumentReference.content[0].attachment.size")),
        "no identifier; its confidentiality N is coded in TRE_A07 (visibility, and misspelt 'StatusVisibilite...') "
        "instead of TRE_A08 (dmp-doc-1); type 34133-9 is class 11 in ASS_X16, not 10; its Binary/6789 ('Hello "
        "World', 11 bytes) has neither its size nor its hash"),
    "pdsm/examples/List-ExampleFolder.json": Verdict(
        (("required", "List.extension"), ("required", "List.extension"), ("required", "List.source"),
         ("value", "List.code")),
        (),
        "an MHD Folder, which the DMP does not use: code folder, no sourceId, no source"),
    "pdsm/examples/List-ExampleSubmissionSet.json": Verdict(
        (), (), "conforms"),
    # -- PDSM4DMP -----------------------------------------------------------------------------------------------
    "pdsm4dmp/built-DocumentReference-example-annexe-docref-cda.json": Verdict(
        NO_IDS, CLASS,
        f"{NO_IDS_WHY}; {CONSULTATION_AS_11}"),
    "pdsm4dmp/built-DocumentReference-example-annexe-docref-fhir.json": Verdict(
        NO_IDS, (), NO_IDS_WHY),
    "pdsm4dmp/built-DocumentReference-example-td3-1a-cr-consultation.json": Verdict(
        NO_IDS, CLASS,
        f"{NO_IDS_WHY}; {CONSULTATION_AS_11}"),
    "pdsm4dmp/built-DocumentReference-example-td3-1a-fhir-document.json": Verdict(
        NO_IDS, (), NO_IDS_WHY),
    "pdsm4dmp/built-DocumentReference-example-td3-1a-ordonnance.json": Verdict(
        (("code-invalid", "DocumentReference.category[0]"), *NO_IDS), CLASS,
        f"{NO_IDS_WHY}; class '03' is not a JDV_J57 class (a prescription, 57833-6, is class 42)"),
    "pdsm4dmp/examples/Bundle-example-annexe-fhir-document.json": Verdict(
        NOT_ITI65, (), "a FHIR document (the VSM of the annexe), not an ITI-65 transaction"),
    "pdsm4dmp/examples/Bundle-example-annexe-searchset-documentreferences.json": Verdict(
        (("invariant", "Bundle"), ("invariant", "Bundle"), ("required", "Bundle.entry"),
         ("required", "Bundle.entry[0].request"), ("required", "Bundle.entry[0].resource.custodian"),
         ("required", "Bundle.entry[0].resource.identifier"), ("required", "Bundle.entry[1].request"),
         ("required", "Bundle.entry[1].resource.custodian"), ("required", "Bundle.entry[1].resource.identifier"),
         ("value", "Bundle.type")),
        (("business-rule", "Bundle.entry[0].resource.category"),),
        "an ITI-67 search result (searchset), not an ITI-65: no SubmissionSet, no requests; its DocumentReferences "
        "as below"),
    "pdsm4dmp/examples/Bundle-example-annexe-searchset-documentreferences.json#entry[0]": Verdict(
        NO_IDS, CLASS,
        f"{NO_IDS_WHY}; {CONSULTATION_AS_11}"),
    "pdsm4dmp/examples/Bundle-example-annexe-searchset-documentreferences.json#entry[1]": Verdict(
        NO_IDS, (), NO_IDS_WHY),
    "pdsm4dmp/examples/Bundle-example-td2-1-remplacement.json": Verdict(
        (("required", "Bundle.entry[1].resource.custodian"), ("required", "Bundle.entry[1].resource.identifier")),
        (("business-rule", "Bundle.entry[1].resource.category"),),
        f"the replacement (TD2.1); its DocumentReference: {NO_IDS_WHY}; {CONSULTATION_AS_11}"),
    "pdsm4dmp/examples/Bundle-example-td2-iti65-lot-soumission.json": Verdict(
        (("required", "Bundle.entry[1].resource.custodian"), ("required", "Bundle.entry[1].resource.identifier")),
        (("business-rule", "Bundle.entry[1].resource.category"),),
        f"the DMP's ITI-65 (TD2); its DocumentReference: {NO_IDS_WHY}; {CONSULTATION_AS_11} (its Binary matches "
        "its size and hash)"),
    "pdsm4dmp/examples/DocumentReference-doc-x-id.json": Verdict(
        NO_IDS, CLASS,
        f"{NO_IDS_WHY}; {CONSULTATION_AS_11}"),
    "pdsm4dmp/examples/DocumentReference-example-td2-iti105-publication-simplifiee.json": Verdict(
        (("invariant", "DocumentReference"), ("required", "DocumentReference.category"),
         ("required", "DocumentReference.content[0].attachment.hash"),
         ("required", "DocumentReference.content[0].attachment.size"), ("required", "DocumentReference.context"),
         ("required", "DocumentReference.custodian"), ("required", "DocumentReference.identifier"),
         ("required", "DocumentReference.securityLabel")),
        (),
        "a minimal ITI-105 publication: no class, confidentiality, custodian, identifier, context, size or hash"),
}


def _guide_files() -> list[str]:
    """Every DocumentReference, Bundle and List example of the two guides, by path under `ig/`."""
    found = []
    for path in [*IG.glob("pdsm/examples/*.json"), *IG.glob("pdsm4dmp/examples/*.json"),
                 *IG.glob("pdsm4dmp/built-*.json")]:
        if json.loads(path.read_text(encoding="utf-8")).get("resourceType") in PROFILE_OF:
            found.append(str(path.relative_to(IG)))
    return sorted(found)


def _resource(case: str) -> dict:
    name, _, entry = case.partition("#entry[")
    resource = json.loads((IG / name).read_text(encoding="utf-8"))
    return resource["entry"][int(entry.rstrip("]"))]["resource"] if entry else resource


def _guide_binaries() -> dict[str, bytes]:
    """The guides' Binary examples, by the relative url their DocumentReferences use (`Binary/6789`)."""
    out = {}
    for path in IG.glob("*/examples/Binary-*.json"):
        binary = json.loads(path.read_text(encoding="utf-8"))
        out[f"Binary/{binary['id']}"] = base64.b64decode(binary.get("data", ""))
    return out


def test_every_guide_example_has_a_verdict():
    files = {case.partition("#")[0] for case in VERDICTS}
    assert files == set(_guide_files())
    searchset = "pdsm4dmp/examples/Bundle-example-annexe-searchset-documentreferences.json"
    entries = {case for case in VERDICTS if case.startswith(f"{searchset}#")}
    assert entries == {f"{searchset}#entry[{i}]" for i, _ in enumerate(_resource(searchset)["entry"])}


@pytest.mark.parametrize("case", sorted(VERDICTS), ids=lambda case: case.rsplit("/", 1)[-1])
def test_guide_example_verdict(case):
    resource = _resource(case)
    verdict = VERDICTS[case]
    sd = CONF.resolve("StructureDefinition", BASE + PROFILE_OF[resource["resourceType"]])
    report = validate_profile(CONF, sd, resource)
    errors = [i for i in report.issues if i.severity in ("error", "fatal")]
    assert pairs(errors) == sorted(verdict.errors), shown(errors)
    rules = _rules(resource)
    assert pairs(rules) == sorted(verdict.rules), shown(rules)
    assert (verdict.reason == "conforms") == (not verdict.errors and not verdict.rules)


def _rules(resource: dict) -> list[Issue]:
    """The document rules on the example's DocumentReferences: itself, or each one a Bundle holds, whatever the
    Bundle's type (attachments resolved from the Bundle's Binaries, else from the guides' Binary examples)."""
    known = _guide_binaries()
    if resource["resourceType"] == "DocumentReference":
        return rule_errors(resource, known)
    if resource["resourceType"] != "Bundle":
        return []
    bytes_of = bundled_bytes(resource, known)
    return [located(issue, i) for i, entry in enumerate(resource.get("entry") or ())
            if (entry.get("resource") or {}).get("resourceType") == "DocumentReference"
            for issue in validating.rule_issues(CONF, entry["resource"], bytes_of)]
