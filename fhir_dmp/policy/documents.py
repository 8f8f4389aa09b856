"""Who may change a document's metadata, delete it or replace it (dmp-reference.md 5 and 6; ANS PDSm flux 03,
pdsm4dmp TD2.1, TD3.3a to TD3.3d): pure decisions on the document before and after the change.

A change is judged by what it does, whatever the interaction (PATCH, PUT, a replacement's supersede):
- status: `current` -> `entered-in-error` is the DMP's logical deletion, the depositor's or the patient's
  (and their representative's); `current` -> `superseded` is a replacement, the depositor's; a superseded or
  deleted document never comes back (422).
- `MASQUE_PS` is the patient's choice (patient, representative): the depositor may neither set nor lift it.
- `INVISIBLE_PATIENT` is the depositor's (hidden until the patient has been told): set or lifted by them only.
- `INVISIBLE_REPRESENTANTS_LEGAUX` protects a minor's secret: the patient or the depositor, never a
  representative.
- the confidentiality level (N, R, V) is the depositor's medical assessment.
- the is-archived extension: the depositor, the patient, the representative.
A patient or representative changes nothing else of a document they did not deposit. A system caller is a
trusted feed: nothing here restricts it. Professionals other than the depositor change nothing (writes.py).
"""

from __future__ import annotations

from fhir_dmp.errors import FhirError, Issue, forbidden, unprocessable
from fhir_dmp.policy import labels
from fhir_dmp.policy.caller import Caller

IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
# What a metadata update may change (PDSm flux 03): everything else of the resource stays as it was.
METADATA = ("status", "securityLabel")
CONFIDENTIALITY = frozenset({"N", "R", "V", "U", "L", "M"})  # TRE_A08 / v3-Confidentiality codes
_FINAL = frozenset({"superseded", "entered-in-error"})


def metadata_issues(before: dict, after: dict) -> list[Issue]:
    """The elements a metadata update changed besides status, securityLabel and is-archived (one issue each)."""
    issues = []
    for key in sorted(set(before) | set(after)):
        if key in METADATA or key in ("id", "resourceType"):
            continue
        old, new = before.get(key), after.get(key)
        if key == "meta":
            old, new = _meta_kept(old), _meta_kept(new)
        elif key == "extension":
            old, new = _other_extensions(old), _other_extensions(new)
        if old != new:
            issues.append(Issue("business-rule", f"A document's metadata update may change only status, securityLabel "
                                f"and the is-archived extension, not {key}", (f"DocumentReference.{key}",)))
    return issues


def archived(document: dict) -> bool:
    """The PDSm is-archived extension's value (absent: not archived)."""
    for ext in document.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == IS_ARCHIVED:
            return ext.get("valueBoolean") is True
    return False


def change_refusal(caller: Caller, mine: bool, before: dict, after: dict) -> FhirError | None:
    """May `caller` (the document's depositor when `mine`) turn `before` into `after`? Visibility and the DMP's
    standing were judged before; a professional who is not the depositor was refused before (writes.py)."""
    if caller.is_system:
        return None
    patientish = caller.actor in ("patient", "representative")
    old_status, new_status = before.get("status"), after.get("status")
    if old_status != new_status:
        if old_status in _FINAL:
            return unprocessable(f"A {old_status} document is final: its status cannot change to {new_status}",
                                 "DocumentReference.status", code="business-rule")
        if new_status == "entered-in-error":
            if not (mine or patientish):
                return forbidden("Only the depositor or the patient may delete a document")
        elif new_status == "superseded":
            if not mine:
                return forbidden("Only the depositor replaces a document (a new DocumentReference with "
                                 "relatesTo.code = replaces)")
        else:
            return unprocessable(f"A document's status may change to entered-in-error (deletion) or superseded "
                                 f"(replacement), not to {new_status}", "DocumentReference.status",
                                 code="business-rule")
    added, removed = _label_changes(before, after)
    for code in sorted(added | removed):
        verb = "set" if code in added else "lift"
        refusal = _label_refusal(caller, mine, code, verb)
        if refusal is not None:
            return refusal
    if archived(before) != archived(after) and not (mine or patientish):
        return forbidden("Only the depositor or the patient archives a document")
    if patientish and not mine and metadata_issues(before, after):
        return forbidden("A patient or representative changes only the status (deletion), the masking and the "
                         "archiving of a document they did not deposit")
    return None


def _label_refusal(caller: Caller, mine: bool, code: str, verb: str) -> FhirError | None:
    actor = caller.actor
    if code == "MASQUE_PS":
        if actor not in ("patient", "representative"):
            return forbidden(f"Masking a document from professionals (MASQUE_PS) is the patient's choice: "
                             f"a professional may not {verb} it")
    elif code == "INVISIBLE_PATIENT":
        if not (mine and actor == "professional"):
            return forbidden(f"Only the professional who deposited the document may {verb} INVISIBLE_PATIENT")
    elif code == "INVISIBLE_REPRESENTANTS_LEGAUX":
        if actor == "representative" or not (mine or actor == "patient"):
            return forbidden(f"Only the patient or the depositor may {verb} INVISIBLE_REPRESENTANTS_LEGAUX")
    elif not mine:  # a confidentiality level, or any other label: the depositor's assessment
        return forbidden(f"Only the depositor may {verb} the security label {code}")
    return None


def _label_changes(before: dict, after: dict) -> tuple[set[str], set[str]]:
    """Label codes added and removed. Codes, not systems: TRE_A08 and v3-Confidentiality carry the same N/R/V,
    and a TRE_A07 code under another system still counts (labels.bits_of), so switching systems changes nothing."""
    old, new = _codes(before), _codes(after)
    return new - old, old - new


def _codes(document: dict) -> set[str]:
    found = set()
    for coding in labels.codings("DocumentReference", document):
        code = coding.get("code")
        if isinstance(code, str):
            found.add(code)
    return found


def _meta_kept(meta: object) -> object:
    """meta without what the server sets anyway."""
    if not isinstance(meta, dict):
        return meta
    return {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")} or None


def _other_extensions(extensions: object) -> object:
    if not isinstance(extensions, list):
        return extensions
    return [e for e in extensions if not (isinstance(e, dict) and e.get("url") == IS_ARCHIVED)] or None


def replacement_refusal(target: dict, same_dmp: bool) -> FhirError | None:
    """The document a new one replaces must be current and in the same DMP (who may replace it is
    `change_refusal` on its supersede). A replaced or deleted one: 409, the conflict a concurrent replacer meets."""
    if not same_dmp:
        return unprocessable("A document replaces only a document of the same DMP",
                             "DocumentReference.relatesTo.target", code="business-rule")
    status = target.get("status")
    if status != "current":
        return FhirError.of(409, "conflict", f"The document to replace is {status}, not current: it was already "
                            "replaced or deleted", "DocumentReference.relatesTo.target")
    return None
