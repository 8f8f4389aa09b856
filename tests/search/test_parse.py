"""Unit tests of the search parser (`fhir_dmp/search/parse.py`): query string pairs -> criteria tree and result
parameters, without HTTP or a database. The HTTP tests (test_params, test_results) check what the answers
contain; these pin the tree each R4 form becomes, so that a change of meaning shows up here first."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from fhir_dmp.errors import FhirError
from fhir_dmp.search.parse import Include, SearchQuery, SortKey, parse_criteria, parse_query, split_or
from fhir_dmp.storage import criteria as c

BASE = "https://dmp.example/fhir"


def query(resource_type: str, *pairs: tuple[str, str], strict: bool = True, max_count: int = 100) -> SearchQuery:
    """Parse with the server's usual bounds (default 20, at most `max_count`)."""
    return parse_query(resource_type, list(pairs), strict=strict, default_count=20, max_count=max_count,
                       base_url=BASE)


def only(resource_type: str, name: str, value: str) -> c.Criterion:
    """The one criterion a single parameter becomes (the top AllOf unwrapped)."""
    parsed = query(resource_type, (name, value)).criteria
    assert isinstance(parsed, c.AllOf) and len(parsed.parts) == 1
    return parsed.parts[0]


def refused(resource_type: str, *pairs: tuple[str, str], strict: bool = True) -> FhirError:
    """The 400 a query gets (never another exception: anything else is a 500)."""
    with pytest.raises(FhirError) as caught:
        query(resource_type, *pairs, strict=strict)
    assert caught.value.status == 400
    return caught.value


# --- tokens ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("male", c.Token("gender", None, "male")),                     # any system
    ("http://hl7.org/fhir/administrative-gender|male", c.Token("gender", "http://hl7.org/fhir/administrative-gender",
                                                                "male")),
    ("|male", c.Token("gender", "", "male")),                      # no system
    ("http://hl7.org/fhir/administrative-gender|", c.Token("gender", "http://hl7.org/fhir/administrative-gender",
                                                            None)),  # any code of the system
])
def test_token_forms(value: str, expected: c.Token) -> None:
    assert only("Patient", "gender", value) == c.AnyOf((expected,))


def test_token_text_is_normalised_words() -> None:
    assert only("Observation", "code:text", "Hémoglobine") == c.AnyOf((c.Token("code", None, None, "hemoglobine"),))


def test_token_not_includes_every_alternative_under_one_not() -> None:
    assert only("Patient", "gender:not", "male,female") == c.Not(c.AnyOf((c.Token("gender", None, "male"),
                                                                           c.Token("gender", None, "female"))))


def test_token_of_type() -> None:
    term = only("Patient", "identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|MR|123")
    assert term == c.AnyOf((c.Token("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203", "MR|123"),))


@pytest.mark.parametrize("value", ["MR|123", "sys||123", "sys|MR|"])
def test_token_of_type_needs_three_parts(value: str) -> None:
    refused("Patient", ("identifier:of-type", value))


# --- strings, uris --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "expected"), [
    ("family", "Hélène", c.String("family", "helene", "start")),
    ("family:contains", "LÈN", c.String("family", "len", "contains")),
    ("family:exact", "Hélène", c.String("family", "Hélène", "exact")),  # exact keeps case and accents
])
def test_string_modes(name: str, value: str, expected: c.String) -> None:
    assert only("Patient", name, value) == c.AnyOf((expected,))


@pytest.mark.parametrize(("name", "mode"), [("location", "exact"), ("location:below", "below"),
                                            ("location:above", "above")])
def test_uri_modes(name: str, mode: str) -> None:
    assert only("DocumentReference", name, "http://a.example/x") == c.AnyOf((c.Uri("location", "http://a.example/x",
                                                                                   mode),))


# --- dates and numbers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
def test_date_prefixes_keep_the_precision_range(prefix: str) -> None:
    term = only("Patient", "birthdate", f"{prefix}1980-05")
    assert term == c.AnyOf((c.DateRange("birthdate", prefix, datetime(1980, 5, 1), datetime(1980, 6, 1)),))


def test_date_without_prefix_is_eq_and_day_precision() -> None:
    assert only("Patient", "birthdate", "1980-05-17") == c.AnyOf((
        c.DateRange("birthdate", "eq", datetime(1980, 5, 17), datetime(1980, 5, 18)),))


def test_date_ap_widens_the_range_on_both_sides() -> None:
    (term,) = only("Patient", "birthdate", "ap1980-05-17").parts
    assert isinstance(term, c.DateRange) and term.prefix == "ap"
    assert term.low < datetime(1980, 5, 17) and term.high > datetime(1980, 5, 18)
    assert datetime(1980, 5, 17) - term.low == term.high - datetime(1980, 5, 18)


def test_last_updated_is_a_date_on_the_row() -> None:
    assert only("Patient", "_lastUpdated", "ge2024") == c.AnyOf((
        c.DateRange("_lastUpdated", "ge", datetime(2024, 1, 1), datetime(2025, 1, 1)),))


@pytest.mark.parametrize(("value", "prefix", "number", "low", "high"), [
    ("100", "eq", "100", "99.5", "100.5"),
    ("gt5.40", "gt", "5.40", "5.395", "5.405"),
    ("le-1", "le", "-1", "-1.5", "-0.5"),
    ("ap100", "ap", "100", "90.0", "110.0"),
])
def test_quantity_prefixes_and_precision(value: str, prefix: str, number: str, low: str, high: str) -> None:
    assert only("Observation", "value-quantity", value) == c.AnyOf((c.NumberRange(
        "value-quantity", prefix, Decimal(number), Decimal(low), Decimal(high), True),))


def test_quantity_system_and_unit() -> None:
    (term,) = only("Observation", "value-quantity", "5.4|http://unitsofmeasure.org|mg").parts
    assert isinstance(term, c.NumberRange)
    assert (term.value, term.system, term.code) == (Decimal("5.4"), "http://unitsofmeasure.org", "mg")
    (any_system,) = only("Observation", "value-quantity", "5.4||mg").parts
    assert isinstance(any_system, c.NumberRange) and (any_system.system, any_system.code) == (None, "mg")


@pytest.mark.parametrize(("name", "value"), [
    ("birthdate", "yesterday"), ("birthdate", "1980-13"), ("birthdate", "1980-02-30"), ("birthdate", "gt"),
    ("value-quantity", "five"), ("value-quantity", "gt"),
    # not decimals (R4 decimals are finite); before the fix, sNaN and a huge exponent were a 500
    ("value-quantity", "NaN"), ("value-quantity", "Infinity"), ("value-quantity", "-inf"),
    ("value-quantity", "sNaN"), ("value-quantity", "1e999999999"), ("value-quantity", "ap1e999999999"),
])
def test_bad_values_are_400(name: str, value: str) -> None:
    refused("Observation" if name == "value-quantity" else "Patient", (name, value))


# --- references, chains, _has ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("Practitioner/dr1", c.Reference("general-practitioner", "Practitioner", "dr1")),
    (f"{BASE}/Practitioner/dr1", c.Reference("general-practitioner", "Practitioner", "dr1")),  # our own base
    ("Practitioner/dr1/_history/2", c.Reference("general-practitioner", "Practitioner", "dr1")),
    ("dr1", c.Reference("general-practitioner", None, "dr1")),  # several served targets: any type
    ("https://other.example/fhir/Practitioner/dr1",
     c.Reference("general-practitioner", url="https://other.example/fhir/Practitioner/dr1")),
    ("urn:uuid:1234", c.Reference("general-practitioner", url="urn:uuid:1234")),
])
def test_reference_forms(value: str, expected: c.Reference) -> None:
    assert only("Patient", "general-practitioner", value) == c.AnyOf((expected,))


def test_reference_type_modifier() -> None:
    assert only("Patient", "general-practitioner:Practitioner", "dr1") == c.AnyOf((
        c.Reference("general-practitioner", "Practitioner", "dr1"),))
    # a type modifier contradicting the literal's type matches nothing
    assert only("Patient", "general-practitioner:Organization", "Practitioner/dr1") == c.AnyOf((c.IdIn(()),))


def test_reference_identifier_is_a_token() -> None:
    assert only("Observation", "subject:identifier", "urn:oid:1.2.250.1.213.1.4.8|123") == c.AnyOf((
        c.Token("subject:identifier", "urn:oid:1.2.250.1.213.1.4.8", "123"),))


def test_a_patient_reference_names_the_patient_key() -> None:
    """`patient=Patient/p1` also says which DMP the rows are filed in, so the patient key can drive the query."""
    assert only("DocumentReference", "patient", "Patient/p1,Patient/p2") == c.AllOf((
        c.AnyOf((c.PatientIs("p1"), c.PatientIs("p2"))),
        c.AnyOf((c.Reference("patient", "Patient", "p1"), c.Reference("patient", "Patient", "p2"))),
    ))


def test_chain_on_the_patient_adds_patient_matches() -> None:
    inner = c.AllOf((c.TypeIs(("Patient",)), c.AnyOf((c.Token("identifier", "urn:oid:x", "1"),))))
    assert only("DocumentReference", "patient.identifier", "urn:oid:x|1") == c.AllOf((
        c.PatientMatches(inner), c.Chain("patient", ("Patient",), inner)))


def test_chain_with_type_modifier_and_two_levels() -> None:
    term = only("Observation", "subject:Patient.general-practitioner:Practitioner.name", "House")
    assert term == c.AllOf((c.PatientMatches(c.AllOf((c.TypeIs(("Patient",)), c.Chain(
        "general-practitioner", ("Practitioner",),
        c.AllOf((c.TypeIs(("Practitioner",)), c.AnyOf((c.String("name", "house"),)))))))),
        c.Chain("subject", ("Patient",), c.AllOf((c.TypeIs(("Patient",)), c.Chain(
            "general-practitioner", ("Practitioner",),
            c.AllOf((c.TypeIs(("Practitioner",)), c.AnyOf((c.String("name", "house"),)))))))),
    ))


def test_chain_over_several_targets_keeps_those_with_the_parameter() -> None:
    term = only("Patient", "general-practitioner.name", "House")
    assert isinstance(term, c.Chain) and isinstance(term.inner, c.AnyOf)
    assert {p.parts[0] for p in term.inner.parts} <= {c.TypeIs((t,)) for t in term.target_types}
    assert len(term.inner.parts) >= 2


@pytest.mark.parametrize(("name", "value"), [
    ("gender.name", "x"),                              # not a reference
    ("subject:Basic.name", "x"),                       # not a served type
    ("subject.subject.subject.subject.subject.subject.name", "x"),  # too deep
])
def test_bad_chains_are_400(name: str, value: str) -> None:
    refused("Observation", (name, value))


def test_has() -> None:
    assert only("Patient", "_has:Observation:patient:code", "1234-5") == c.Has(
        "Observation", "patient", c.AnyOf((c.Token("code", None, "1234-5"),)))


@pytest.mark.parametrize("name", ["_has:Observation:patient", "_has:Basic:patient:code",
                                  "_has:Observation:code:code", "_has::patient:code"])
def test_bad_has_is_400(name: str) -> None:
    refused("Patient", (name, "x"))


# --- OR, AND, escapes, _id, :missing --------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "parts"), [
    ("a,b", ["a", "b"]),
    (r"a\,b", ["a,b"]),
    (r"a\\,b", ["a\\", "b"]),
    (r"a\|b\$c", ["a|b$c"]),
    ("a", ["a"]),
    ("", [""]),
])
def test_split_or(value: str, parts: list[str]) -> None:
    assert split_or(value) == parts


def test_or_by_comma_and_by_repetition() -> None:
    parsed = query("Patient", ("family", "dupont,durand"), ("family", r"mar\,tin")).criteria
    assert parsed == c.AllOf((
        c.AnyOf((c.String("family", "dupont"), c.String("family", "durand"))),
        c.AnyOf((c.String("family", "mar,tin"),)),
    ))


@pytest.mark.parametrize("value", ["", "a,", ",a", "a,,b"])
def test_empty_alternatives_are_400(value: str) -> None:
    refused("Patient", ("family", value))


def test_id_and_id_not() -> None:
    assert only("Patient", "_id", "a,b") == c.IdIn(("a", "b"))
    assert only("Patient", "_id:not", "a") == c.Not(c.IdIn(("a",)))
    refused("Patient", ("_id:exact", "a"))


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("birthdate:missing", "true", c.Missing("birthdate", "date", True)),
    ("family:missing", "false", c.Missing("family", "string", False)),
    ("general-practitioner:missing", "true", c.Missing("general-practitioner", "reference", True)),
    ("_id:missing", "true", c.IdIn(())),     # every row has an id
    ("_id:missing", "false", c.AllOf(())),
])
def test_missing(name: str, value: str, expected: c.Criterion) -> None:
    assert only("Patient", name, value) == expected


def test_missing_takes_a_boolean() -> None:
    refused("Patient", ("birthdate:missing", "yes"))


@pytest.mark.parametrize("name", ["family:below", "gender:exact", "birthdate:text", "general-practitioner:text"])
def test_modifier_of_another_type_is_400(name: str) -> None:
    refused("Patient", (name, "x"))


def test_nul_is_400() -> None:
    refused("Patient", ("family", "a\x00b"))
    refused("Patient", ("fam\x00ily", "a"))


# --- unknown parameters ---------------------------------------------------------------------------------------

def test_unknown_parameter_lenient_is_ignored_and_reported() -> None:
    parsed = query("Patient", ("shoe-size", "42"), ("family", "x"), strict=False)
    assert parsed.criteria == c.AllOf((c.AnyOf((c.String("family", "x"),)),))
    assert parsed.ignored == ("shoe-size",)
    assert [w.severity for w in parsed.warnings()] == ["warning"]


def test_unknown_parameter_strict_is_400() -> None:
    refused("Patient", ("shoe-size", "42"))


def test_chain_to_an_unknown_parameter_is_unknown() -> None:
    """Unknown at the end of a chain is the same leniency as unknown at the top."""
    assert query("Observation", ("subject.shoe-size", "1"), strict=False).ignored == ("subject.shoe-size",)
    refused("Observation", ("subject.shoe-size", "1"))


def test_parse_criteria_refuses_result_and_unknown_parameters() -> None:
    assert parse_criteria("Patient", [("family", "x"), ("_format", "json")]) == c.AllOf((
        c.AnyOf((c.String("family", "x"),)),))
    for pair in (("_count", "10"), ("shoe-size", "1")):
        with pytest.raises(FhirError) as caught:
            parse_criteria("Patient", [pair])
        assert caught.value.status == 400


# --- result parameters ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "count"), [("0", 0), ("7", 7), ("100", 100), ("101", 100), ("0099", 99),
                                              ("9" * 30, 100), ("9" * 5000, 100)])
def test_count_bounds(value: str, count: int) -> None:
    assert query("Patient", ("_count", value)).count == count


def test_count_default() -> None:
    assert query("Patient").count == 20


@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "", "١٢"])  # the last: Arabic-Indic digits
def test_bad_count_is_400(value: str) -> None:
    refused("Patient", ("_count", value))


def test_sort_keys() -> None:
    assert query("Patient", ("_sort", "family,-birthdate,_id,-_lastUpdated,gender,general-practitioner")).sort == (
        SortKey("family", "string", False), SortKey("birthdate", "date", True), SortKey("_id", "_id", False),
        SortKey("_lastUpdated", "_lastUpdated", True), SortKey("gender", "token", False),
        SortKey("general-practitioner", "reference", False))


@pytest.mark.parametrize("value", ["shoe-size", "-", "relationship"])
def test_bad_sort_is_400(value: str) -> None:
    refused("DocumentReference", ("_sort", value))


def test_includes() -> None:
    parsed = query("DocumentReference", ("_include", "DocumentReference:subject:Patient"),
                   ("_include:iterate", "Patient:general-practitioner"), ("_revinclude", "Binary:*"),
                   ("_revinclude:iterate", "Composition:subject"))
    assert parsed.includes == (Include("DocumentReference", "subject", "Patient", False),
                               Include("Patient", "general-practitioner", None, True))
    assert parsed.revincludes == (Include("Binary", "*", None, False), Include("Composition", "subject", None, True))


@pytest.mark.parametrize(("name", "value"), [
    ("_include", "Patient:general-practitioner"),        # another source type needs :iterate
    ("_include", "DocumentReference"),                   # no parameter
    ("_include", "DocumentReference:status"),            # not a reference
    ("_include", "DocumentReference:subject:Basic"),     # unserved target
    ("_include:deep", "DocumentReference:subject"),
    ("_revinclude", "Basic:subject"),
    ("_include", "a:b:c:d"),
])
def test_bad_includes_are_400(name: str, value: str) -> None:
    refused("DocumentReference", (name, value))


def test_summary_elements_total_cursor() -> None:
    parsed = query("Patient", ("_summary", "count"), ("_elements", "name, gender,,"), ("_total", "none"),
                   ("_cursor", "abc"))
    assert (parsed.summary, parsed.elements, parsed.total, parsed.cursor) == ("count", ("name", "gender"), "none",
                                                                              "abc")
    assert (query("Patient").summary, query("Patient").total) == (None, "accurate")


@pytest.mark.parametrize(("name", "value"), [("_summary", "yes"), ("_total", "all")])
def test_bad_summary_or_total_is_400(name: str, value: str) -> None:
    refused("Patient", (name, value))
