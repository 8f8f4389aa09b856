"""Unit tests of which DMP a lookup reaches (`fhir_dmp/policy/searches.py`): what criteria name (`naming`, on the
trees the search parser really builds), the one DMP each kind of caller may reach (`named_dmp`: 0, 1 or several
named), and the existence check (`lookup_access`: only a professional refused for want of standing, on a Patient
lookup by INS testing nothing but the identity it shows)."""

from __future__ import annotations

import pytest

from fhir_dmp.errors import FhirError
from fhir_dmp.policy.access import Access, open_dmp
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.consents import Dmp, Terms
from fhir_dmp.policy.searches import Naming, closed_to, lookup_access, named_dmp, naming
from fhir_dmp.search.parse import parse_query
from fhir_dmp.storage import criteria as c

INS = "urn:oid:1.2.250.1.213.1.4.8"
PRO = Caller("professional", "ps", profession="10")
PATIENT = Caller("patient", "pat", patient="111")
REPRESENTATIVE = Caller("representative", "rep", patient="111")
SYSTEM = Caller("system", "sys")


def criteria(resource_type: str, *pairs: tuple[str, str]) -> c.Criterion:
    return parse_query(resource_type, list(pairs), strict=True, default_count=10, max_count=100).criteria


def test_naming_by_patient_reference() -> None:
    assert naming("DocumentReference", criteria("DocumentReference", ("patient", "Patient/p1"),
                                                ("status", "current"))) == Naming(frozenset({"p1"}), ())


def test_naming_two_patients_in_one_parameter_names_none_directly() -> None:
    """`patient=a,b` is one OR: no single key every match shares (the professional is then asked for one)."""
    assert naming("DocumentReference", criteria("DocumentReference", ("patient", "Patient/p1,Patient/p2"))) == Naming(
        frozenset(), ())


def test_naming_two_patients_by_repetition_names_both() -> None:
    found = naming("DocumentReference", criteria("DocumentReference", ("patient", "Patient/p1"),
                                                 ("subject", "Patient/p2")))
    assert found.keys == frozenset({"p1", "p2"})


def test_naming_by_a_chain_on_the_patient() -> None:
    found = naming("DocumentReference", criteria("DocumentReference", ("patient.identifier", f"{INS}|111")))
    assert found.keys == frozenset()
    assert found.patient_criteria == (c.AllOf((c.TypeIs(("Patient",)), c.AnyOf((c.Token("identifier", INS, "111"),)))),)


@pytest.mark.parametrize(("pairs", "lookups"), [
    ((("identifier", f"{INS}|111"), ("family", "dupont")), (c.AllOf((c.Token("identifier", INS, "111"),)),)),
    ((("_id", "p1"),), (c.AllOf((c.IdIn(("p1",)),)),)),
    ((("_id", "p1,p2"),), ()),                      # two ids name no single DMP
    ((("family", "dupont"),), ()),
    ((("identifier", f"{INS}|"),), ()),             # a system without a value names nobody
])
def test_naming_on_a_patient_search(pairs: tuple[tuple[str, str], ...], lookups: tuple[c.Criterion, ...]) -> None:
    """A Patient search is resolved by its naming terms alone: the rest must not decide between 403 and empty."""
    assert naming("Patient", criteria("Patient", *pairs)) == Naming(frozenset(), lookups)


def test_naming_terms_count_only_on_patient_searches() -> None:
    assert naming("Practitioner", criteria("Practitioner", ("identifier", "x|1"))) == Naming(frozenset(), ())


NONE, ONE, MISSING, TWO = None, frozenset({"p1"}), frozenset(), frozenset({"p1", "p2"})


@pytest.mark.parametrize(("caller", "rtype", "found", "own", "expected"), [
    (PRO, "DocumentReference", ONE, None, "p1"),
    (PRO, "DocumentReference", MISSING, None, ""),      # names a DMP that does not exist
    (PRO, "Practitioner", NONE, None, None),            # outside any DMP: no patient needed
    (PRO, "AuditEvent", NONE, None, None),
    (PATIENT, "DocumentReference", NONE, "p1", "p1"),   # a patient's searches are in their DMP
    (PATIENT, "DocumentReference", ONE, "p1", "p1"),
    (PATIENT, "DocumentReference", TWO, "p1", "p1"),    # several: their own, the scope does the rest
    (REPRESENTATIVE, "Patient", ONE, "p1", "p1"),
    (SYSTEM, "DocumentReference", NONE, None, None),    # a system may span DMPs
    (SYSTEM, "DocumentReference", ONE, None, "p1"),
    (SYSTEM, "DocumentReference", TWO, None, None),
    (SYSTEM, "DocumentReference", MISSING, None, ""),
])
def test_named_dmp(caller: Caller, rtype: str, found: frozenset[str] | None, own: str | None,
                   expected: str | None) -> None:
    assert named_dmp(caller, rtype, found, own) == expected


@pytest.mark.parametrize(("caller", "rtype", "found", "own", "status"), [
    (PRO, "DocumentReference", NONE, None, 400),       # no cross-patient lists
    (PRO, "Patient", NONE, None, 400),
    (PRO, "Observation", NONE, None, 400),             # a VSM entry is in a DMP too
    (PRO, "DocumentReference", TWO, None, 400),
    (PRO, "Practitioner", TWO, None, 400),
    (PATIENT, "DocumentReference", frozenset({"p2"}), "p1", 403),
    (PATIENT, "DocumentReference", MISSING, "p1", 403),
    (REPRESENTATIVE, "Consent", frozenset({"p2"}), "p1", 403),
])
def test_named_dmp_refusals(caller: Caller, rtype: str, found: frozenset[str] | None, own: str | None,
                            status: int) -> None:
    with pytest.raises(FhirError) as caught:
        named_dmp(caller, rtype, found, own)
    assert caught.value.status == status


def dmp(*found: Terms, active: bool = True) -> Dmp:
    return Dmp("p1", active, frozenset({"111"}), frozenset({"treating"}), tuple(found))


BLOCKED = dmp(Terms(False, frozenset({"ps"}), frozenset(), frozenset(), frozenset()))
IDENTITY = criteria("Patient", ("identifier", f"{INS}|111"), ("birthdate", "1980"))
MORE = criteria("Patient", ("identifier", f"{INS}|111"), ("_has:DocumentReference:patient:type", "11488-4"))


def test_lookup_access_passes_an_open_standing_through() -> None:
    assert lookup_access(PRO, None, "Patient", IDENTITY) is None
    access = open_dmp(Caller("professional", "treating", profession="10"), dmp())
    assert lookup_access(PRO, access, "DocumentReference", MORE) is access


@pytest.mark.parametrize("the_dmp", [dmp(), dmp(active=False)], ids=["not authorised", "closed"])
def test_existence_check_for_a_professional_without_standing(the_dmp: Dmp) -> None:
    refused = open_dmp(PRO, the_dmp)
    assert lookup_access(PRO, refused, "Patient", IDENTITY) == Access("identity", "p1")
    assert closed_to(refused) is refused.refusal


@pytest.mark.parametrize(("caller", "the_dmp", "rtype", "query"), [
    (PRO, dmp(), "Patient", MORE),                     # tests more than the identity it would show
    (PRO, dmp(), "DocumentReference", IDENTITY),       # only a Patient lookup
    (PRO, BLOCKED, "Patient", IDENTITY),               # a block refuses even the check
    (Caller("patient", "x", patient="222"), dmp(), "Patient", IDENTITY),  # patients have no existence check
])
def test_other_refusals_are_the_dmps_403(caller: Caller, the_dmp: Dmp, rtype: str, query: c.Criterion) -> None:
    refused = open_dmp(caller, the_dmp)
    with pytest.raises(FhirError) as caught:
        lookup_access(caller, refused, rtype, query)
    assert caught.value is refused.refusal and caught.value.status == 403


def test_closed_to_an_open_standing_is_none() -> None:
    assert closed_to(None) is None
    assert closed_to(open_dmp(PATIENT, dmp())) is None
