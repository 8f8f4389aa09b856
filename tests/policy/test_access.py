"""Unit tests of the access decisions (`fhir_dmp/policy/access.py`), without a database: `open_dmp` for each kind
of caller against each state of a DMP (closed, blocked, authorised, médecin traitant, emergency modes with and
without the patient's opposition, masked grants), the shape of the scope it becomes, and the criterion rewrites
(`narrow`, `confine`, `identity_only`). The HTTP table (test_access_table.py) checks the same rules end to end."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_dmp.config import project_dir
from fhir_dmp.policy import labels, lists
from fhir_dmp.policy.access import (
    SYSTEM_SCOPE,
    Access,
    confine,
    feeding_refusal,
    identity_only,
    narrow,
    narrow_to,
    one_month_before,
    open_dmp,
    scope,
    scope_many,
)
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp, Terms
from fhir_dmp.policy.habilitation import HabilitationMatrix, load_matrix
from fhir_dmp.storage import criteria as c

INS = "urn:oid:1.2.250.1.213.1.4.8"
NOW = datetime(2024, 3, 31, 12)


def terms(permit: bool, actors: tuple[str, ...] = (), purposes: tuple[str, ...] = (), actions: tuple[str, ...] = (),
          labels_: tuple[str, ...] = ()) -> Terms:
    return Terms(permit, frozenset(actors), frozenset(purposes), frozenset(actions), frozenset(labels_))


AUTH = terms(True, ("auth",))
BLOCK = terms(False, ("blocked",))
MASKED = terms(True, ("auth", "granted"), labels_=("MASQUE_PS",))
OPPOSE_ETREAT = terms(False, purposes=("ETREAT",))
OPPOSE_BTG = terms(False, purposes=("BTG",))
BTG_MASKED = terms(True, purposes=("BTG",), labels_=("MASQUE_PS",))
FEEDING = terms(False, ("feeder",), actions=("collect",))


def dmp(*found: Terms, active: bool = True) -> Dmp:
    """DMP p1 of INS 111, médecin traitant `treating`, with the patient's choices `found`."""
    return Dmp("p1", active, frozenset({"111"}), frozenset({"treating"}), tuple(found))


def ps(sub: str, purpose: str = "TREAT", profession: str = "10") -> Caller:
    return Caller("professional", sub, profession=profession, purpose_of_use=purpose)


SYSTEM = Caller("system", "sys")
PATIENT = Caller("patient", "pat", patient="111")
REPRESENTATIVE = Caller("representative", "rep", patient="111")

# caller, DMP -> (kind, treating, sees masked, refused, blocked)
CASES: list[tuple[str, Caller, Dmp, tuple[str, bool, bool, bool, bool]]] = [
    ("system, closed DMP", SYSTEM, dmp(active=False), ("system", False, False, False, False)),
    ("patient", PATIENT, dmp(), ("patient", False, False, False, False)),
    ("patient, closed DMP", PATIENT, dmp(active=False), ("patient", False, False, False, False)),
    ("representative", REPRESENTATIVE, dmp(), ("representative", False, False, False, False)),
    ("patient of another DMP", Caller("patient", "x", patient="222"), dmp(), ("none", False, False, True, False)),
    ("patient token without INS", Caller("patient", "x"), dmp(), ("none", False, False, True, False)),
    ("médecin traitant", ps("treating"), dmp(), ("professional", True, True, False, False)),
    ("authorised", ps("auth"), dmp(AUTH), ("professional", False, False, False, False)),
    ("authorised with a masked grant", ps("auth"), dmp(AUTH, MASKED), ("professional", False, True, False, False)),
    ("masked grant alone is no authorisation", ps("granted"), dmp(MASKED), ("none", False, False, True, False)),
    ("authorised in emergency mode: authorised", ps("auth", "BTG"), dmp(AUTH, OPPOSE_BTG),
     ("professional", False, False, False, False)),
    ("stranger", ps("stranger"), dmp(AUTH), ("none", False, False, True, False)),
    ("closed DMP", ps("treating"), dmp(active=False), ("none", False, False, True, False)),
    ("closed DMP, blocked", ps("blocked"), dmp(BLOCK, active=False), ("none", False, False, True, True)),
    ("blocked", ps("blocked"), dmp(BLOCK), ("none", False, False, True, True)),
    ("blocked médecin traitant", ps("treating"), dmp(terms(False, ("treating",))), ("none", False, False, True, True)),
    ("blocked though authorised", ps("blocked"), dmp(terms(True, ("blocked",)), BLOCK),
     ("none", False, False, True, True)),
    ("feeding opposition is no block", ps("feeder"), dmp(FEEDING), ("none", False, False, True, False)),
    ("ETREAT médecin", ps("x", "ETREAT"), dmp(), ("emergency", False, False, False, False)),
    ("ETREAT not a médecin", ps("x", "ETREAT", "21"), dmp(), ("none", False, False, True, False)),
    ("ETREAT opposed", ps("x", "ETREAT"), dmp(OPPOSE_ETREAT), ("none", False, False, True, False)),
    ("ETREAT, BTG opposed", ps("x", "ETREAT"), dmp(OPPOSE_BTG), ("emergency", False, False, False, False)),
    ("BTG pharmacien", ps("x", "BTG", "21"), dmp(OPPOSE_ETREAT), ("emergency", False, False, False, False)),
    ("BTG opposed", ps("x", "BTG"), dmp(OPPOSE_BTG), ("none", False, False, True, False)),
    ("BTG, masked permit in BTG", ps("x", "BTG"), dmp(BTG_MASKED), ("emergency", False, True, False, False)),
    ("ETREAT, masked permit in BTG only", ps("x", "ETREAT"), dmp(BTG_MASKED),
     ("emergency", False, False, False, False)),
    ("ETREAT, personal masked grant", ps("granted", "ETREAT"), dmp(MASKED), ("emergency", False, True, False, False)),
    ("blocked in emergency", ps("blocked", "BTG"), dmp(BLOCK), ("none", False, False, True, True)),
]


@pytest.mark.parametrize(("caller", "the_dmp", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_open_dmp(caller: Caller, the_dmp: Dmp, expected: tuple[str, bool, bool, bool, bool]) -> None:
    access = open_dmp(caller, the_dmp)
    kind, treating, sees_masked, refused, blocked = expected
    assert (access.kind, access.dmp, access.treating, access.sees_masked) == (kind, "p1", treating, sees_masked)
    assert (access.refusal is not None, access.blocked) == (refused, blocked)
    if refused:
        assert access.refusal is not None and access.refusal.status == 403
        assert not access.is_open and access.may_check_existence == (not blocked)
    else:
        assert access.is_open and not access.may_check_existence


@pytest.mark.parametrize(("caller", "the_dmp", "refused"), [
    (SYSTEM, dmp(active=False), False),
    (PATIENT, dmp(), False),
    (Caller("patient", "x", patient="222"), dmp(), True),
    (ps("stranger"), dmp(), False),        # any professional may feed an open DMP...
    (ps("treating"), dmp(active=False), True),
    (ps("blocked"), dmp(BLOCK), True),
    (ps("feeder"), dmp(FEEDING), True),    # ...unless opposed for a legitimate reason
    (ps("feeder"), dmp(OPPOSE_ETREAT), False),
])
def test_feeding_refusal(caller: Caller, the_dmp: Dmp, refused: bool) -> None:
    refusal = feeding_refusal(caller, the_dmp)
    assert (refusal is not None) == refused
    assert refusal is None or refusal.status == 403


# --- scopes ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def matrix() -> HabilitationMatrix:
    return load_matrix(project_dir() / "terminologies" / "habilitation-matrix.csv")


def flatten(node: c.Criterion) -> list[c.Criterion]:
    """Every node of a criterion tree (to ask whether a term occurs anywhere in a scope)."""
    match node:
        case c.AnyOf(parts) | c.AllOf(parts):
            return [node, *(n for p in parts for n in flatten(p))]
        case c.Not(part):
            return [node, *flatten(part)]
    return [node]


def test_system_scope_is_everything(matrix: HabilitationMatrix) -> None:
    assert scope(SYSTEM, Access("system", "p1"), matrix, NOW) == SYSTEM_SCOPE == c.AllOf(())


def test_without_a_dmp_only_public_rows_and_ones_own(matrix: HabilitationMatrix) -> None:
    mine = c.OwnerIs("professional|x")
    assert scope(ps("x"), None, matrix, NOW) == c.AnyOf((
        c.AllOf((c.PatientIs(""), c.AnyOf((c.TypeIs(("Organization", "Practitioner", "PractitionerRole")), mine)))),
        c.AllOf((c.TypeIs(("AuditEvent",)), mine)),
    ))


def test_a_refused_standing_adds_nothing(matrix: HabilitationMatrix) -> None:
    refused = open_dmp(ps("stranger"), dmp())
    assert scope(ps("stranger"), refused, matrix, NOW) == scope(ps("stranger"), None, matrix, NOW)


def test_identity_sees_the_patient_only(matrix: HabilitationMatrix) -> None:
    whole = scope(ps("x"), Access("identity", "p1"), matrix, NOW)
    assert isinstance(whole, c.AnyOf) and whole.parts[2] == c.AllOf((c.PatientIs("p1"), c.TypeIs(("Patient",))))


def inside(caller: Caller, access: Access, matrix: HabilitationMatrix) -> c.Criterion:
    """The part of the scope for the DMP of `access` (after the two parts outside any DMP; its Lists apart, in the
    last part: policy/lists.py)."""
    whole = scope(caller, access, matrix, NOW)
    assert isinstance(whole, c.AnyOf) and len(whole.parts) == 4
    part = whole.parts[2]
    assert isinstance(part, c.AllOf) and part.parts[:2] == (c.PatientIs(access.dmp or ""), c.Not(LIST))
    assert whole.parts[3] == lists_part(caller, [(access.dmp or "", part.parts[2])], c.AnyOf(whole.parts[:3]))
    return part.parts[2]


LIST = c.TypeIs(("List",))


def lists_part(caller: Caller, dmps: list[tuple[str, c.Criterion]], seen: c.Criterion) -> c.Criterion:
    """Lists: seen as the rest of their DMP's rows, when they name something the rest of the scope shows."""
    naming = c.AnyOf(tuple(c.AllOf((c.PatientIs(key), LIST, inner)) for key, inner in dmps))
    return c.AllOf((naming, lists.naming_seen(seen, c.OwnerIs(f"{caller.actor}|{caller.sub}"))))


def test_patient_scope(matrix: HabilitationMatrix) -> None:
    seen = inside(PATIENT, Access("patient", "p1"), matrix)
    assert c.LabelsClear(labels.INVISIBLE_PATIENT) in flatten(seen)
    assert c.DocDateBefore(datetime(2024, 2, 29, 12)) in flatten(seen)  # revealed a month after the date
    assert c.LabelsClear(labels.INVISIBLE_REPRESENTANTS_LEGAUX) not in flatten(seen)
    rep = inside(REPRESENTATIVE, Access("representative", "p1"), matrix)
    assert c.LabelsClear(labels.INVISIBLE_REPRESENTANTS_LEGAUX) in flatten(rep)
    assert c.OwnerIs("representative|rep") in flatten(rep)


@pytest.mark.parametrize(("access", "masked_hidden", "all_traces"), [
    (Access("professional", "p1"), True, False),
    (Access("professional", "p1", treating=True, sees_masked=True), False, True),
    (Access("professional", "p1", sees_masked=True), False, False),
    (Access("emergency", "p1"), True, False),
    (Access("emergency", "p1", sees_masked=True), False, False),
])
def test_professional_scope(matrix: HabilitationMatrix, access: Access, masked_hidden: bool,
                            all_traces: bool) -> None:
    nodes = flatten(inside(ps("x"), access, matrix))
    assert (c.LabelsClear(labels.MASQUE_PS) in nodes) == masked_hidden
    traces = c.AllOf((c.TypeIs(("AuditEvent",)), c.AllOf(()) if all_traces else c.OwnerIs("professional|x")))
    assert traces in nodes
    assert c.TypeIs(("Patient", "List")) in nodes


def test_habilitated_types_follow_the_matrix(matrix: HabilitationMatrix) -> None:
    """A médecin sees nearly every type: `NOT IN (denied, '')`; a pharmacien few: `IN (allowed)`."""
    medecin = flatten(inside(ps("x"), Access("professional", "p1"), matrix))
    assert any(isinstance(n, c.Not) and isinstance(n.part, c.DocTypeIn) and "" in n.part.codes for n in medecin)
    pharmacien = flatten(inside(ps("x", profession="21"), Access("professional", "p1"), matrix))
    allowed = [n for n in pharmacien if isinstance(n, c.DocTypeIn)]
    assert len(allowed) == 1 and "" not in allowed[0].codes
    assert set(allowed[0].codes) == {code for _, code in matrix.visible_types("21", None)}


def test_scope_many_keeps_each_dmp_to_its_standing(matrix: HabilitationMatrix) -> None:
    caller = ps("x")
    accesses = [Access("professional", "p1"), Access("identity", "p2"), open_dmp(caller, dmp())]
    whole = scope_many(caller, accesses, matrix, NOW)
    assert isinstance(whole, c.AnyOf) and len(whole.parts) == 5  # the refused one adds nothing
    p1 = inside(caller, accesses[0], matrix)
    assert whole.parts[2] == c.AllOf((c.PatientIs("p1"), c.Not(LIST), p1))
    assert whole.parts[3] == c.AllOf((c.PatientIs("p2"), c.TypeIs(("Patient",))))  # no List in an existence check
    assert whole.parts[4] == lists_part(caller, [("p1", p1)], c.AnyOf(whole.parts[:4]))
    assert scope_many(caller, [], matrix, NOW) == scope(caller, None, matrix, NOW)


@pytest.mark.parametrize(("now", "expected"), [
    (datetime(2024, 3, 31, 8), datetime(2024, 2, 29, 8)),   # leap year
    (datetime(2023, 3, 31), datetime(2023, 2, 28)),
    (datetime(1900, 3, 29), datetime(1900, 2, 28)),          # not a leap year
    (datetime(2000, 3, 30), datetime(2000, 2, 29)),          # a leap year
    (datetime(2024, 1, 15), datetime(2023, 12, 15)),
    (datetime(2024, 5, 31), datetime(2024, 4, 30)),
])
def test_one_month_before(now: datetime, expected: datetime) -> None:
    assert one_month_before(now) == expected


# --- narrow, confine, identity_only ---------------------------------------------------------------------------

TRUE, FALSE = c.AllOf(()), c.AnyOf(())
X, Y = c.OwnerIs("x"), c.OwnerIs("y")


@pytest.mark.parametrize(("node", "rtype", "expected"), [
    (c.TypeIs(("A", "B")), "A", TRUE),
    (c.TypeIs(("A",)), "C", FALSE),
    (c.Not(c.TypeIs(("A",))), "A", FALSE),
    (c.Not(c.TypeIs(("A",))), "B", TRUE),
    (c.Not(X), "A", c.Not(X)),
    (c.AllOf((c.TypeIs(("A",)), X)), "A", X),
    (c.AllOf((c.TypeIs(("A",)), X)), "B", FALSE),
    (c.AnyOf((c.AllOf((c.TypeIs(("A",)), X)), c.AllOf((c.TypeIs(("B",)), Y)))), "B", Y),
    (c.AnyOf((c.TypeIs(("A",)), X)), "A", TRUE),
    (c.AnyOf((c.TypeIs(("A",)), X, Y)), "B", c.AnyOf((X, Y))),
    (X, "A", X),
])
def test_narrow(node: c.Criterion, rtype: str, expected: c.Criterion) -> None:
    assert narrow(node, rtype) == expected


Row = tuple[str, str, int]  # type, owner, labels


def holds(node: c.Criterion, row: Row) -> bool:
    """A tiny evaluator of the terms `narrow` handles, over (type, owner, labels)."""
    match node:
        case c.TypeIs(types):
            return row[0] in types
        case c.OwnerIs(owner):
            return row[1] == owner
        case c.LabelsClear(mask):
            return row[2] & mask == 0
        case c.Not(part):
            return not holds(part, row)
        case c.AnyOf(parts):
            return any(holds(p, row) for p in parts)
        case c.AllOf(parts):
            return all(holds(p, row) for p in parts)
    raise TypeError(node)


TYPES = st.sampled_from(["A", "B", "C"])
LEAVES = st.one_of(st.lists(TYPES, min_size=1, max_size=2).map(lambda t: c.TypeIs(tuple(t))),
                   st.sampled_from(["x", "y"]).map(c.OwnerIs), st.integers(0, 3).map(c.LabelsClear))
TREES = st.recursive(LEAVES, lambda inner: st.one_of(
    inner.map(c.Not), st.lists(inner, max_size=3).map(lambda p: c.AnyOf(tuple(p))),
    st.lists(inner, max_size=3).map(lambda p: c.AllOf(tuple(p)))), max_leaves=8)
ROWS = st.tuples(TYPES, st.sampled_from(["x", "y"]), st.integers(0, 3))


@given(TREES, ROWS)
def test_narrow_keeps_the_meaning_for_rows_of_its_type(node: c.Criterion, row: Row) -> None:
    assert holds(narrow(node, row[0]), row) == holds(node, row)
    assert not any(isinstance(n, c.TypeIs) for n in flatten(narrow(node, row[0])))


@given(TREES, ROWS, st.lists(TYPES, min_size=1, max_size=3, unique=True))
def test_narrow_to_keeps_the_meaning_for_rows_of_its_types(node: c.Criterion, row: Row, types: list[str]) -> None:
    if row[0] in types:
        assert holds(narrow_to(node, tuple(types)), row) == holds(node, row)


SCOPE = c.AnyOf((c.AllOf((c.TypeIs(("Patient",)), X)), c.AllOf((c.TypeIs(("Observation",)), Y))))


def test_confine_scopes_every_resource_reached() -> None:
    leaf = c.Token("code", None, "1")
    assert confine(leaf, SCOPE) == leaf
    assert confine(c.Chain("subject", ("Patient",), leaf), SCOPE) == c.Chain("subject", ("Patient",),
                                                                             c.AllOf((leaf, X)))
    assert confine(c.Chain("subject", (), leaf), SCOPE) == c.Chain("subject", (), c.AllOf((leaf, SCOPE)))
    assert confine(c.Chain("subject", ("Patient", "Observation"), leaf), SCOPE) == c.Chain(
        "subject", ("Patient", "Observation"), c.AllOf((leaf, c.AnyOf((
            c.AllOf((c.TypeIs(("Patient",)), X)), c.AllOf((c.TypeIs(("Observation",)), Y)))))))
    assert confine(c.Has("Observation", "subject", leaf), SCOPE) == c.Has("Observation", "subject",
                                                                         c.AllOf((leaf, Y)))
    assert confine(c.PatientMatches(leaf), SCOPE) == c.PatientMatches(c.AllOf((leaf, X)))


def test_confine_reaches_through_logic_and_nested_chains() -> None:
    leaf = c.Token("code", None, "1")
    nested = c.Not(c.AnyOf((c.AllOf((c.Chain("subject", ("Patient",), c.Has("Observation", "subject", leaf)),)),)))
    assert confine(nested, SCOPE) == c.Not(c.AnyOf((c.AllOf((c.Chain("subject", ("Patient",), c.AllOf((
        c.Has("Observation", "subject", c.AllOf((leaf, Y))), X))),)),)))


IDENT = c.Token("identifier", INS, "111")


@pytest.mark.parametrize(("criteria", "expected"), [
    (c.AllOf((c.AnyOf((IDENT,)),)), True),
    (c.AllOf((IDENT, c.AnyOf((c.String("family", "dupont"),)), c.Token("gender", None, "male"),
              c.DateRange("birthdate", "eq", datetime(1980, 1, 1), datetime(1981, 1, 1)), c.IdIn(("p1",)))), True),
    (c.AllOf((IDENT, c.Not(c.String("name", "x")), c.Missing("gender", "token", True))), True),
    (c.AllOf((IDENT, c.String("address-city", "paris"))), False),     # not what the check shows
    (c.AllOf((IDENT, c.Has("Observation", "subject", c.AllOf(())))), False),
    (c.AllOf((IDENT, c.Chain("general-practitioner", (), c.AllOf(())))), False),
    (c.AllOf((IDENT, c.DateRange("_lastUpdated", "eq", datetime(2024, 1, 1), datetime(2024, 1, 2)))), False),
    (c.AllOf((c.Token("identifier", INS, None),)), False),            # names no patient
    (c.AllOf((c.String("family", "dupont"),)), False),                # no INS at all
    (c.AllOf((c.AnyOf((IDENT, c.Token("identifier", INS, "222"))),)), False),  # two patients: not one DMP
])
def test_identity_only(criteria: c.Criterion, expected: bool) -> None:
    assert identity_only(criteria) == expected
