"""Who may subscribe to what, who sees which Subscription, and what a notification may tell (docs/subscriptions.md).

A notification is a read by the subscriber: it is sent only when the subscriber, as their subscription keeps them
(`subscriber_of`), may see the document at the moment of the event (`event_scope`, the same scope a read or an
ITI-67 of theirs is given, in the same SQL), and it carries no more than that read would.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
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
    if access is None or access.refusal is not None:
        return (access.refusal if access is not None and access.refusal is not None
                else forbidden("You may not open this DMP"))
    if access.kind == "identity":
        return forbidden("You are not authorised on this DMP: the patient must authorise you first")
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


def listing(caller: Caller, own_dmp: str | None) -> tuple[str | None, str | None]:
    """Which Subscriptions a caller may list, as (owner, patient key) for the SQL (None: no condition): a system
    all of them, a patient or representative those on their DMP (whoever made them, and the multi-patient ones
    with events about it), a professional their own."""
    if caller.is_system:
        return None, None
    if caller.actor in ("patient", "representative"):
        return None, own_dmp or "\x00"  # no DMP of theirs: a key no row has
    return owner_key(caller), None


def may_read(caller: Caller, owner: str, patient_key: str, own_dmp: str | None, told_about: set[str]) -> bool:
    """The owner, a system, and the patient (or representative) of the DMP the subscription is on, or, for a
    multi-patient one, of a DMP it has numbered events about (`told_about`): a patient knows who hears of theirs."""
    if caller.is_system or owner == owner_key(caller):
        return True
    if caller.actor not in ("patient", "representative") or not own_dmp:
        return False
    return patient_key == own_dmp or (not patient_key and own_dmp in told_about)


def may_manage(caller: Caller, owner: str) -> bool:
    """Changing, deleting, replaying a subscription's events: its owner and systems only."""
    return caller.is_system or owner == owner_key(caller)
