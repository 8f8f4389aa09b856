"""`$validate` on the stored types (R4 OperationDefinition Resource-validate): a resource, POSTed alone or in a
Parameters (`resource`, `profile`, `mode`), or the stored `[type]/[id]` as the caller may read it (the
handler is `validate_operation.py`), checked against R4's structure and a profile: the one
named, else the shipped DMP profile(s) of the type. The answer is a 200 OperationOutcome listing every issue,
or one information issue.

Every write of a profiled type goes through `enforce` too: the type's DMP profile, any profile the resource
claims in `meta.profile` that this server ships, and the document rules no profile expresses
(`validation/documents.py`). One 422 lists every error, so a vendor fixes everything in one round; warnings
do not refuse a write.
"""

from __future__ import annotations

from fhir_dmp.errors import FhirError, Issue, bad_request, not_found
from fhir_dmp.terminology.classes import codings
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.validation import documents, r4rules
from fhir_dmp.validation.profile import validate_profile
from fhir_dmp.validation.structure import validate_structure

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
CORE = "http://hl7.org/fhir/StructureDefinition/"
ITI65_PROFILE = "https://fhir-dmp.example.org/StructureDefinition/dmp-iti65-bundle"
MODES = ("create", "update", "profile")


def r4_issues(conf: Conformance, resource: object) -> list[Issue]:
    """What R4 itself refuses: the structural walk, then the rules it leaves out (`validation/r4rules.py`:
    formats, ele-1, extensions, narrative, displays of the shipped code systems, vital signs)."""
    issues = validate_structure(resource)  # type: ignore[arg-type]
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        seen = {i.expression for i in issues}
        issues += [i for i in r4rules.r4_issues(conf, resource) if i.expression not in seen]
    return issues


def issues_of(conf: Conformance, resource: dict, sds: list[dict],
              bytes_of: documents.BytesOf = lambda _url: None) -> list[Issue]:
    """Every issue, warnings and information included (`$validate`'s answer)."""
    issues = r4_issues(conf, resource)
    for sd in sds:
        issues += validate_profile(conf, sd, resource).issues
    issues += rule_issues(conf, resource, bytes_of)
    return issues or [Issue("informational", "No issues detected during validation", severity="information")]


def conformity_issues(conf: Conformance, resource: dict, bytes_of: documents.BytesOf) -> list[Issue]:
    """What refuses a write of `resource` (already structurally valid): its profiles' and the DMP rules'
    errors, warnings left out."""
    issues = [i for sd in write_profiles(conf, resource) for i in validate_profile(conf, sd, resource).issues]
    issues += rule_issues(conf, resource, bytes_of)
    return [i for i in issues if i.severity in ("error", "fatal")]


def enforce(conf: Conformance, resource: dict, bytes_of: documents.BytesOf) -> None:
    issues = conformity_issues(conf, resource, bytes_of)
    if issues:
        raise FhirError(422, issues)


def rule_issues(conf: Conformance, resource: dict, bytes_of: documents.BytesOf) -> list[Issue]:
    if resource.get("resourceType") != "DocumentReference":
        return []
    return documents.class_issues(conf, resource) + documents.attachment_issues(resource, bytes_of)


def write_profiles(conf: Conformance, resource: dict) -> list[dict]:
    """The type's DMP profile(s), and those it claims (`meta.profile`) that this server ships."""
    sds = default_profiles(conf, str(resource.get("resourceType")))
    return sds + [sd for sd in claimed_profiles(conf, resource) if all(sd is not s for s in sds)]


def claimed_profiles(conf: Conformance, resource: dict) -> list[dict]:
    """The shipped profiles of its type a resource names in `meta.profile` (others are not known here)."""
    meta = resource.get("meta")
    claimed = meta.get("profile") if isinstance(meta, dict) and isinstance(meta.get("profile"), list) else []
    sds = [conf.resolve("StructureDefinition", url) if isinstance(url, str) else None for url in claimed]
    return [sd for sd in sds if sd is not None and sd.get("type") == resource.get("resourceType")]


def bundle_issues(conf: Conformance, bundle: object) -> list[Issue]:
    """A transaction against the profiles it claims, and an ITI-65 (it carries a SubmissionSet List) against
    the DMP's ITI-65 profile: errors only. Its entries are each validated once, on their own
    (`conformity_issues`): here only what the Bundle's profile says of the Bundle and its entries."""
    if not isinstance(bundle, dict):
        return []
    sds = claimed_profiles(conf, bundle)
    iti65 = conf.resolve("StructureDefinition", ITI65_PROFILE)
    if iti65 is not None and _is_iti65(bundle) and all(sd is not iti65 for sd in sds):
        sds.append(iti65)
    issues = [i for sd in sds for i in validate_profile(conf, sd, bundle, entries_checked=True).issues]
    return [i for i in issues if i.severity in ("error", "fatal")]


def _is_iti65(bundle: dict) -> bool:
    entries = bundle.get("entry") if isinstance(bundle.get("entry"), list) else []
    resources = [e.get("resource") for e in entries if isinstance(e, dict)]
    return any(isinstance(r, dict) and r.get("resourceType") == "List"
               and any(c.get("code") == "submissionset" for c in codings(r.get("code"))) for r in resources)


def default_profiles(conf: Conformance, rtype: str) -> list[dict]:
    """The shipped profiles constraining a type (those the CapabilityStatement names as supportedProfile)."""
    return [sd for sd in conf.all("StructureDefinition") if sd.get("kind") == "resource"
            and sd.get("derivation") == "constraint" and sd.get("type") == rtype]


def profiles(conf: Conformance, rtype: str, profile: str | None) -> list[dict]:
    """The profiles `$validate` checks: the one named, else the type's DMP profiles. R4's own definition of
    the type (`http://hl7.org/fhir/StructureDefinition/<type>`) names R4 alone: no DMP profile."""
    if profile is None:
        return default_profiles(conf, rtype)
    if profile.partition("|")[0] == CORE + rtype:
        return []
    sd = conf.resolve("StructureDefinition", profile)
    if sd is None:
        raise not_found(f"$validate: profile {profile} is not known to this server")
    if sd.get("type") != rtype:
        raise bad_request(f"$validate: profile {profile} is for {sd.get('type')}, not {rtype}", "profile")
    return [sd]
