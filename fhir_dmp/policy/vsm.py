"""Who may ask for the VSM worklist (dmp-reference.md 8): the médecin traitant, about their own patients.

`Patient/$vsm-status` lists the DMPs whose `generalPractitioner` names the caller (by idNatPs) and whose VSM is
missing or old. The list is drawn from the caller's own identity, so it can name no one else's patients; it is
still the médecin's: other professionals (a nurse or a physiotherapist named by mistake as médecin traitant would
otherwise learn when their patients' VSMs were written, a type the matrix may hide from them), patients,
representatives and system callers (who have no patients of their own) are refused.
"""

from __future__ import annotations

from fhir_dmp.errors import FhirError, forbidden
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.writes import MEDECIN


def status_refusal(caller: Caller) -> FhirError | None:
    if caller.actor == "professional" and caller.profession == MEDECIN:
        return None
    return forbidden("Patient/$vsm-status is the médecin traitant's worklist: a médecin (profession 10) asks "
                     "about the patients whose médecin traitant they are")
