"""storage/shapes.py: a search page's statement built once per shape of criteria, values bound at each run.

The unit tests check the split into template and values; the PostgreSQL ones run real searches both ways (the
shaped statement and the statement built for the criteria themselves) on the search tests' data set and compare
every row, and check that searches differing only by their values share one compiled statement."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fhir_dmp.config import Settings
from fhir_dmp.search.parse import parse_query
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries, shapes
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.records import SYSTEM_SCOPE, row_to_stored
from tests.conftest import SECRET
from tests.search.world import build_world


def test_equality_values_become_markers_in_order() -> None:
    node = c.AllOf((c.PatientIs("p1"), c.Token("status", None, "current"), c.Reference("patient", "Patient", "p1"),
                    c.AnyOf((c.OwnerIs("professional|1"), c.Not(c.Token("type", "http://loinc.org", "x" * 300))))))
    template, values = shapes.parametrize(node)  # type: ignore[misc]
    assert values == ("p1", "current", "p1", "professional|1", "x" * 255, "http://loinc.org")
    assert template == c.AllOf((c.PatientIs("\x000\x00"), c.Token("status", None, "\x001\x00"),
                                c.Reference("patient", "Patient", "\x002\x00"),
                                c.AnyOf((c.OwnerIs("\x003\x00"),
                                         c.Not(c.Token("type", "\x005\x00", "\x004\x00"))))))


def test_values_transformed_while_built_stay_in_the_template() -> None:
    node = c.AllOf((c.String("name", "mart"), c.Token("type", None, None, text="consult"),
                    c.Uri("url", "http://a/b", "below"), c.Reference("subject", None, None, url="http://x/P/1")))
    template, values = shapes.parametrize(node)  # type: ignore[misc]
    assert template == node and values == ()


def test_two_value_sets_of_one_shape_share_a_template() -> None:
    a = shapes.parametrize(c.AllOf((c.PatientIs("p1"), c.Token("status", None, "current"))))
    b = shapes.parametrize(c.AllOf((c.PatientIs("p2"), c.Token("status", None, "superseded"))))
    assert a is not None and b is not None and a[0] == b[0] and a[1] != b[1]


def test_a_nul_character_is_never_taken_for_a_marker() -> None:
    """A value kept in the template could pass for a marker: such criteria are built the usual way. A value bound
    in a marker's place is only ever a value."""
    assert shapes.parametrize(c.AllOf((c.PatientIs("p1"), c.String("name", "\x000\x00", "exact")))) is None
    assert shapes.parametrize(c.Reference("subject", "Patient", "p1", url="\x000\x00")) is None
    assert shapes.parametrize(c.Token("identifier", None, "\x000\x00")) == (
        c.Token("identifier", None, "\x000\x00"), ("\x000\x00",))


QUERIES = [
    "patient={pA}&status=current",
    "subject=Patient/{pA}",
    "subject:Patient.identifier=urn:oid:1.2.250.1.213.1.4.10|1800175123456",
    "type=http://loinc.org|11488-4,http://loinc.org|34133-9&_sort=-date",
    "status:not=current",
    "_id={d1},{d2}",
    "author:Practitioner.name=durand",
    "identifier=urn:docs|D1",
]


@pytest.fixture
def settings(database: Database) -> Settings:
    """The search tests' generic R4 data set: profiles not enforced (tests/search/conftest.py says why)."""
    return Settings(database_url=database.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024, enforce_profiles=False)


@pytest.fixture
def pg_world(client, database):  # type: ignore[no-untyped-def]
    if database.is_sqlite:
        pytest.skip("statements built per shape run on PostgreSQL only")
    return build_world(client)


@pytest.mark.parametrize("qs", QUERIES)
def test_a_shaped_search_finds_what_the_search_built_for_its_values_finds(pg_world, database, qs: str) -> None:
    pairs = [tuple(p.split("=", 1)) for p in qs.format(**pg_world).split("&")]
    query = parse_query("DocumentReference", pairs, strict=True, default_count=20, max_count=1000,  # type: ignore[arg-type]
                        base_url="http://localhost/fhir")
    scope = c.AnyOf((c.PatientIs(pg_world["pA"]), c.AllOf((c.PatientIs(""), c.OwnerIs("nobody")))))
    for limit in (1, 20):
        with database.engine.connect() as conn:
            shaped = queries.find(conn, "DocumentReference", query.criteria, scope=scope, sort=query.sort, limit=limit)
            direct = [row_to_stored(r, sort_width=len(query.sort)) for r in conn.execute(queries._find_query(
                "DocumentReference", query.criteria, scope, tuple(query.sort), None, limit))]
        assert [(s.id, s.sort_key) for s in shaped] == [(s.id, s.sort_key) for s in direct]
    with database.engine.connect() as conn:
        counted = queries.count(conn, "DocumentReference", query.criteria, scope=scope)
        assert counted == conn.execute(queries._count_query("DocumentReference", query.criteria, scope)).scalar()
    assert counted >= len(shaped)
    assert shaped or qs.startswith("status:not"), qs  # the data set answers these searches


def test_searches_differing_by_values_share_one_statement(pg_world, database) -> None:
    found = {}
    with database.engine.connect() as conn:
        before = shapes._compiled.cache_info()
        for key in ("pA", "pB", "pC"):
            criteria = c.AllOf((c.Reference("patient", "Patient", pg_world[key]), c.Token("status", None, "current")))
            found[key] = queries.find(conn, "DocumentReference", criteria, scope=SYSTEM_SCOPE, limit=20)
        after = shapes._compiled.cache_info()
        total = conn.execute(text("SELECT count(*) FROM resource WHERE resource_type = 'DocumentReference'")).scalar()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 2
    assert found["pA"] and {s.patient_key for s in found["pA"]} == {pg_world["pA"]}
    assert sum(len(v) for v in found.values()) <= total
