"""The patient's choices (dmp-reference.md 6.3 to 6.5, 6.9) read from their Consent resources.

A Consent counts when its status is `active` and `provision.period`, if any, contains now. Only the
top-level provision is read. Its meaning:
- permit naming a professional (PRCP actor, idNatPs), purpose TREAT or none, no label: an authorisation;
- permit naming a professional with label MASQUE_PS: they may see masked documents (not an authorisation);
- permit with purpose ETREAT/BTG and label MASQUE_PS: emergency access in that mode sees masked documents;
- deny naming a professional, action `collect`: a feeding opposition;
- deny naming a professional, no action (or `access`), no emergency purpose: a block;
- deny with purpose ETREAT or BTG: an opposition to that emergency mode.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from fhir_dmp.policy.facts import moment

PRCP = "PRCP"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
EMERGENCY = frozenset({"ETREAT", "BTG"})
MASQUE_PS = "MASQUE_PS"
INS_SYSTEMS = frozenset({  # the INS (NIR, NIA and their test ranges): a patient's identity in their DMP
    "urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9",
    "urn:oid:1.2.250.1.213.1.4.10", "urn:oid:1.2.250.1.213.1.4.11",
})


@dataclass(frozen=True)
class Terms:
    permit: bool
    actors: frozenset[str]  # idNatPs of the professionals named
    purposes: frozenset[str]
    actions: frozenset[str]
    labels: frozenset[str]

    @property
    def is_block(self) -> bool:
        return (not self.permit and bool(self.actors) and self.actions <= {"access"}
                and not self.purposes & EMERGENCY)

    @property
    def is_authorisation(self) -> bool:
        return (self.permit and bool(self.actors) and self.purposes <= {"TREAT"} and not self.labels
                and self.actions <= {"access"})


@dataclass(frozen=True)
class Dmp:
    """One DMP as the policy sees it: its Patient and its patient's choices in force."""

    key: str  # the Patient id
    active: bool
    ins: frozenset[str]  # the INS values identifying the patient
    treating: frozenset[str]  # idNatPs of the médecin traitant (Patient.generalPractitioner)
    terms: tuple[Terms, ...] = ()

    def blocks(self, ps: str) -> bool:
        return any(t.is_block and ps in t.actors for t in self.terms)

    def authorises(self, ps: str) -> bool:
        return any(t.is_authorisation and ps in t.actors for t in self.terms)

    def opposes_feeding(self, ps: str) -> bool:
        return any(not t.permit and ps in t.actors and "collect" in t.actions for t in self.terms)

    def opposes(self, purpose: str) -> bool:
        return any(not t.permit and purpose in t.purposes for t in self.terms)

    def grants_masked(self, ps: str) -> bool:
        return any(t.permit and ps in t.actors and MASQUE_PS in t.labels for t in self.terms)

    def emergency_sees_masked(self, purpose: str) -> bool:
        return any(t.permit and purpose in t.purposes and MASQUE_PS in t.labels for t in self.terms)


def authorisation(patient_id: str, ps: str) -> dict:
    """The Consent by which the patient authorises professional `ps` (idNatPs) on their DMP (6.3)."""
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        # R4 ppc-1: a Consent names its policy; opting in is what an authorisation records
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit", "actor": [{
            "role": {"coding": [{"system": PARTICIPATION, "code": PRCP}]},
            "reference": {"identifier": {"system": IDNATPS, "value": ps}}}]},
    }


def dmp_of(patient: dict, consents: Iterable[dict], now: datetime) -> Dmp:
    """The policy's view of a Patient and the Consents filed in its DMP."""
    terms = tuple(t for t in (terms_of(c, now) for c in consents) if t is not None)
    return Dmp(str(patient.get("id")), patient.get("active") is not False, frozenset(_ins(patient)),
               frozenset(_treating(patient)), terms)


def facts_of(patient: dict, consents: Iterable[dict]) -> str:
    """The DMP's access facts as stored (storage `dmp_facts`): what `dmp_of` reads of the Patient and the
    Consents, each Consent's provision with its period, so that a read decides at its own `now`."""
    terms = []
    for consent in consents:
        found = terms_of(consent, None)
        if found is None:
            continue
        period = consent["provision"].get("period") if isinstance(consent["provision"].get("period"), dict) else {}
        terms.append({"permit": found.permit, "actors": sorted(found.actors), "purposes": sorted(found.purposes),
                      "actions": sorted(found.actions), "labels": sorted(found.labels),
                      "period": {k: v for k, v in period.items() if k in ("start", "end")}})
    return json.dumps({"id": str(patient.get("id")), "active": patient.get("active") is not False,
                       "ins": sorted(set(_ins(patient))), "treating": sorted(set(_treating(patient))),
                       "terms": terms}, separators=(",", ":"), sort_keys=True)


def dmp_from_facts(facts: str, now: datetime) -> Dmp:
    """The policy's view of a DMP from its stored facts (`facts_of`), the Consents in force at `now`."""
    data = json.loads(facts)
    terms = tuple(Terms(t["permit"], frozenset(t["actors"]), frozenset(t["purposes"]), frozenset(t["actions"]),
                        frozenset(t["labels"])) for t in data["terms"] if _in_period(t["period"], now))
    return Dmp(data["id"], data["active"], frozenset(data["ins"]), frozenset(data["treating"]), terms)


def terms_of(consent: dict, now: datetime | None) -> Terms | None:
    """The provision of a Consent in force; None when it is not (inactive, out of its period, no type).
    `now` None: whatever its period (what a Consent being written says)."""
    provision = consent.get("provision")
    if consent.get("status") != "active" or not isinstance(provision, dict):
        return None
    if provision.get("type") not in ("permit", "deny"):
        return None
    if now is not None and not _in_period(provision.get("period"), now):
        return None
    actions = frozenset(code for concept in _list(provision.get("action")) for code in _codes(concept.get("coding")))
    purposes = frozenset(_codes(provision.get("purpose")))
    return Terms(provision["type"] == "permit", frozenset(actors(provision)), purposes, actions,
                 frozenset(_codes(provision.get("securityLabel"))))


def actors(provision: dict) -> list[str]:
    """idNatPs of the PRCP actors a provision names."""
    found = []
    for actor in _list(provision.get("actor")):
        role = actor.get("role") if isinstance(actor.get("role"), dict) else {}
        if PRCP not in _codes(role.get("coding")):
            continue
        ref = actor.get("reference") if isinstance(actor.get("reference"), dict) else {}
        ident = ref.get("identifier") if isinstance(ref.get("identifier"), dict) else {}
        if isinstance(ident.get("value"), str):
            found.append(ident["value"])
    return found


def _list(value: object) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _codes(codings: object) -> list[str]:
    return [c["code"] for c in _list(codings) if isinstance(c.get("code"), str)]


def _in_period(period: object, now: datetime) -> bool:
    if not isinstance(period, dict):
        return True
    start, end = moment(period.get("start")), moment(period.get("end"))
    return (start is None or start <= now) and (end is None or now < end)


def _ins(patient: dict) -> list[str]:
    from_ins = [i.get("value") for i in _list(patient.get("identifier"))
                if str(i.get("system", "")).startswith("urn:oid:1.2.250.1.213.1.4.")]
    return [v for v in from_ins if isinstance(v, str)]


def _treating(patient: dict) -> list[str]:
    found = []
    for ref in _list(patient.get("generalPractitioner")):
        ident = ref.get("identifier") if isinstance(ref.get("identifier"), dict) else {}
        if isinstance(ident.get("value"), str):
            found.append(ident["value"])
    return found
