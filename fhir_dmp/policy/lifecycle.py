"""The DMP's life (dmp-reference.md 4, 6.2, 6.6, 9): who may close and reopen it, what closing records, which
closed DMPs the purge removes, and who may export a whole DMP (`$everything`).

Closing sets `Patient.active` to false and records the closure extension (date and reason); reopening sets it
back to true and removes the extension (the history keeps the closed versions). Only `$close` and `$reopen`
change these: an update by the patient that flips `active` or edits the closure would leave a closed DMP without
the date its ten years of archiving run from (or backdate it into the purge), so it is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime

from fhir_dmp.errors import FhirError, forbidden, unprocessable
from fhir_dmp.policy.access import Access
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import moment

CLOSURE_URL = "https://fhir-dmp.example.org/StructureDefinition/dmp-closure"
ARCHIVE_YEARS = 10  # 9: a closed DMP is kept, archived, for ten years, then purged


@dataclass(frozen=True)
class Closure:
    """The closure a Patient records: when (None if unreadable) and why."""

    date: datetime | None
    reason: str


def closure_of(patient: dict) -> Closure | None:
    """The closure extension of a Patient, None when it has none."""
    for ext in patient.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == CLOSURE_URL:
            parts = {e.get("url"): e for e in ext.get("extension") or [] if isinstance(e, dict)}
            reason = parts.get("reason", {}).get("valueString")
            when = moment(parts.get("date", {}).get("valueDateTime"))
            return Closure(when, reason if isinstance(reason, str) else "")
    return None


def is_open(patient: dict) -> bool:
    return patient.get("active") is not False


# -- who may ------------------------------------------------------------------------------------------------
def close_refusal(caller: Caller, access: Access | None) -> FhirError | None:
    """9: the patient (6.6; their representative as them, 6.7), or the médecin traitant on the patient's request
    (the server cannot check the request: the trace names who closed it); a system caller (back office).
    `access`: the caller's standing in the DMP, already admitted (a DMP they may not open was refused 403)."""
    if caller.is_system:
        return None
    if access is None or access.refusal is not None:
        return access.refusal if access is not None and access.refusal else forbidden("You may not close this DMP")
    if access.kind in ("patient", "representative"):
        return None
    if access.kind == "professional" and access.treating:
        return None
    return forbidden("A DMP is closed by its patient, or by the médecin traitant at the patient's request")


def reopen_refusal(caller: Caller, access: Access | None) -> FhirError | None:
    """6.6: reopening is the patient's (and their representative's); professionals, the médecin traitant
    included, cannot even open a closed DMP (6.2). A system caller may (back office)."""
    if caller.is_system:
        return None
    if access is not None and access.kind in ("patient", "representative") and access.refusal is None:
        return None
    if access is not None and access.refusal is not None:
        return access.refusal
    return forbidden("Only the patient (or their representative) reopens a DMP")


def everything_refusal(caller: Caller, access: Access | None) -> FhirError | None:
    """`$everything` is a read of the whole DMP: whoever may open it gets what they may see in it (6: the rules
    apply to every operation), the patient and representative their own DMP, a professional their habilitated
    view; the existence check (identity) does not extend to it."""
    if caller.is_system:
        return None
    if access is None:
        return forbidden("You may not read this DMP")
    if access.refusal is not None:
        return access.refusal
    if access.kind in ("patient", "representative", "professional", "emergency"):
        return None
    return forbidden("You may not read this DMP")


# -- what it changes ------------------------------------------------------------------------------------------
def state_refusal(patient: dict, closing: bool) -> FhirError | None:
    """Closing a closed DMP, or reopening an open one: 409 (the operation conflicts with the DMP's state)."""
    if closing and not is_open(patient):
        return FhirError.of(409, "business-rule", "This DMP is already closed")
    if not closing and is_open(patient):
        return FhirError.of(409, "business-rule", "This DMP is open: there is nothing to reopen")
    return None


def closed(patient: dict, when: str, reason: str) -> dict:
    """The Patient closed at `when` (a FHIR dateTime) for `reason`."""
    out = reopened(patient)
    out["active"] = False
    out["extension"] = [*out.get("extension", []), {"url": CLOSURE_URL, "extension": [
        {"url": "date", "valueDateTime": when}, {"url": "reason", "valueString": reason}]}]
    return out


def reopened(patient: dict) -> dict:
    """The Patient open, without its closure record."""
    out = copy.deepcopy(patient)
    kept = [e for e in out.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == CLOSURE_URL)]
    if kept:
        out["extension"] = kept
    else:
        out.pop("extension", None)
    out["active"] = True
    return out


def closure_edit_refusal(before: dict, after: dict) -> FhirError | None:
    """An update by the patient or their representative keeps `active` and the closure as they were."""
    if is_open(before) != is_open(after):
        return unprocessable("A DMP is closed and reopened with Patient/[id]/$close and $reopen, not by changing "
                             "Patient.active", "Patient.active", code="business-rule")
    if _closure_json(before) != _closure_json(after):
        return unprocessable("The closure (date and reason) is recorded by $close and removed by $reopen",
                             "Patient.extension", code="business-rule")
    return None


def _closure_json(patient: dict) -> list:
    return [e for e in patient.get("extension") or [] if isinstance(e, dict) and e.get("url") == CLOSURE_URL]


def purgeable(patient: dict, before: datetime) -> bool:
    """9: a DMP closed (closure recorded) before `before` (naive UTC); a closed DMP without a readable closure date
    is never purged: nothing says its ten years have run."""
    closure = closure_of(patient)
    return (not is_open(patient) and closure is not None and closure.date is not None
            and closure.date < before)


def ten_years_before(now: datetime) -> datetime:
    """The purge's default limit: the same day ten years before (28 February for a 29)."""
    try:
        return now.replace(year=now.year - ARCHIVE_YEARS)
    except ValueError:
        return now.replace(year=now.year - ARCHIVE_YEARS, day=28)
