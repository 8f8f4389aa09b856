"""Who is calling: the one typed identity every layer below HTTP receives."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_dmp.policy.scopes import Grants

PURPOSES = ("TREAT", "ETREAT", "BTG")


@dataclass(frozen=True)
class Caller:
    """The bearer token's claims (dmp-reference.md section 2), already verified."""

    actor: str
    sub: str
    profession: str | None = None
    specialty: str | None = None
    organization: str | None = None
    patient: str | None = None
    purpose_of_use: str = "TREAT"
    access_reason: str | None = None
    secret: bool = False
    # the token's SMART scopes (policy/scopes.py); None: no `scope` claim, the DMP rules alone decide
    scopes: Grants | None = None

    @property
    def is_system(self) -> bool:
        return self.actor == "system"
