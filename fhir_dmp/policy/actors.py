"""Refused callers: insurers, employers, occupational physicians (data in terminologies/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fhir_dmp.errors import FhirError, forbidden
from fhir_dmp.policy.caller import Caller


@dataclass(frozen=True)
class ActorRules:
    allowed_actors: frozenset[str]
    refused_specialties: frozenset[str]


@cache
def load_actor_rules(path: Path) -> ActorRules:
    data = json.loads(path.read_text(encoding="utf-8"))
    allowed = frozenset(data["allowed_actors"])
    specialties = frozenset(item["code"] for item in data["refused_specialties"])
    if not allowed or not specialties:
        raise ValueError(f"{path}: the refused-actor rules are empty; refusing to start")
    return ActorRules(allowed, specialties)


def refusal(caller: Caller, rules: ActorRules) -> FhirError | None:
    """A 403 for callers never let in; None for the others (unknown actor kinds are refused)."""
    if caller.actor not in rules.allowed_actors:
        return forbidden(f"Actor '{caller.actor}' may never access the DMP")
    if caller.specialty and caller.specialty in rules.refused_specialties:
        return forbidden(f"Specialty '{caller.specialty}' (occupational medicine) may never access the DMP")
    return None
