"""The examples of `examples/` (see examples/README.md).

- Every valid example (top-level, loaded by `fhir-dmp load-examples`, and `conformance/`) passes what a write
  goes through: R4 structure, then its profiles and the DMP document rules (`services/validating.py`), a Bundle
  entry by entry (an attachment naming a Binary of the Bundle checked against its bytes) and, for an ITI-65,
  against dmp-iti65-bundle. Together they instantiate every shipped profile and every Consent shape.
- Every invalid example fails with exactly the errors it lists, from the profile it names (or from the
  document rules when it names none), and together they cover every kind of rule and every invariant.
- `load-examples` into a fresh database loads every top-level example, and again without adding anything; each
  loaded resource is then served by the API as written, and passes `$validate` over HTTP.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_dmp.errors import Issue
from fhir_dmp.policy.consents import EMERGENCY, Dmp, terms_of
from fhir_dmp.services import validating
from fhir_dmp.services.loading import load_directory
from fhir_dmp.terminology.store import load
from fhir_dmp.validation import documents
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure
from tests.fhirclient import json_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CONF = load(ROOT)
LOADED = sorted(EXAMPLES.glob("*.json"))
CONFORMANCE = sorted((EXAMPLES / "conformance").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))
PROFILED = ("Patient", "DocumentReference", "List", "Consent", "Composition")
KINDS = {"cardinality", "fixed", "pattern", "slicing", "binding", "invariant", "document-rule"}

BytesOf = Callable[[str], "bytes | None"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _name(path: Path) -> str:
    return str(path.relative_to(EXAMPLES))


# -- the checks of a write, as pure functions ------------------------------------------------------------------
def bundled_bytes(bundle: dict, known: dict[str, bytes] | None = None) -> BytesOf:
    """An attachment url -> the document's bytes: a Binary of the Bundle by its fullUrl (as the server resolves
    it in a transaction), else one of `known`; None when the bytes are not at hand."""
    binaries = {e["fullUrl"]: e["resource"].get("data") for e in bundle.get("entry") or ()
                if isinstance(e.get("fullUrl"), str) and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "Binary"}

    def bytes_of(url: str) -> bytes | None:
        if url in binaries:
            data = binaries[url]
            return documents.decoded(data) if isinstance(data, str) else b""
        return (known or {}).get(url)
    return bytes_of


def located(issue: Issue, index: int) -> Issue:
    """An entry's issue named from the Bundle (`DocumentReference.category` -> `Bundle.entry[1].resource.category`),
    as the server's transaction does."""
    prefix = f"Bundle.entry[{index}].resource"
    where = tuple(f"{prefix}.{e.split('.', 1)[1]}" if "." in e else prefix for e in issue.expression)
    return Issue(issue.code, issue.diagnostics, where or (prefix,), issue.severity)


def _written(resource: dict) -> list[tuple[int | None, dict]]:
    """The resources a write checks: the resource itself, or each POST/PUT entry of a Bundle."""
    if resource.get("resourceType") != "Bundle":
        return [(None, resource)]
    return [(i, e["resource"]) for i, e in enumerate(resource.get("entry") or ())
            if isinstance(e.get("resource"), dict) and (e.get("request") or {}).get("method") in ("POST", "PUT")]


def profile_errors(resource: dict) -> list[Issue]:
    """The errors of the profiles a write of `resource` is checked against (the document rules aside)."""
    issues = []
    for index, item in _written(resource):
        found = [i for sd in validating.write_profiles(CONF, item) for i in validate_profile(CONF, sd, item).issues
                 if i.severity in ("error", "fatal")]
        issues += found if index is None else [located(i, index) for i in found]
    if resource.get("resourceType") == "Bundle":
        issues += validating.bundle_issues(CONF, resource)
    return _distinct(issues)


def rule_errors(resource: dict, known: dict[str, bytes] | None = None) -> list[Issue]:
    """The errors of the DMP document rules (type/class, attachment size and hash: `validation/documents.py`)."""
    bytes_of = bundled_bytes(resource, known)
    issues = []
    for index, item in _written(resource):
        found = validating.rule_issues(CONF, item, bytes_of)
        issues += found if index is None else [located(i, index) for i in found]
    return issues


def write_errors(resource: dict) -> list[Issue]:
    """Every error a write of `resource` is refused for (422), once its structure is valid: the same issues as
    `validating.conformity_issues` per resource and `validating.bundle_issues` for the Bundle."""
    return _distinct(profile_errors(resource) + rule_errors(resource))


def _distinct(issues: list[Issue]) -> list[Issue]:
    """One issue per (code, expression), as the server's transaction reports them."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for issue in issues:
        if (issue.code, issue.expression) not in seen:
            seen.add((issue.code, issue.expression))
            out.append(issue)
    return out


def pairs(issues: list[Issue]) -> list[tuple[str, str]]:
    return sorted((i.code, ", ".join(i.expression)) for i in issues)


def shown(issues: list[Issue]) -> str:
    return "\n".join(f"{i.severity} {i.code} {i.expression}: {i.diagnostics}" for i in issues)


# -- valid examples --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", LOADED + CONFORMANCE, ids=_name)
def test_valid_example_conforms(path):
    example = _read(path)
    assert validate_structure(example) == []
    checked = [item for _, item in _written(example) if validating.write_profiles(CONF, item)]
    assert checked, f"{_name(path)} holds no resource of a profiled type"
    errors = write_errors(example)
    assert errors == [], shown(errors)


def _profiles_used(example: dict) -> set[str]:
    """The canonicals of the profiles and extensions an example is checked against or carries."""
    used = {sd["url"] for _, item in _written(example) for sd in validating.write_profiles(CONF, item)}
    if example.get("resourceType") == "Bundle" and any(
            item.get("resourceType") == "List" and "submissionset" in json.dumps(item.get("code"))
            for _, item in _written(example)):
        used.add(validating.ITI65_PROFILE)

    def extensions(node: object) -> None:
        if isinstance(node, dict):
            for ext in node.get("extension") or ():
                if isinstance(ext, dict) and isinstance(ext.get("url"), str):
                    used.add(ext["url"])
            for value in node.values():
                extensions(value)
        elif isinstance(node, list):
            for value in node:
                extensions(value)
    extensions(example)
    return used


def test_the_valid_examples_instantiate_every_shipped_profile():
    shipped = {_read(p)["url"] for p in (ROOT / "profiles").glob("StructureDefinition-*.json")}
    used = set().union(*(_profiles_used(_read(p)) for p in LOADED + CONFORMANCE))
    assert shipped - used == set()


def test_the_consent_examples_have_every_shape_the_policy_reads():
    """Read by the policy itself (`policy/consents.py`), the loaded Consents are the six shapes of
    docs/access-policy.md, each once."""
    consents = [item for p in LOADED for _, item in _written(_read(p)) if item["resourceType"] == "Consent"]
    shapes = []
    for consent in consents:
        terms = terms_of(consent, None)
        assert terms is not None
        dmp = Dmp("p", True, frozenset(), frozenset(), (terms,))
        named = sorted(terms.actors)
        found = {
            "authorisation": any(dmp.authorises(ps) for ps in named),
            "masked grant": any(dmp.grants_masked(ps) for ps in named),
            "emergency sees masked": any(dmp.emergency_sees_masked(p) for p in EMERGENCY),
            "block": any(dmp.blocks(ps) for ps in named),
            "feeding opposition": any(dmp.opposes_feeding(ps) for ps in named),
            "emergency opposition": any(dmp.opposes(p) for p in EMERGENCY),
        }
        shapes += [shape for shape, yes in found.items() if yes]
    assert sorted(shapes) == sorted(["authorisation", "masked grant", "emergency sees masked", "block",
                                     "feeding opposition", "emergency opposition"])


# -- invalid examples ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", INVALID, ids=_name)
def test_invalid_example_fails_with_exactly_its_issues(path):
    case = _read(path)
    assert set(case) == {"description", "kind", "rule", "profile", "resource", "expected"}
    assert case["kind"] in KINDS
    resource, expected = case["resource"], sorted((e["code"], e["expression"]) for e in case["expected"])
    assert expected, "an invalid example lists the errors it breaks"
    assert validate_structure(resource) == []  # valid R4: it reaches the profile check, it is not a 400
    errors = write_errors(resource)
    assert all(i.severity == "error" for i in errors)
    assert pairs(errors) == expected, shown(errors)
    if case["profile"] is None:  # a DMP document rule, which no profile expresses
        assert case["kind"] == "document-rule"
        assert profile_errors(resource) == [], shown(profile_errors(resource))
        assert pairs(rule_errors(resource)) == expected
    else:
        assert CONF.resolve("StructureDefinition", case["profile"]) is not None
        assert rule_errors(resource) == []
        assert pairs(profile_errors(resource)) == expected
    if case["kind"] == "invariant":
        key = case["rule"].split()[0]
        assert any(i.diagnostics.startswith(f"Constraint failed: {key}:") for i in errors), shown(errors)


def _own_invariants() -> set[str]:
    """The error invariants the shipped profiles and extensions define (not core R4's)."""
    keys = set()
    for path in (ROOT / "profiles").glob("StructureDefinition-*.json"):
        sd = _read(path)
        for element in sd["snapshot"]["element"]:
            keys |= {c["key"] for c in element.get("constraint") or ()
                     if c.get("source") == sd["url"] and c.get("severity") == "error"}
    return keys


def test_the_invalid_examples_cover_every_kind_of_rule():
    cases = [_read(p) for p in INVALID]
    assert {c["kind"] for c in cases} == KINDS
    covered = {c["rule"].split()[0] for c in cases if c["kind"] == "invariant"}
    assert _own_invariants() - covered == set()
    shipped = {_read(p)["url"] for p in (ROOT / "profiles").glob("StructureDefinition-*.json")}
    assert shipped - {c["profile"] for c in cases} == set()
    # the two document rules: type/class (a mismatch, a type without class) and the attachment (size, hash)
    broken = {(e["code"], e["expression"].rsplit(".", 1)[-1]) for c in cases if c["kind"] == "document-rule"
              for e in c["expected"]}
    assert broken == {("business-rule", "category"), ("code-invalid", "type"), ("business-rule", "size"),
                      ("business-rule", "hash")}


# -- what fhirpathpy missed -------------------------------------------------------------------------------------
def test_fictitious_and_doubtful_in_two_comments_is_refused():
    """FICT and DOUT in two `comment` sub-extensions, the usual form (comment is 0..*): R4's extension(url) sees
    both (the compiled invariants; fhirpathpy 2.2.4 answered the first matching extension only)."""
    case = _read(EXAMPLES / "invalid" / "patient-identity-doubtful-and-fictitious.json")
    patient = case["resource"]
    reliability = patient["extension"][0]["extension"]
    comment = next(e for e in reliability if e["url"] == "comment")
    reliability.remove(comment)
    reliability += [{"url": "comment", "valueCodeableConcept": {"coding": [coding]}}
                    for coding in comment["valueCodeableConcept"]["coding"]]
    assert pairs(write_errors(patient)) == [("invariant", "Patient.extension[0]")]


def test_a_class_given_as_text_alone_is_refused():
    """A required binding on a CodeableConcept wants a code of the value set: text alone is not one."""
    document = copy.deepcopy(next(e["resource"] for e in _read(EXAMPLES / "01-dmp-claire-martin.json")["entry"]
                                  if e["resource"]["resourceType"] == "DocumentReference"))
    document["category"] = [{"text": "Compte rendu"}]
    assert pairs(write_errors(document)) == [("code-invalid", "DocumentReference.category[0]")]


# -- loaded into a server --------------------------------------------------------------------------------------
def _search_key(resource: dict) -> str:
    """The query that finds a loaded resource by its business identifier."""
    rtype = resource["resourceType"]
    ident = resource.get("masterIdentifier") if rtype == "DocumentReference" else resource.get("identifier")
    ident = ident[0] if isinstance(ident, list) else ident
    assert isinstance(ident, dict), f"a {rtype} of the examples has no identifier to find it by"
    return f"{rtype}?identifier={ident['system']}|{ident['value']}"


def _loaded(database, settings) -> list[tuple[str, dict]]:
    """Load the examples as `fhir-dmp load-examples` does; (file name, created resource) of every non-Binary
    resource they write."""
    lines = list(load_directory(database, settings, EXAMPLES))
    assert [line.rsplit(": ", 1)[0] for line in lines] == [p.name for p in LOADED]
    assert all(200 <= int(line.rsplit(": ", 1)[1]) < 300 for line in lines), lines
    return [(path.name, item) for path in LOADED for _, item in _written(_read(path))
            if item["resourceType"] != "Binary"]


def _as_written(value: object, full_urls: set[str]) -> bool:
    """Whether the server keeps an element as written: it resolves references and the fullUrls of the Bundle."""
    text = json.dumps(value)
    return '"reference"' not in text and not any(url in text for url in full_urls)


def _read_back(client, resource: dict) -> dict:
    found = client.get(_search_key(resource))
    assert found.status_code == 200, found.data
    bundle = json_of(found)
    assert bundle["total"] == 1, _search_key(resource)
    rid = bundle["entry"][0]["resource"]["id"]
    response = client.get(f"{resource['resourceType']}/{rid}")
    assert response.status_code == 200, response.data
    return json_of(response)


def test_load_examples_then_read_every_resource(database, settings, client):
    loaded = _loaded(database, settings)
    _loaded(database, settings)  # again, 2xx: every create is conditional, so each search below finds one match
    full_urls = {e["fullUrl"] for p in LOADED for e in _read(p).get("entry") or () if "fullUrl" in e}
    binaries = 0
    for name, example in loaded:
        stored = _read_back(client, example)
        assert stored["resourceType"] == example["resourceType"]
        for key, value in example.items():
            if key != "meta" and _as_written(value, full_urls):
                assert stored.get(key) == value, (name, example["resourceType"], key)
        if example["resourceType"] != "DocumentReference":
            continue
        attachment = stored["content"][0]["attachment"]
        if "url" not in attachment:
            continue
        assert attachment["url"].startswith("Binary/")  # the urn:uuid of the Bundle, resolved
        binary = client.get(attachment["url"])
        assert binary.status_code == 200, binary.data
        raw = base64.b64decode(json_of(binary)["data"])
        assert (len(raw), documents.digest(raw)) == (attachment["size"], attachment["hash"])
        binaries += 1
    assert {example["resourceType"] for _, example in loaded} >= set(PROFILED)
    assert binaries == sum(1 for p in LOADED for _, item in _written(_read(p)) if item["resourceType"] == "Binary")
    vsms = sum(1 for _, example in loaded if example["resourceType"] == "Composition")  # each files its document
    assert json_of(client.get("Binary"))["total"] == binaries + vsms


def test_loaded_examples_pass_validate_over_http(database, settings, client):
    checked = 0
    for name, example in _loaded(database, settings):
        if example["resourceType"] not in PROFILED:
            continue
        stored = _read_back(client, example)
        response = client.post(f"{example['resourceType']}/$validate", stored)
        assert response.status_code == 200, response.data
        outcome = json_of(response)
        assert outcome["resourceType"] == "OperationOutcome"
        errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
        assert errors == [], (name, example["resourceType"], errors)
        checked += 1
    assert checked == sum(1 for p in LOADED for _, item in _written(_read(p)) if item["resourceType"] in PROFILED)
