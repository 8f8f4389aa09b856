"""The scope a lookup runs in: a search, a conditional operation or a conditional reference alike.

Policy says which DMP the criteria may reach and the caller's standing there (`policy/searches.py`); this module
runs the lookups policy names and returns the scope to put inside the query, with the criteria confined to it
(chains, `_has` and the patient reach only what the caller may see).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_dmp.policy import searches
from fhir_dmp.policy.access import Access, confine, narrow
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries
from fhir_dmp.storage.records import SYSTEM_SCOPE


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


def named_keys(u: Unit, naming: searches.Naming) -> frozenset[str] | None:
    """The DMPs the criteria name (the server's own lookups of the Patients they describe); None: none."""
    if not naming.keys and not naming.patient_criteria:
        return None
    keys = set(naming.keys)
    for criterion in naming.patient_criteria:
        keys.update(r.id for r in queries.find(u.tx, "Patient", criterion, limit=2, scope=SYSTEM_SCOPE))
        if not keys:
            return frozenset()
    return frozenset(keys)


def _own(u: Unit) -> str | None:
    return u.own_dmp() if u.caller.actor in ("patient", "representative") else None


def for_search(u: Unit, resource_type: str, criteria: c.Criterion) -> Lookup:
    """A search: it names one DMP (professionals must), or spans DMPs (a system's)."""
    found = named_keys(u, searches.naming(resource_type, criteria))
    key = searches.named_dmp(u.caller, resource_type, found, _own(u))
    access = searches.lookup_access(u.caller, u.access(key) if key else None, resource_type, criteria)
    return _confined(u, key, access, u.scope(access), criteria)


def for_condition(u: Unit, resource_type: str, criteria: c.Criterion) -> Lookup:
    """A conditional create, update, patch or delete, or a conditional reference: a condition naming a DMP is
    judged there like a search (403 for a DMP closed to the caller, the existence check for a Patient by INS);
    one naming none is judged in every DMP holding matches (all of them: matches the caller may not see must not
    crowd out one they see), each as the caller may see it (those they may not open add nothing): the answer never
    depends on what the caller may not see."""
    if u.caller.is_system:
        return Lookup(None, None, SYSTEM_SCOPE, criteria)
    found = named_keys(u, searches.naming(resource_type, criteria))
    own = _own(u)
    if found is not None or own is not None:
        key = searches.named_dmp(u.caller, "", found, own)  # "": no type where naming a patient is required
        access = searches.lookup_access(u.caller, u.access(key) if key else None, resource_type, criteria)
        return _confined(u, key, access, u.scope(access), criteria)
    keys = set(queries.patient_keys(u.tx, resource_type, criteria)) - {""}
    u.know_dmps(keys)
    return _confined(u, None, None, u.scope_of(keys), criteria)


def _confined(u: Unit, key: str | None, access: Access | None, scope: c.Criterion, criteria: c.Criterion) -> Lookup:
    return Lookup(key, access, scope, confine(criteria, scope))


