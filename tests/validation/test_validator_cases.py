"""The conformance runner: the HL7 validator's own R4 test cases of the types this server stores
(tests/data/validator-r4/, from FHIR/fhir-test-cases at the commit cases.json names; docs/conformance.md), each
posted to `$validate` against R4 alone (`profile=http://hl7.org/fhir/StructureDefinition/<type>`) and to create
on a server whose DMP profiles are off (FHIR_DMP_ENFORCE_PROFILES=false: R4's rules only). Both verdicts must be
the reference validator's (valid: no error; invalid: at least one), except for the deliberate differences
below, each with its reason: the test fails on any other disagreement, and on a listed one that no longer
disagrees (the list stays exact).

    python -m pytest tests/validation/test_validator_cases.py -k report -s    # prints the table
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from tests.conftest import SECRET
from tests.fhirclient import FhirTestClient, json_of

CASES = Path(__file__).resolve().parent.parent / "data" / "validator-r4"
CORE = "http://hl7.org/fhir/StructureDefinition/"
XML = "application/fhir+xml"
# what refuses a create for its content (writes.parsed: R4's structure and rules); a dangling reference to a
# DMP (`processing`) or a conflict is a refusal of another kind, of a resource the validator may find valid
CONTENT_CODES = frozenset({"structure", "required", "value", "invariant", "code-invalid", "invalid"})
# validator mode -> reason, and case -> reason: where the server differs from the validator on purpose
NOT_SHIPPED = ("a display of a code system the server does not ship (LOINC, CVX, HL7 v2): the server checks the "
               "displays of the code systems it ships only (and the syntax of SNOMED CT and LOINC codes); the "
               "validator asks a terminology server")
XVER = ("a cross-version extension (http://hl7.org/fhir/1.0/StructureDefinition/extension-...) is accepted unseen: "
        "the server has no definitions of the earlier versions, so cannot tell that DSTU2's Patient.animal was a "
        "modifier")
DELIBERATE = {
    "dr-example-org-2": "the validator in `examples` mode accepts example.org urls; the server never runs in it",
    "pat-security-good2": "the validator without `security-checks` accepts HTML tags in strings; the server "
                          "always refuses them",
    "bad-markdown": "the validator without `noHtmlInMarkdown` accepts HTML in markdown; the server refuses it",
    "contained-resource-bad-id-ignore": "the validator with `validateContains: IGNORE` skips contained "
                                        "resources; the server checks them as any other",
    "sdoh-type-slice": NOT_SHIPPED,
    "cvx": NOT_SHIPPED,
    "patient-translated-codes": NOT_SHIPPED,
    "patient-xver": XVER,
    "patient-xver-bad": XVER,
}


def _cases() -> list[dict]:
    return json.loads((CASES / "cases.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture
def r4_client(database) -> FhirTestClient:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database.url, jwt_secret=SECRET, enforce_profiles=False)
    return FhirTestClient(create_app(settings, database=database).test_client(), SECRET)


def _verdicts(client: FhirTestClient, case: dict) -> tuple[bool, bool, list[str]]:
    """(valid by $validate, valid by create, the errors $validate gives)."""
    raw = (CASES / case["file"]).read_bytes()
    kind = {"content_type": XML} if case["file"].endswith(".xml") else {}
    rtype = case["resourceType"]
    response = client.post(f"{rtype}/$validate?profile={quote(CORE + rtype)}", raw=raw, **kind)
    # 400: a body that cannot be read as a resource at all (an XML value attribute left empty...): invalid
    assert response.status_code in (200, 400), (case["name"], response.data)
    errors = [f"{(i.get('expression') or [''])[0]}: {i['diagnostics']}" for i in json_of(response)["issue"]
              if i["severity"] in ("error", "fatal")]
    created = client.post(rtype, raw=raw, **kind)
    assert created.status_code < 500, (case["name"], created.data)
    refused = created.status_code == 400 or (created.status_code == 422 and any(
        i["code"] in CONTENT_CODES for i in json_of(created)["issue"]))
    return not errors, not refused, errors


def _run(client: FhirTestClient) -> list[tuple[dict, bool, bool, list[str]]]:
    return [(case, *_verdicts(client, case)) for case in _cases()]


def test_the_server_agrees_with_the_hl7_validator(r4_client):
    disagreements = {}
    for case, by_validate, by_create, errors in _run(r4_client):
        assert by_validate == by_create, (case["name"], "$validate and create disagree", errors)
        if by_validate != case["valid"]:
            kind = "accepted what the validator refuses" if by_validate else "refused what the validator accepts"
            disagreements[case["name"]] = (kind, case["errors"][:2] if by_validate else errors[:2])
    unexpected = {n: d for n, d in disagreements.items() if n not in DELIBERATE}
    assert not unexpected, json.dumps(unexpected, indent=1, ensure_ascii=False)
    resolved = set(DELIBERATE) - set(disagreements)
    assert not resolved, f"no longer different, take them off DELIBERATE: {sorted(resolved)}"


def test_report(r4_client):
    """The agreement figure of docs/conformance.md (prints it with -s)."""
    rows = _run(r4_client)
    agreed = sum(by_validate == case["valid"] for case, by_validate, _, _ in rows)
    print(f"\n{len(rows)} cases, {sum(c['valid'] for c, *_ in rows)} valid by the validator; "
          f"agreement {agreed}/{len(rows)} = {agreed / len(rows):.3f}; deliberate differences {len(DELIBERATE)}; "
          f"agreement outside them {agreed}/{len(rows) - len(DELIBERATE)}")
    for case, by_validate, _, errors in rows:
        mark = "ok " if by_validate == case["valid"] else "DIFF"
        print(f"{mark} {case['name']:45} validator: {'valid' if case['valid'] else 'invalid':8} "
              f"server: {'valid' if by_validate else 'invalid':8} {(errors or [''])[0][:90]}")
    assert agreed == len(rows) - len(DELIBERATE)
