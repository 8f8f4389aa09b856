"""Who may open which DMP, and what they see inside it (dmp-reference.md 6): the access scope.

`open_dmp` decides at the DMP level (403 refusals); `scope` turns the decision into one criterion over the
rows' access facts, which the search engine ANDs into its single statement (and reads test on their row),
so a resource the caller may not see is absent everywhere: pages, counts, includes, chains, history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from fhir_dmp.errors import FhirError, forbidden
from fhir_dmp.policy import labels, lists
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp
from fhir_dmp.policy.facts import DOCUMENT_TYPES, owner_key
from fhir_dmp.policy.habilitation import HabilitationMatrix
from fhir_dmp.storage import criteria as c

SYSTEM_SCOPE: c.Criterion = c.AllOf(())
PUBLIC_TYPES = ("Organization", "Practitioner", "PractitionerRole")  # outside any DMP, open to every caller
DMP_RECORDS = ("Patient", "List")  # inside a DMP, open to whoever opens the DMP
MEDECIN = "10"
IDENTITY_ELEMENTS = ("identifier", "name", "gender", "birthDate", "active")  # all the existence check shows
# The search parameters an existence check may use: on the identity it shows, so that it is no oracle on the rest.
IDENTITY_PARAMS = frozenset({"identifier", "name", "family", "given", "gender", "birthdate", "active"})


@dataclass(frozen=True)
class Access:
    """A caller's standing in one DMP. `kind`: system, patient, representative, professional (authorised
    or médecin traitant), emergency, identity (the existence check only) or none (`refusal` says why)."""

    kind: str
    dmp: str | None = None
    treating: bool = False
    sees_masked: bool = False
    refusal: FhirError | None = None
    blocked: bool = False  # refused by the patient's block: not even the existence check

    @property
    def may_check_existence(self) -> bool:
        """6.3: a professional refused for want of standing (or a closed DMP) may still ask whether the DMP
        exists; a blocked one may not (a block refuses everything)."""
        return self.kind == "none" and not self.blocked

    @property
    def is_open(self) -> bool:
        return self.refusal is None and self.kind != "identity"


def identity_only(criteria: c.Criterion) -> bool:
    """Whether a Patient search names its DMP by INS and tests nothing but the identity it would show."""
    terms = c.conjuncts(criteria)

    def on_identity(term: c.Criterion) -> bool:
        match term:
            case c.Token(param) | c.String(param) | c.DateRange(param) | c.Missing(param, _, _):
                return param in IDENTITY_PARAMS
            case c.IdIn() | c.TypeIs():
                return True
            case c.AnyOf(parts) | c.AllOf(parts):
                return all(on_identity(p) for p in parts)
            case c.Not(part):
                return on_identity(part)
        return False

    return (any(isinstance(t, c.Token) and t.param == "identifier" and t.code for t in terms)
            and all(on_identity(t) for t in terms))


def open_dmp(caller: Caller, dmp: Dmp) -> Access:
    """The caller's standing in `dmp`, in the order of 6.1 to 6.7 (refused actors were turned away before)."""
    if caller.is_system:
        return Access("system", dmp.key)
    if caller.actor in ("patient", "representative"):
        if not caller.patient or caller.patient not in dmp.ins:
            return Access("none", dmp.key, refusal=forbidden("This DMP is not the one your token acts for"))
        return Access(caller.actor, dmp.key)
    ps = caller.sub
    if not dmp.active:
        return Access("none", dmp.key, refusal=forbidden("This DMP is closed"), blocked=dmp.blocks(ps))
    if dmp.blocks(ps):
        return Access("none", dmp.key, refusal=forbidden("The patient has blocked your access to this DMP"),
                      blocked=True)
    treating = ps in dmp.treating
    if treating or dmp.authorises(ps):
        return Access("professional", dmp.key, treating, treating or dmp.grants_masked(ps))
    purpose = caller.purpose_of_use
    if purpose == "ETREAT" and caller.profession != MEDECIN:
        return Access("none", dmp.key, refusal=forbidden(
            "Emergency regulation access (ETREAT) is for médecins (profession 10)"))
    if purpose in ("ETREAT", "BTG"):
        if dmp.opposes(purpose):
            return Access("none", dmp.key, refusal=forbidden(f"The patient opposed emergency access ({purpose})"))
        # 6.5: a personal MASQUE_PS grant belongs to the professional, whatever mode opened the DMP; the
        # emergency permit (purpose ETREAT/BTG, MASQUE_PS) opens masked documents to anyone in that mode.
        return Access("emergency", dmp.key, sees_masked=dmp.grants_masked(ps) or dmp.emergency_sees_masked(purpose))
    return Access("none", dmp.key, refusal=not_authorised())


def not_authorised() -> FhirError:
    """The 403 of a professional without standing in a DMP (and, where existence is not theirs to learn that way,
    of a DMP that does not exist: the same words)."""
    return forbidden(
        "You are not authorised on this DMP: the patient must authorise you first (a Consent permit naming you)")


def feeding_refusal(caller: Caller, dmp: Dmp) -> FhirError | None:
    """6.9: any professional may add to an open DMP unless blocked or opposed; patients act on their own."""
    if caller.is_system:
        return None
    if caller.actor in ("patient", "representative"):
        return open_dmp(caller, dmp).refusal
    if not dmp.active:
        return forbidden("This DMP is closed: it cannot be fed")
    if dmp.blocks(caller.sub):
        return forbidden("The patient has blocked your access to this DMP")
    if dmp.opposes_feeding(caller.sub):
        return forbidden("The patient opposed, for a legitimate reason, your feeding of this DMP")
    return None


def scope(caller: Caller, access: Access | None, matrix: HabilitationMatrix, now: datetime) -> c.Criterion:
    """Everything `caller` may see: rows outside any DMP that are public or theirs, their own traces, and
    inside the DMP of `access` (if open) what 6.3 to 6.8 let them see."""
    return scope_many(caller, [access] if access is not None else [], matrix, now)


def scope_many(caller: Caller, accesses: list[Access], matrix: HabilitationMatrix, now: datetime) -> c.Criterion:
    """`scope` over several DMPs at once (a conditional operation naming no patient may match in any DMP the
    caller opens): each DMP's rows as that DMP's standing lets the caller see them, nothing of the others."""
    if caller.is_system:
        return SYSTEM_SCOPE
    mine = c.OwnerIs(owner_key(caller))
    parts: list[c.Criterion] = [
        c.AllOf((c.PatientIs(""), c.AnyOf((c.TypeIs(PUBLIC_TYPES), mine)))),
        c.AllOf((c.TypeIs(("AuditEvent",)), mine)),
    ]
    naming: list[c.Criterion] = []  # per DMP, its rows of the types that name others (Lists), as `inside` sees them
    for access in accesses:
        if access.dmp is not None:
            inside = _inside(caller, access, matrix, now, mine)
            if inside is None:
                continue
            if narrow(inside, _NAMING.types[0]) == _FALSE:  # the existence check: no List to see
                parts.append(c.AllOf((c.PatientIs(access.dmp), inside)))
                continue
            parts.append(c.AllOf((c.PatientIs(access.dmp), c.Not(_NAMING), inside)))
            naming.append(c.AllOf((c.PatientIs(access.dmp), _NAMING, inside)))
    if not naming:
        return c.AnyOf(tuple(parts))
    # a List is seen when it names something the rest of the scope shows (or nothing local): one that names only
    # hidden documents would tell that they were filed, when and by whom (policy/lists.py)
    seen = c.AnyOf(tuple(parts))  # once, whatever the number of DMPs (a condition may span many)
    return c.AnyOf((*parts, c.AllOf((c.AnyOf(tuple(naming)), lists.naming_seen(seen, mine)))))


_NAMING = c.TypeIs(tuple(sorted(lists.SHOWN_REFERENCES)))


def named_scope(scope: c.Criterion) -> c.Criterion:
    """`scope` for the resources a List names (its items): without the rule of the Lists themselves (an item that
    is a List counts as hidden), so that the SQL judging items does not nest a List's rule in itself."""
    try:
        return _without_naming(scope)
    except TypeError:  # a criterion holding an unhashable value
        return _without_naming.__wrapped__(scope)


@lru_cache(maxsize=4096)
def _without_naming(scope: c.Criterion) -> c.Criterion:
    return _decided(scope, lambda term: _FALSE if term == _NAMING else None)


def _inside(caller: Caller, access: Access, matrix: HabilitationMatrix, now: datetime,
            mine: c.Criterion) -> c.Criterion | None:
    documents = c.TypeIs(tuple(sorted(DOCUMENT_TYPES)))
    if access.kind == "identity":
        return c.TypeIs(("Patient",))
    if access.kind in ("patient", "representative"):
        labelled = c.TypeIs(tuple(sorted(DOCUMENT_TYPES | {"AuditEvent"})))  # a trace hides as what it names
        seen = c.AnyOf((mine, c.Not(labelled), c.LabelsClear(labels.INVISIBLE_PATIENT),
                        c.DocDateBefore(one_month_before(now))))
        if access.kind == "representative":
            seen = c.AllOf((seen, c.AnyOf((mine, c.LabelsClear(labels.INVISIBLE_REPRESENTANTS_LEGAUX)))))
        return seen
    if access.kind not in ("professional", "emergency") or access.refusal is not None:
        return None
    habilitated = [_habilitated_types(matrix, caller)]
    if not access.sees_masked:
        habilitated.append(c.LabelsClear(labels.MASQUE_PS))
    return c.AnyOf((
        c.TypeIs(DMP_RECORDS),
        c.AllOf((documents, c.AnyOf((mine, c.AllOf(tuple(habilitated)))))),
        c.AllOf((c.TypeIs(("Consent", "Communication")), mine)),
        c.AllOf((c.TypeIs(("AuditEvent",)), _treating_traces(access) if access.treating else mine)),
    ))


def _treating_traces(access: Access) -> c.Criterion:
    """The médecin traitant reads the DMP's traces, except those naming a document masked from them."""
    return c.AllOf(()) if access.sees_masked else c.LabelsClear(labels.MASQUE_PS)


def _habilitated_types(matrix: HabilitationMatrix, caller: Caller) -> c.Criterion:
    """The matrix's allowed types as the shorter SQL list: `IN (allowed)`, or `NOT IN (denied)` for those who
    see nearly everything (médecins). Equivalent because a row's type is '' or a known DMP type (facts.py)."""
    allowed = {code for _, code in matrix.visible_types(caller.profession, caller.specialty)}
    denied = set(matrix.codes.types) - allowed
    if len(denied) < len(allowed):
        return c.AllOf((c.Not(c.DocTypeIn(tuple(sorted(denied | {""})))),))
    return c.DocTypeIn(tuple(sorted(allowed)))


def one_month_before(now: datetime) -> datetime:
    """The same day of the previous month (the last day when it has fewer days)."""
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31,
            30, 31][month - 1]
    return now.replace(year=year, month=month, day=min(now.day, days))


def confine(criterion: c.Criterion, scope: c.Criterion, resource_type: str | None = None) -> c.Criterion:
    """The search criteria (on rows of `resource_type`) with `scope` applied to every resource they reach through
    chains, `_has` and the patient: a chain must not find a row through a resource the caller may not see; nor a
    reference the shown resource leaves out (a List's `item`, policy/lists.py)."""
    match criterion:
        case c.Chain(param, types, inner):
            reached = narrow_to(scope, types) if types else scope
            inner_type = types[0] if len(types) == 1 else None
            return c.Chain(param, types, c.AllOf((confine(inner, scope, inner_type), reached)))
        case c.Has(source, param, inner):
            return c.Has(source, param, c.AllOf((confine(inner, scope, source), narrow(scope, source))))
        case c.PatientMatches(inner):
            return c.PatientMatches(c.AllOf((confine(inner, scope, "Patient"), narrow(scope, "Patient"))))
        case c.Not(part):
            return c.Not(confine(part, scope, resource_type))
        case c.AnyOf(parts):
            return c.AnyOf(tuple(confine(p, scope, resource_type) for p in parts))
        case c.AllOf(parts):
            # a chain's branch per target type is AllOf(TypeIs((type,)), its criteria): they are on that type
            typed = parts[0].types[0] if parts and isinstance(parts[0], c.TypeIs) and len(parts[0].types) == 1 \
                else resource_type
            return c.AllOf(tuple(confine(p, scope, typed) for p in parts))
    return lists.reaching(criterion, resource_type, named_scope(scope))


def sees_patient(scope: c.Criterion, key: str) -> bool:
    """Whether `scope` shows the Patient of DMP `key` whatever its row's facts (its `PatientIs` terms and types
    decided): then a chain on that patient may be replaced by the DMP's key. False when unsure."""
    def on_key(term: c.Criterion) -> c.Criterion | None:
        return (_TRUE if term.patient_key == key else _FALSE) if isinstance(term, c.PatientIs) else None
    return _decided(narrow(scope, "Patient"), on_key) == _TRUE


def narrow_to(criterion: c.Criterion, types: tuple[str, ...]) -> c.Criterion:
    """`criterion` for rows of any of `types` (each type's own rules, ORed with the type test)."""
    if len(types) == 1:
        return narrow(criterion, types[0])
    return c.AnyOf(tuple(c.AllOf((c.TypeIs((t,)), narrow(criterion, t))) for t in types))


_TRUE: c.Criterion = c.AllOf(())
_FALSE: c.Criterion = c.AnyOf(())


def narrow(criterion: c.Criterion, resource_type: str) -> c.Criterion:
    """`criterion` for rows of one type only (`_narrow`), worked out once per criterion and type: a caller's
    scope recurs on every request they make."""
    try:
        return _narrow_once(criterion, resource_type)
    except TypeError:  # a criterion holding an unhashable value
        return _narrow(criterion, resource_type)


@lru_cache(maxsize=4096)
def _narrow_once(criterion: c.Criterion, resource_type: str) -> c.Criterion:
    return _narrow(criterion, resource_type)


def _narrow(criterion: c.Criterion, resource_type: str) -> c.Criterion:
    """`criterion` for rows of one type only: its TypeIs terms decided, dead branches dropped, so a
    search's statement carries just the rules of the type it searches (measured: a smaller clause is
    cheaper to build and to plan)."""
    return _decided(criterion, lambda term: (_TRUE if resource_type in term.types else _FALSE)
                    if isinstance(term, c.TypeIs) else None)


def _decided(criterion: c.Criterion, decide: Callable[[c.Criterion], c.Criterion | None]) -> c.Criterion:
    """`criterion` with the terms `decide` settles (to `_TRUE` or `_FALSE`; None: left as it is) replaced and the
    branches they kill dropped, a one-term AllOf or AnyOf unwrapped."""
    settled = decide(criterion)
    if settled is not None:
        return settled
    match criterion:
        case c.Not(part):
            inner = _decided(part, decide)
            return _FALSE if inner == _TRUE else _TRUE if inner == _FALSE else c.Not(inner)
        case c.AllOf(parts):
            kept = [p for p in (_decided(p, decide) for p in parts) if p != _TRUE]
            if _FALSE in kept:
                return _FALSE
            return kept[0] if len(kept) == 1 else c.AllOf(tuple(kept))
        case c.AnyOf(parts):
            kept = [p for p in (_decided(p, decide) for p in parts) if p != _FALSE]
            if _TRUE in kept:
                return _TRUE
            return kept[0] if len(kept) == 1 else c.AnyOf(tuple(kept))
    return criterion
