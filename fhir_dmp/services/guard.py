"""The access policy applied to one unit of work: which DMP a request is about, what the caller may do
there, and what they touched (for the traces).

One `Guard` per unit of work (a REST call, a whole transaction Bundle): it loads each DMP's Patient and
Consents once, asks `policy` for decisions and scopes, and keeps nothing beyond the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from fhir_dmp import fhirjson
from fhir_dmp.errors import FhirError, bad_request
from fhir_dmp.policy import access as policy
from fhir_dmp.policy.access import Access
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp, dmp_of
from fhir_dmp.policy.facts import SUMMARY_TYPES, owner_key
from fhir_dmp.policy.habilitation import HabilitationMatrix
from fhir_dmp.search.dates import now_utc
from fhir_dmp.services.references import INS_SYSTEMS
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.repository import Stored

# Types whose every search by a professional must name one DMP (6.5: no cross-patient lists).
DMP_TYPES = frozenset({"Patient", "DocumentReference", "Binary", "List", "Consent", "Composition", "Communication",
                       *SUMMARY_TYPES})


@dataclass
class Touched:
    """What an interaction reached in one DMP ('' = outside any DMP): for its AuditEvent."""

    references: list[str] = field(default_factory=list)
    query: str | None = None


@dataclass
class Guard:
    caller: Caller
    matrix: HabilitationMatrix
    now: datetime = field(default_factory=now_utc)
    touched: dict[str, Touched] = field(default_factory=dict)
    pending_facts: dict[str, AccessFacts] = field(default_factory=dict)  # created earlier in this transaction
    authorise_on: list[str] = field(default_factory=list)  # DMPs a professional just created
    saved: list[tuple[str, str]] = field(default_factory=list)  # (type, id) created or updated in this unit
    pending_ins: dict[str, str] = field(default_factory=dict)  # INS -> DMP opened earlier in this transaction
    _dmps: dict[str, Dmp | None] = field(default_factory=dict)
    _access: dict[str, Access] = field(default_factory=dict)
    _own: list[str | None] = field(default_factory=list)

    @property
    def owner(self) -> str:
        return owner_key(self.caller)

    def reset(self) -> None:
        """A retried unit of work starts from nothing it saw before."""
        self.touched.clear()
        self.pending_facts.clear()
        self.authorise_on.clear()
        self.saved.clear()
        self.pending_ins.clear()
        self._dmps.clear()
        self._access.clear()
        self._own.clear()

    # -- facts --------------------------------------------------------------------------------------
    def dmp(self, conn: Connection, key: str) -> Dmp | None:
        if key not in self._dmps:
            rows = repo.current_of_patient(conn, key, ("Patient", "Consent"))
            patient = next((r for r in rows if r.resource_type == "Patient"), None)
            self._dmps[key] = None if patient is None else dmp_of(
                fhirjson.loads(patient.content or "{}"),
                [fhirjson.loads(r.content or "{}") for r in rows if r.resource_type == "Consent"], self.now)
        return self._dmps[key]

    def forget(self, key: str) -> None:
        """The DMP's Patient or Consents just changed: decide again from the new state."""
        self._dmps.pop(key, None)
        self._access.pop(key, None)

    def own_dmp(self, conn: Connection) -> str | None:
        """The DMP a patient's or representative's token acts for (by its INS), None when it does not exist."""
        if not self._own:
            found = None
            if self.caller.patient:
                token = c.AnyOf(tuple(c.Token("identifier", s, self.caller.patient) for s in sorted(INS_SYSTEMS)))
                rows = repo.find(conn, "Patient", token, limit=2, scope=repo.SYSTEM_SCOPE)
                found = rows[0].id if len(rows) == 1 else None
            self._own.append(found)
        return self._own[0]

    # -- decisions ------------------------------------------------------------------------------------
    def access(self, conn: Connection, key: str) -> Access | None:
        """The caller's standing in DMP `key` (None for '' and for a DMP that does not exist)."""
        if not key:
            return None
        if key not in self._access:
            dmp = self.dmp(conn, key)
            if dmp is None:
                return None
            self._access[key] = policy.open_dmp(self.caller, dmp)
        return self._access[key]

    def require(self, conn: Connection, key: str) -> Access | None:
        """The standing in DMP `key`, or the 403 that refuses the whole DMP."""
        found = self.access(conn, key)
        if found is not None and found.refusal is not None:
            raise found.refusal
        return found

    def scope(self, access: Access | None) -> c.Criterion:
        return policy.scope(self.caller, access, self.matrix, self.now)

    def row_scope(self, conn: Connection, stored: Stored) -> c.Criterion:
        """The scope a read of `stored` is judged in; 403 when its whole DMP is closed to the caller."""
        return self.scope(self.require(conn, stored.patient_key))

    def search_dmp(self, conn: Connection, resource_type: str, criteria: c.Criterion) -> str | None:
        """The one DMP a search names (its patient key), '' when it names a DMP that does not exist, None
        when it names none; professionals must name one (400), patients only their own (403)."""
        caller = self.caller
        try:
            named = self._named_dmp(conn, resource_type, criteria)
        except FhirError:
            if caller.actor == "professional":
                raise
            named = None  # a system search may span DMPs; a patient's is confined to their own below
        if caller.actor in ("patient", "representative"):
            own = self.own_dmp(conn)
            if named is not None and named != own:
                raise FhirError.of(403, "forbidden", "This search names a DMP other than the one your token acts for")
            return own
        if named is None and caller.actor == "professional" and resource_type in DMP_TYPES:
            raise bad_request(f"A professional's {resource_type} search must name one patient (patient=, subject= "
                              "or patient.identifier=, identifier= or _id= for Patient): no cross-patient lists")
        return named

    def _named_dmp(self, conn: Connection, resource_type: str, criteria: c.Criterion) -> str | None:
        parts = c.conjuncts(criteria)
        keys: set[str] = set()
        for part in parts:
            if isinstance(part, c.PatientIs):
                keys.add(part.patient_key)
            elif isinstance(part, c.PatientMatches):
                keys.update(r.id for r in repo.find(conn, "Patient", part.inner, limit=2, scope=repo.SYSTEM_SCOPE))
                if not keys:
                    return ""
        naming = tuple(p for p in parts if _names_patient(p))
        if resource_type == "Patient" and naming:
            # by the naming terms alone: whether the rest matches must not decide between 403 and an empty page
            keys.update(r.id for r in repo.find(conn, "Patient", c.AllOf(naming), limit=2, scope=repo.SYSTEM_SCOPE))
            if not keys:
                return ""
        if len(keys) > 1:
            raise bad_request("This search names more than one DMP: name exactly one patient")
        return keys.pop() if keys else None

    # -- traces ---------------------------------------------------------------------------------------
    def touch(self, key: str, reference: str | None = None, query: str | None = None) -> None:
        entry = self.touched.setdefault(key, Touched())
        if reference and reference not in entry.references:
            entry.references.append(reference)
        if query is not None:
            entry.query = query


    def touch_rows(self, rows: list[Stored]) -> None:
        """Rows read from DMPs a request did not name: each DMP's patient sees the access in its own trail."""
        for row in rows:
            if row.patient_key:
                self.touch(row.patient_key, f"{row.resource_type}/{row.id}/_history/{row.version_id}")


def _names_patient(part: c.Criterion) -> bool:
    """`_id=` or `identifier=` on a Patient search: the DMP's existence check (TD0.2) or a direct lookup."""
    if isinstance(part, c.IdIn):
        return len(part.ids) == 1
    return isinstance(part, c.Token) and part.param == "identifier" and part.code is not None
