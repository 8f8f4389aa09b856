"""The DMP facts row (`fhir_dmp/policy/consents.py`): what `facts_of` stores of a Patient and its Consents must
give, through `dmp_from_facts` at any instant, exactly the `Dmp` that `dmp_of` computes from the resources
themselves at that instant, periods included: a read decides from the stored row, so any difference is an access
decision the patient did not make. Hypothesis draws Patients and Consents from the shapes the policy reads
(and malformed ones), with periods of every precision and zone, including instants at the ends of the calendar."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from fhir_dmp.policy.consents import (
    IDNATPS,
    PARTICIPATION,
    PRCP,
    Terms,
    authorisation,
    dmp_from_facts,
    dmp_of,
    facts_of,
)
from fhir_dmp.policy.facts import moment

PS = st.sampled_from(["ps1", "ps2", "ps3"])
INS_SYSTEMS = st.sampled_from(["urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.10", "urn:oid:9.9"])


@st.composite
def instants(draw: st.DrawFn) -> str:
    """A FHIR date or dateTime at any precision and zone, edge years included, or something unreadable."""
    year = draw(st.sampled_from([1, 2023, 2024, 2025, 9999]))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    form = draw(st.sampled_from(["date", "local", "Z", "zone", "garbage"]))
    if form == "date":
        return f"{year:04d}-{month:02d}-{day:02d}"
    if form == "garbage":
        return draw(st.sampled_from(["", "soon", "2024-13-01", "2024-02-30T00:00:00Z", "2024-01-01T25:00:00",
                                             "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-12:00"]))
    time = f"{year:04d}-{month:02d}-{day:02d}T{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:00"
    if form == "local":
        return time
    if form == "Z":
        return time + "Z"
    return time + draw(st.sampled_from(["+01:00", "-05:00", "+14:00", "-12:00"]))


def codings(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict]]:
    return st.lists(values.map(lambda code: {"code": code}), max_size=2)


@st.composite
def consents(draw: st.DrawFn) -> dict:
    provision: dict = {"type": draw(st.sampled_from(["permit", "deny", "other", None]))}
    provision["actor"] = [
        {"role": {"coding": [{"system": PARTICIPATION, "code": draw(st.sampled_from([PRCP, "INF"]))}]},
         "reference": {"identifier": {"system": IDNATPS, "value": ps}}}
        for ps in draw(st.lists(PS, max_size=2))]
    provision["purpose"] = draw(codings(st.sampled_from(["TREAT", "ETREAT", "BTG"])))
    provision["action"] = [{"coding": c} for c in draw(st.lists(codings(st.sampled_from(["access", "collect"])),
                                                                  max_size=2))]
    provision["securityLabel"] = draw(codings(st.sampled_from(["MASQUE_PS", "N"])))
    period = draw(st.one_of(st.none(), st.just("not a period"), st.fixed_dictionaries(
        {}, optional={"start": instants(), "end": instants(), "extension": st.just([{"url": "x"}])})))
    if period is not None:
        provision["period"] = period
    consent = {"resourceType": "Consent", "status": draw(st.sampled_from(["active", "active", "inactive"]))}
    consent["provision"] = provision if draw(st.integers(0, 9)) else "not a provision"
    return consent


@st.composite
def patients(draw: st.DrawFn) -> dict:
    patient: dict = {"resourceType": "Patient", "id": draw(st.sampled_from(["p1", "p2"]))}
    active = draw(st.sampled_from([None, True, False]))
    if active is not None:
        patient["active"] = active
    patient["identifier"] = [{"system": s, "value": v} for s, v in draw(st.lists(
        st.tuples(INS_SYSTEMS, st.sampled_from(["1", "2"])), max_size=3))]
    patient["generalPractitioner"] = [{"identifier": {"system": IDNATPS, "value": ps}}
                                      for ps in draw(st.lists(PS, max_size=2))]
    return patient


NOW = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))


@given(patients(), st.lists(consents(), max_size=5), st.one_of(NOW, instants().map(moment).filter(bool)))
def test_stored_facts_decide_as_the_resources_do(patient: dict, found: list[dict], now: datetime) -> None:
    assert dmp_from_facts(facts_of(patient, found), now) == dmp_of(patient, found, now)


@given(patients(), st.lists(consents(), max_size=5), NOW)
def test_the_facts_text_is_canonical(patient: dict, found: list[dict], now: datetime) -> None:
    """The same resources always give the same text (it is compared to decide whether the row must be rewritten)."""
    reordered = {**patient, "identifier": list(reversed(patient["identifier"]))}
    assert facts_of(patient, found) == facts_of(reordered, found)


def test_a_period_decides_at_the_instant_of_the_read() -> None:
    consent = authorisation("p1", "ps1")
    consent["provision"]["period"] = {"start": "2024-01-01", "end": "2024-02-01T00:00:00+01:00"}
    facts = facts_of({"id": "p1"}, [consent])
    assert not dmp_from_facts(facts, datetime(2023, 12, 31, 23, 59)).authorises("ps1")
    assert dmp_from_facts(facts, datetime(2024, 1, 1)).authorises("ps1")              # start is inclusive
    assert dmp_from_facts(facts, datetime(2024, 1, 31, 22, 59)).authorises("ps1")
    assert not dmp_from_facts(facts, datetime(2024, 1, 31, 23, 0)).authorises("ps1")  # end (UTC) is exclusive


def test_instants_beyond_the_calendar_in_utc_are_unreadable_not_a_crash() -> None:
    """Year 1 at +01:00 and year 9999 at -05:00 fall outside `datetime` once in UTC: before the fix, `moment`
    raised OverflowError and every read of that DMP was a 500."""
    assert moment("0001-01-01T00:00:00+01:00") is None
    assert moment("9999-12-31T23:00:00-05:00") is None
    consent = authorisation("p1", "ps1")
    consent["provision"]["period"] = {"end": "9999-12-31T23:00:00-05:00"}
    assert dmp_of({"id": "p1"}, [consent], datetime(2024, 1, 1)).authorises("ps1")


def test_terms_meaning() -> None:
    """What each kind of provision means (the module docstring's list)."""
    def terms(permit: bool, actors: frozenset[str] = frozenset(), purposes: frozenset[str] = frozenset(),
              actions: frozenset[str] = frozenset(), labels: frozenset[str] = frozenset()) -> Terms:
        return Terms(permit, frozenset(actors), frozenset(purposes), frozenset(actions), frozenset(labels))

    assert terms(True, {"a"}).is_authorisation and terms(True, {"a"}, {"TREAT"}, {"access"}).is_authorisation
    assert not terms(True, {"a"}, labels={"MASQUE_PS"}).is_authorisation      # a masked grant only
    assert not terms(True, {"a"}, {"BTG"}).is_authorisation
    assert not terms(True).is_authorisation                                    # nobody named
    assert terms(False, {"a"}).is_block and terms(False, {"a"}, actions={"access"}).is_block
    assert not terms(False, {"a"}, actions={"collect"}).is_block              # a feeding opposition
    assert not terms(False, {"a"}, {"ETREAT"}).is_block                       # an emergency opposition
    assert not terms(False).is_block


def test_an_unreadable_now_range_is_not_a_bound() -> None:
    consent = authorisation("p1", "ps1")
    consent["provision"]["period"] = {"start": "soon"}
    assert dmp_of({"id": "p1"}, [consent], datetime(2024, 1, 1) - timedelta(days=1)).authorises("ps1")
