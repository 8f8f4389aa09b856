"""Purposes of use (dmp-reference.md sections 2 and 6.4) that can be judged from the token alone.

Whether an emergency mode opens a given DMP depends on the patient's oppositions (Consent) and is decided
with the rest of the access policy; what does not depend on any DMP is checked here, on every request:
a purpose this server does not know, and break-the-glass without the reason the patient will be shown.
"""

from __future__ import annotations

from fhir_dmp.errors import FhirError
from fhir_dmp.policy.caller import PURPOSES, Caller


def purpose_refusal(caller: Caller) -> FhirError | None:
    """A 400 for an unknown purpose of use, or BTG without `access_reason`; None otherwise."""
    if caller.purpose_of_use not in PURPOSES:
        return FhirError.of(400, "value", f"purpose_of_use must be one of {', '.join(PURPOSES)}")
    if caller.purpose_of_use == "BTG" and not (caller.access_reason or "").strip():
        return FhirError.of(400, "required", "Break-the-glass access (purpose_of_use BTG) needs an access_reason "
                            "claim: the patient is told why their DMP was opened")
    return None
