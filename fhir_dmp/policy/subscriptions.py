"""Who may subscribe to what, who sees which Subscription, and what a notification may tell (docs/subscriptions.md).

A notification is a read by the subscriber: it is sent only when the subscriber, as their subscription keeps them
(`subscriber_of`), may see the document at the moment of the event (`event_scope`, the same scope a read or an
ITI-67 of theirs is given, in the same SQL), and it carries no more than that read would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import datetime

from fhir_dmp.errors import FhirError, forbidden
from fhir_dmp.policy import access as policy
from fhir_dmp.policy import scopes
from fhir_dmp.policy.access import Access
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp
from fhir_dmp.policy.facts import owner_key
from fhir_dmp.policy.habilitation import HabilitationMatrix
from fhir_dmp.storage import criteria as c


def subscriber_of(caller: Caller) -> Caller:
    """The identity a subscription keeps: the creator's claims at normal access (an emergency access is for the
    moment of the emergency, never for the notifications of the months that follow)."""
    return replace(caller, purpose_of_use="TREAT", access_reason=None)


def dump_subscriber(caller: Caller) -> str:
    """The identity as stored: its claims, its SMART scopes as the token wrote them (`scope`, absent: none)."""
    kept = subscriber_of(caller)
    claims = {f.name: getattr(kept, f.name) for f in fields(kept) if f.name != "scopes"}
    if kept.scopes is not None:
        claims["scope"] = kept.scopes.text
    return json.dumps(claims, sort_keys=True)


def load_subscriber(text: str) -> Caller:
    claims = json.loads(text)
    scope = claims.pop("scope", None)
    return subscriber_of(Caller(**claims, scopes=None if scope is None else scopes.parse(scope)))


def scope_refusal(caller: Caller, resource_type: str) -> FhirError | None:
    """A notification is a search of the topic's type by the subscriber: a token whose SMART scopes do not grant
    it may neither subscribe nor be notified (None: no `scope` claim, or one that grants it)."""
    return scopes.refusal(caller.scopes, caller.actor, ((resource_type, "s"),))


def creation_refusal(caller: Caller, access: Access | None, patient_dependent: bool) -> FhirError | None:
    """A patient-dependent subscription needs the standing to open that DMP now (an authorisation, the médecin
    traitant, the patient themselves); a multi-patient one is for professionals and systems (each event is then
    judged in its own DMP). None: allowed."""
    if caller.is_system:
        return None
    if not patient_dependent:
        if caller.actor != "professional":
            return forbidden("A patient or representative subscribes to their own DMP (a patient-dependent topic)")
        return None
    if access is None or access.kind == "identity":  # a DMP that does not exist answers as one not theirs to open
        return policy.not_authorised()
    if access.refusal is not None:
        return access.refusal
    if access.kind == "emergency":
        return forbidden("An emergency access does not extend to a subscription: it needs an authorisation")
    return None


def event_scope(subscriber: Caller, dmp: Dmp | None, resource_type: str, matrix: HabilitationMatrix,
                now: datetime) -> c.Criterion | None:
    """What the subscriber may see of DMP `dmp` now (None: nothing, the DMP is closed to them, or their token's
    scopes do not grant a search of `resource_type`: no notification).
    Their standing is decided afresh from the DMP's facts at every event: a block, a closure or a withdrawn
    authorisation stops the notifications at once."""
    if dmp is None or scope_refusal(subscriber, resource_type) is not None:
        return None
    standing = policy.open_dmp(subscriber_of(subscriber), dmp)
    if not standing.is_open:
        return None
    return policy.scope(subscriber, standing, matrix, now)


@dataclass(frozen=True)
class Listing:
    """Which Subscriptions a caller may list, for the SQL: `owner` (None: any), `patient_key` (None: any DMP), and
    with it the owners whose multi-patient subscriptions are listed too (`hearers`, and every system's)."""

    owner: str | None
    patient_key: str | None
    hearers: frozenset[str] = frozenset()
    nothing: bool = False  # a patient's or representative's token acting for no DMP: no subscription at all


def hearers(dmp: Dmp | None) -> frozenset[str]:
    """The owners whose multi-patient subscriptions may hear of DMP `dmp` now: the professionals who stand in it
    (médecin traitant, authorised, not blocked) of an open DMP. Decided from the DMP's facts, never from the
    events a subscription numbered: those follow documents the patient may not see (INVISIBLE_PATIENT), and a
    subscription appearing after one was filed would tell them it was."""
    if dmp is None or not dmp.active:
        return frozenset()
    named = {ps for t in dmp.terms if t.is_authorisation for ps in t.actors} | set(dmp.treating)
    return frozenset(f"professional|{ps}" for ps in named if not dmp.blocks(ps))


def listing(caller: Caller, own_dmp: Dmp | None) -> Listing:
    """A system lists all of them, a patient or representative those on their DMP (whoever made them) and the
    multi-patient ones that may hear of it (`hearers`, and the systems'), a professional their own."""
    if caller.is_system:
        return Listing(None, None)
    if caller.actor in ("patient", "representative"):
        if own_dmp is None:
            return Listing(None, None, nothing=True)  # no DMP of theirs: nothing, not everything
        return Listing(None, own_dmp.key, hearers(own_dmp))
    return Listing(owner_key(caller), None)


def may_read(caller: Caller, owner: str, patient_key: str, own_dmp: Dmp | None) -> bool:
    """The owner, a system, and the patient (or representative) of the DMP the subscription is on, or, for a
    multi-patient one, whose DMP it may hear of now (`hearers`, or a system's): a patient knows who hears of
    theirs."""
    if caller.is_system or owner == owner_key(caller):
        return True
    if caller.actor not in ("patient", "representative") or own_dmp is None:
        return False
    if patient_key:
        return patient_key == own_dmp.key
    return owner in hearers(own_dmp) or owner.startswith("system|")


def may_manage(caller: Caller, owner: str) -> bool:
    """Changing, deleting, replaying a subscription's events: its owner and systems only."""
    return caller.is_system or owner == owner_key(caller)


def sees_delivery(caller: Caller, owner: str) -> bool:
    """How a subscription's deliveries go (how many events it numbered, a failed delivery, the endpoint's error) is
    its subscriber's to know (and a system's), not the patient's who reads a subscription on their DMP: events
    follow documents hidden from the patient (INVISIBLE_PATIENT; for a multi-patient one, other DMPs' documents),
    and a count that moves, or a subscription that falls in error, would tell them one was filed. Hidden is
    absent."""
    return may_manage(caller, owner)


def shown_status(caller: Caller, owner: str, status: str) -> str:
    """The status a reader is shown: to others than the owner, one in error reads `active` (its events are kept
    and numbered as before; whether a delivery failed follows those events, see `sees_delivery`)."""
    return "active" if status == "error" and not sees_delivery(caller, owner) else status


def replayer(caller: Caller, owner: str, stored: str) -> Caller:
    """Whom a `$events` replay is read as: the owner as their token says now (its claims and SMART scopes, at
    normal access: a replay is an ITI-67 of theirs, never more than their present token grants), a system as the
    subscriber the subscription keeps."""
    if not caller.is_system and owner == owner_key(caller):
        return subscriber_of(caller)
    return load_subscriber(stored)
