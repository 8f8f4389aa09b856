"""The scope a lookup runs in: a search, a conditional operation or a conditional reference alike.

Policy says which DMP the criteria may reach and the caller's standing there (`policy/searches.py`); this module
runs the lookups policy names and returns the scope to put inside the query, with the criteria confined to it
(chains, `_has` and the patient reach only what the caller may see).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_dmp.policy import searches
from fhir_dmp.policy.access import Access, confine, narrow, sees_patient
from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import dmps, queries
from fhir_dmp.storage.records import SYSTEM_SCOPE

LOOKUP_LIMIT = 2  # a Patient criterion naming DMPs: one is named, two are too many (the rest need not be read)


@dataclass(frozen=True)
class Lookup:
    key: str | None  # the DMP named ('' a DMP that does not exist, None: none named)
    access: Access | None
    scope: c.Criterion  # what the caller may see, of any type (includes)
    criteria: c.Criterion  # the criteria, confined to `scope`

    @property
    def identity(self) -> bool:
        """The existence check (6.3): the DMP's identity, nothing else."""
        return self.access is not None and self.access.kind == "identity"

    def own_scope(self, resource_type: str) -> c.Criterion:
        """The scope for rows of the looked-up type only (a smaller statement)."""
        return narrow(self.scope, resource_type)


def _resolve(u: Unit, naming: searches.Naming) -> tuple[frozenset[str] | None, dict[c.Criterion, frozenset[str]]]:
    """The DMPs the criteria name (the server's own lookups of the Patients they describe; None: none), and what
    each Patient criterion resolved to (for `resolve_patients`)."""
    if not naming.keys and not naming.patient_criteria:
        return None, {}
    keys = set(naming.keys)
    resolved: dict[c.Criterion, frozenset[str]] = {}
    for criterion in naming.patient_criteria:
        found = frozenset(r.id for r in queries.find(u.tx, "Patient", criterion, limit=LOOKUP_LIMIT,
                                                     scope=SYSTEM_SCOPE))
        resolved[criterion] = found
        keys.update(found)
        if not keys:
            return frozenset(), resolved
    return frozenset(keys), resolved


def resolve_patients(criteria: c.Criterion, resolved: dict[c.Criterion, frozenset[str]],
                     scope: c.Criterion) -> c.Criterion:
    """The criteria with each chain on the patient (`patient.identifier=...`, a `PatientMatches`) whose Patients
    were already looked up replaced by those DMPs' keys (`PatientIs`), so the query is driven by `patient_key`
    like `patient=<id>` whatever the statistics say (measured on stale statistics: 2,040 ms for the chained
    subquery, 49 ms for `patient=`). Equivalent only where the lookup's answer is the chain's: the Patient
    criterion has no chain or `_has` of its own (the scope would reach inside them) and the caller's scope shows
    those Patients; otherwise the keys are ANDed in front of the chain, which stays the judge."""
    match criteria:
        case c.PatientMatches(inner) if inner in resolved and len(resolved[inner]) < LOOKUP_LIMIT:
            keys = resolved[inner]  # a complete answer (the lookup stops at LOOKUP_LIMIT)
            driver: c.Criterion = c.AnyOf(tuple(c.PatientIs(k) for k in sorted(keys)))
            if not keys or (_plain(inner) and all(sees_patient(scope, k) for k in keys)):
                return driver
            return c.AllOf((driver, criteria))
        case c.AllOf(parts):
            return c.AllOf(tuple(resolve_patients(p, resolved, scope) for p in parts))
    return criteria


def _plain(criterion: c.Criterion) -> bool:
    """No chain, `_has` or patient term inside: the server's lookup and the caller's scope see it alike."""
    match criterion:
        case c.Chain() | c.Has() | c.PatientMatches():
            return False
        case c.AnyOf(parts) | c.AllOf(parts):
            return all(_plain(p) for p in parts)
        case c.Not(part):
            return _plain(part)
    return True


def _own(u: Unit) -> str | None:
    return u.own_dmp() if u.caller.actor in ("patient", "representative") else None


def for_search(u: Unit, resource_type: str, criteria: c.Criterion) -> Lookup:
    """A search: it names one DMP (professionals must), or spans DMPs (a system's)."""
    found, resolved = _resolve(u, searches.naming(resource_type, criteria))
    key = searches.named_dmp(u.caller, resource_type, found, _own(u))
    access = searches.lookup_access(u.caller, u.access(key) if key else None, resource_type, criteria)
    scope = u.scope(access)
    return _confined(resource_type, key, access, scope, resolve_patients(criteria, resolved, scope))


def for_condition(u: Unit, resource_type: str, criteria: c.Criterion) -> Lookup:
    """A conditional create, update, patch or delete, or a conditional reference: a condition naming a DMP is
    judged there like a search (403 for a DMP closed to the caller, the existence check for a Patient by INS);
    one naming none is judged in every DMP holding matches among those the caller stands in by their own
    relationships (médecin traitant, a Consent naming them: an indexed lookup bounded by their patients, not by
    the store), each as the caller may see it: the answer never depends on what the caller may not see.
    Emergency callers name the patient."""
    if u.caller.is_system:
        return Lookup(None, None, SYSTEM_SCOPE, criteria)
    found, resolved = _resolve(u, searches.naming(resource_type, criteria))
    own = _own(u)
    if found is not None or own is not None:
        key = searches.named_dmp(u.caller, "", found, own)  # "": no type where naming a patient is required
        access = searches.lookup_access(u.caller, u.access(key) if key else None, resource_type, criteria)
        scope = u.scope(access)
        return _confined(resource_type, key, access, scope, resolve_patients(criteria, resolved, scope))
    refusal = searches.unnamed_condition_refusal(u.caller)
    if refusal is not None:
        raise refusal
    related = dmps.related_to(u.tx, IDNATPS, u.caller.sub) if u.caller.actor == "professional" else set()
    keys = set(queries.patient_keys(u.tx, resource_type, criteria, among=related)) - {""}
    u.know_dmps(keys)
    return _confined(resource_type, None, None, u.scope_of(keys), criteria)


def _confined(resource_type: str, key: str | None, access: Access | None, scope: c.Criterion,
              criteria: c.Criterion) -> Lookup:
    return Lookup(key, access, scope, confine(criteria, scope, resource_type))


