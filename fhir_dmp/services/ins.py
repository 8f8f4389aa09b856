"""One DMP per INS, race-safe: writers of a DMP's INS queue on a lock per INS value (PostgreSQL advisory locks;
SQLite writers are serialised already), then look for another DMP holding it."""

from __future__ import annotations

from urllib.parse import parse_qsl

from fhir_dmp.errors import FhirError
from fhir_dmp.policy.consents import INS_SYSTEMS
from fhir_dmp.services import content
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries
from fhir_dmp.storage.records import SYSTEM_SCOPE


def ins_values(patient: dict) -> list[str]:
    """The INS values a Patient carries (any of the INS systems), sorted."""
    idents = patient.get("identifier") if isinstance(patient.get("identifier"), list) else []
    return sorted({i["value"] for i in idents if isinstance(i, dict) and i.get("system") in INS_SYSTEMS
                   and isinstance(i.get("value"), str) and i["value"]})


def lock_ins(u: Unit, values: list[str]) -> None:
    """Queue the writers of the DMPs of these INS (in one order: no deadlock between two of them)."""
    for value in sorted(set(values)):
        u.lock(f"INS|{value}")


def lock_condition_ins(u: Unit, condition: str) -> None:
    """A conditional create of a Patient takes its condition's INS locks before matching, so that it and a plain
    create of the same INS (or one with a differently written condition) see each other."""
    values = []
    for name, value in parse_qsl(condition.lstrip("?"), keep_blank_values=True):
        if name == "identifier":
            values += [part.rsplit("|", 1)[-1] for part in value.split(",") if part.rsplit("|", 1)[-1]]
    lock_ins(u, values)


def claim_ins(u: Unit, patient: dict, rid: str, before: dict | None = None) -> None:
    """Refuse (409) a Patient `rid` whose INS already names another DMP, stored or opened earlier in this
    transaction; `before`: the stored version of an update (unchanged INS are not checked again)."""
    values = ins_values(patient)
    if not values or (before is not None and ins_values(before) == values):
        return
    lock_ins(u, values)
    for value in values:
        other = u.pending_ins.get(value)
        if other is not None and other != rid:
            raise _duplicate(value, other)
    token = c.AnyOf(tuple(c.Token("identifier", system, value) for system in sorted(INS_SYSTEMS) for value in values))
    found = [s for s in queries.find(u.tx, "Patient", token, limit=3, scope=SYSTEM_SCOPE) if s.id != rid]
    if found:
        u.touch(found[0].patient_key, f"Patient/{found[0].id}")  # its patient sees the attempt in their trail
        shared = sorted(set(values) & set(ins_values(content.resource_of(found[0]))))
        raise _duplicate(shared[0] if shared else values[0], found[0].id)
    for value in values:
        u.pending_ins[value] = rid


def _duplicate(ins: str, existing: str) -> FhirError:
    return FhirError.of(409, "duplicate", f"A DMP already exists for INS {ins} (Patient/{existing}): one DMP per "
                        "INS. To get it, or create it if absent, use a conditional create (If-None-Exist: "
                        "identifier=<INS system>|<INS>)", "Patient.identifier")
