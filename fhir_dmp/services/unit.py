"""The unit of work: one request's transaction, caller, the DMP facts it loaded, what it touched, and the hooks
that run before it commits (filing a VSM, storing a DMP's new facts) and after (webhooks, later deliveries).

One `Unit` per attempt of a request (a REST call, a whole transaction Bundle); a retried attempt starts from a
new one. It asks `policy` for every decision and keeps nothing beyond the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fhir_dmp import fhirjson
from fhir_dmp.policy import access as policy
from fhir_dmp.policy import searches
from fhir_dmp.policy.access import Access
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import INS_SYSTEMS, Dmp, dmp_from_facts, dmp_of, facts_of
from fhir_dmp.policy.facts import owner_key
from fhir_dmp.search.dates import now_utc
from fhir_dmp.services.requests import FhirRequest
from fhir_dmp.services.runtime import Runtime
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import dmps, queries, resources
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.db import Tx
from fhir_dmp.storage.records import SYSTEM_SCOPE, Stored

Hook = Callable[[], None]


@dataclass
class Touched:
    """What an interaction reached in one DMP ('' = outside any DMP): for its AuditEvent."""

    references: list[str] = field(default_factory=list)
    query: str | None = None
    named: list[AccessFacts] = field(default_factory=list)  # the access facts of the resources referenced


@dataclass
class Unit:
    rt: Runtime
    caller: Caller
    req: FhirRequest
    tx: Tx = None  # type: ignore[assignment]  # set when the transaction opens
    now: datetime = field(default_factory=now_utc)
    touched: dict[str, Touched] = field(default_factory=dict)
    pending_facts: dict[str, AccessFacts] = field(default_factory=dict)  # DocumentReferences created in this unit
    authorise_on: list[str] = field(default_factory=list)  # DMPs a professional just created
    saved: list[tuple[str, str]] = field(default_factory=list)  # (type, id) created or updated in this unit
    pending_ins: dict[str, str] = field(default_factory=dict)  # INS -> DMP opened earlier in this transaction
    changed_dmps: set[str] = field(default_factory=set)  # DMPs whose Patient or Consents this unit changed
    existing_dmps: set[str] = field(default_factory=set)  # DMPs (Patient ids) found stored by this unit
    found_ins: dict[tuple[str, str], str] = field(default_factory=dict)  # (system, INS) -> DMP found stored
    after_commit: list[Hook] = field(default_factory=list)
    judged: dict[int, object] = field(default_factory=dict)  # bodies judged before the unit: not judged again
    _dmps: dict[str, Dmp | None] = field(default_factory=dict)
    _facts: dict[str, str] = field(default_factory=dict)
    _access: dict[str, Access] = field(default_factory=dict)
    _own: list[str | None] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return owner_key(self.caller)

    def was_judged(self, body: object) -> bool:
        """Whether this very body (not an equal one) had its structure and conformity judged before the unit of
        work opened (a transaction's entries, `bundles._Conformity`)."""
        return self.judged.get(id(body)) is body

    def lock(self, key: str) -> None:
        """Serialise writers on `key` until the transaction ends."""
        self.rt.db.lock(self.tx, key)

    # -- facts ----------------------------------------------------------------------------------------------
    def know_facts(self, key: str, facts: str | None) -> None:
        """A DMP's stored facts, read along with something else (`resources.locate`): no second statement."""
        if facts is not None and key and key not in self.changed_dmps:
            self._facts.setdefault(key, facts)

    def know_dmps(self, keys: set[str] | frozenset[str]) -> None:
        """Load the facts of several DMPs the unit is about to judge, in one statement."""
        wanted = [k for k in keys if k and k not in self._facts and k not in self._dmps and k not in self.changed_dmps]
        for key, facts in dmps.facts_of_many(self.tx, wanted).items():
            self._facts.setdefault(key, facts)

    def dmp(self, key: str) -> Dmp | None:
        """The DMP as the policy sees it: from its facts row, or (changed in this unit, or no row yet) from its
        Patient and Consents."""
        if key not in self._dmps:
            facts = self._facts.get(key)
            if facts is None and key not in self.changed_dmps:
                facts = dmps.facts_of(self.tx, key)
            self._dmps[key] = dmp_from_facts(facts, self.now) if facts is not None else self._dmp_from_content(key)
        return self._dmps[key]

    def _dmp_from_content(self, key: str) -> Dmp | None:
        patient, consents = self._content(key)
        return None if patient is None else dmp_of(patient, consents, self.now)

    def _content(self, key: str) -> tuple[dict | None, list[dict]]:
        rows = resources.current_of_patient(self.tx, key, ("Patient", "Consent"))
        patient = next((r for r in rows if r.resource_type == "Patient"), None)
        consents = [fhirjson.loads(r.content or "{}") for r in rows if r.resource_type == "Consent"]
        return (None if patient is None else fhirjson.loads(patient.content or "{}")), consents

    def forget(self, key: str) -> None:
        """The DMP's Patient or Consents just changed: decide again from the new state, store it at commit."""
        if key:
            self.changed_dmps.add(key)
        self._dmps.pop(key, None)
        self._facts.pop(key, None)
        self._access.pop(key, None)

    def store_changed_facts(self) -> None:
        """Before commit: the facts row of each DMP this unit changed, recomputed under the DMP's lock from what
        is committed plus this unit's own writes (two units changing one DMP's Consents queue here, and the
        second sees the first's)."""
        for key in sorted(self.changed_dmps):
            self.lock(f"dmp-facts/{key}")
            patient, consents = self._content(key)
            if patient is not None:
                dmps.save_facts(self.tx, key, facts_of(patient, consents))
            else:  # the Patient was deleted: no DMP to decide from (as before the facts row existed)
                dmps.drop_facts(self.tx, key)

    def own_dmp(self) -> str | None:
        """The DMP a patient's or representative's token acts for (by its INS), None when it does not exist."""
        if not self._own:
            found = None
            if self.caller.patient:
                token = c.AnyOf(tuple(c.Token("identifier", s, self.caller.patient) for s in sorted(INS_SYSTEMS)))
                rows = queries.find(self.tx, "Patient", token, limit=2, scope=SYSTEM_SCOPE)
                found = rows[0].id if len(rows) == 1 else None
            self._own.append(found)
        return self._own[0]

    # -- decisions (policy's) --------------------------------------------------------------------------------
    def access(self, key: str) -> Access | None:
        """The caller's standing in DMP `key` (None for '' and for a DMP that does not exist)."""
        if not key:
            return None
        if key not in self._access:
            dmp = self.dmp(key)
            if dmp is None:
                return None
            self._access[key] = policy.open_dmp(self.caller, dmp)
        return self._access[key]

    def require(self, key: str) -> Access | None:
        """The standing in DMP `key`, or the 403 that refuses the whole DMP."""
        found = self.access(key)
        refusal = searches.closed_to(found)
        if refusal is not None:
            raise refusal
        return found

    def scope(self, access: Access | None) -> c.Criterion:
        return policy.scope(self.caller, access, self.rt.matrix, self.now)

    def scope_of(self, keys: set[str] | frozenset[str]) -> c.Criterion:
        """What the caller may see in any of the DMPs `keys` (those they may not open add nothing)."""
        return policy.scope_many(self.caller, [a for a in (self.access(k) for k in sorted(keys)) if a is not None],
                                 self.rt.matrix, self.now)

    # -- traces ---------------------------------------------------------------------------------------------
    def touch(self, key: str, reference: str | None = None, query: str | None = None,
              facts: AccessFacts | None = None) -> None:
        """Note what the trace will name; `facts`: the named resource's, so that the trace hides as it does."""
        entry = self.touched.setdefault(key, Touched())
        if reference and reference not in entry.references:
            entry.references.append(reference)
        if facts is not None and facts.labels:
            entry.named.append(facts)
        if query is not None:
            entry.query = query

    def touch_rows(self, rows: list[Stored]) -> None:
        """Rows read from DMPs a request did not name: each DMP's patient sees the access in its own trail."""
        for row in rows:
            if row.patient_key:
                self.touch(row.patient_key, f"{row.resource_type}/{row.id}/_history/{row.version_id}", facts=row.facts)
