"""Which DMP a lookup may reach (dmp-reference.md 6.3, 6.5): searches, conditional operations and conditional
references all ask these questions, so each is answered once, here; services only run the lookups they name.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_dmp.errors import FhirError, bad_request
from fhir_dmp.policy.access import Access, identity_only
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.facts import SUMMARY_TYPES
from fhir_dmp.storage import criteria as c

# Types whose every search by a professional must name one DMP (6.5: no cross-patient lists).
DMP_TYPES = frozenset({"Patient", "DocumentReference", "Binary", "List", "Consent", "Composition", "Communication",
                       *SUMMARY_TYPES})


@dataclass(frozen=True)
class Naming:
    """What a lookup's criteria say of the DMP they are about: the patient keys they name directly
    (`patient=`), and the Patient criteria whose matches name it (chains on the patient, identity terms of a
    Patient search), for the service to resolve with the server's own lookup."""

    keys: frozenset[str]
    patient_criteria: tuple[c.Criterion, ...]


def naming(resource_type: str, criteria: c.Criterion) -> Naming:
    parts = c.conjuncts(criteria)
    keys = frozenset(p.patient_key for p in parts if isinstance(p, c.PatientIs))
    lookups: list[c.Criterion] = [p.inner for p in parts if isinstance(p, c.PatientMatches)]
    naming_terms = tuple(p for p in parts if _names_patient(p))
    if resource_type == "Patient" and naming_terms:
        # by the naming terms alone: whether the rest matches must not decide between 403 and an empty page
        lookups.append(c.AllOf(naming_terms))
    return Naming(keys, tuple(lookups))


def named_dmp(caller: Caller, resource_type: str, found: frozenset[str] | None, own: str | None) -> str | None:
    """The one DMP a lookup may reach (its patient key), '' when it names a DMP that does not exist, None when it
    names none. `found`: the keys its criteria name (None: they name no DMP; several: refused); `own`: the DMP a
    patient's or representative's token acts for. Professionals must name one DMP (400), patients only their
    own (403); a system lookup may span DMPs."""
    if found is not None and len(found) > 1:
        if caller.actor == "professional":
            raise bad_request("This search names more than one DMP: name exactly one patient")
        found = None
    named = None if found is None else (next(iter(found)) if found else "")
    if caller.actor in ("patient", "representative"):
        if named is not None and named != own:
            raise FhirError.of(403, "forbidden", "This search names a DMP other than the one your token acts for")
        return own
    if named is None and caller.actor == "professional" and resource_type in DMP_TYPES:
        raise bad_request(f"A professional's {resource_type} search must name one patient (patient=, subject= "
                          "or patient.identifier=, identifier= or _id= for Patient): no cross-patient lists")
    return named


def lookup_access(caller: Caller, access: Access | None, resource_type: str, criteria: c.Criterion) -> Access | None:
    """The standing a lookup runs with: the caller's in the DMP it names, or, for a professional refused for want
    of standing who asks only whether a DMP exists (6.3: a Patient lookup by INS testing nothing but the
    identity it would show), the existence check; any other refusal is the DMP's 403."""
    if access is None or access.refusal is None:
        return access
    if (access.may_check_existence and caller.actor == "professional" and resource_type == "Patient"
            and identity_only(criteria)):
        return Access("identity", access.dmp)
    raise access.refusal


def unnamed_condition_refusal(caller: Caller) -> FhirError | None:
    """A condition naming no DMP is judged in the DMPs the caller stands in by their own relationships (médecin
    traitant, a Consent naming them), never by what the store holds elsewhere. Emergency access opens one
    patient's DMP at a time, whichever: an emergency caller names the patient (400)."""
    if caller.actor == "professional" and caller.purpose_of_use in ("ETREAT", "BTG"):
        return bad_request("In emergency access (ETREAT, BTG) a conditional operation names the patient (patient=, "
                           "subject= or patient.identifier=; identifier= for a Patient)")
    return None


def closed_to(access: Access | None) -> FhirError | None:
    """The 403 of a DMP the caller may not open at all (every interaction on it gets it)."""
    if access is not None and access.refusal is not None:
        return access.refusal
    return None


def _names_patient(part: c.Criterion) -> bool:
    """`_id=` or `identifier=` on a Patient search: the DMP's existence check (TD0.2) or a direct lookup."""
    if isinstance(part, c.IdIn):
        return len(part.ids) == 1
    return isinstance(part, c.Token) and part.param == "identifier" and part.code is not None

