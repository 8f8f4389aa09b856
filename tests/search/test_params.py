"""Every search parameter type, modifier and prefix of R4 (http://hl7.org/fhir/R4/search.html), on every
backend, against a small fixed data set (tests/search/world.py) whose expected answers are worked out by hand.

Date expectations follow the R4 range semantics: a value is the range its precision covers ([low, high),
in UTC; a zone-less search value is read as UTC, the server's zone), and
eq = search range contains the value range; ne = not eq; gt/lt = the value range intersects what lies
above/below the search range; ge/le = gt/lt or eq; sa/eb = the value range lies wholly above/below;
ap = the ranges overlap once the search range is widened by 10% of its distance to now.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.search.extract import SERVED_TYPES, indexed_params
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from tests.conftest import BACKENDS, SECRET, _empty
from tests.fhirclient import FhirTestClient, json_of
from tests.search.world import BASE, CONF, FINESS, INS, LOINC, PROFILES, RPPS, V2, build_world

DOCS = ("d1", "d2", "d3", "d4", "d5", "d6")
RELATION = "http://hl7.org/fhir/document-relationship-type"


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[tuple[FhirTestClient, dict[str, str]]]:
    """The data set, built once per backend (the searches below only read it; the `_lastUpdated` test adds
    two Organizations, a type no other case searches)."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path_factory.mktemp('search') / 'fhir-dmp.db'}")
        upgrade(db)
    else:
        db = request.getfixturevalue("postgres_database")
        _empty(db)
    app = create_app(Settings(database_url=db.url, jwt_secret=SECRET, max_body_bytes=1 << 20, enforce_profiles=False),
                     database=db)
    client = FhirTestClient(app.test_client(), SECRET)
    yield client, build_world(client)
    if request.param == "sqlite":
        db.dispose()
    else:
        _empty(db)


def search(client: FhirTestClient, resource_type: str, pairs: list[tuple[str, str]]) -> dict:
    resp = client.get(f"{resource_type}?{urlencode(pairs + [('_count', '100')])}")
    assert resp.status_code == 200, resp.data
    return json_of(resp)


def matches(body: dict) -> list[str]:
    return [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


def found(client: FhirTestClient, w: dict[str, str], resource_type: str, query: str) -> set[str]:
    """Names of the resources a query (`a=1&b=2`, values with `{name}` placeholders) finds."""
    pairs = [tuple(part.split("=", 1)) for part in query.split("&")]
    pairs = [(k, v.format(**w)) for k, v in pairs]
    body = search(client, resource_type, pairs)
    got = matches(body)
    assert body["total"] == len(got) == len(set(got))
    names = {v: k for k, v in w.items()}
    return {names[i] for i in got}


def case(resource_type: str, query: str, expected: str):  # type: ignore[no-untyped-def]
    return pytest.param(resource_type, query, set(expected.split()), id=f"{resource_type}?{query}")


D, P = "DocumentReference", "Patient"
CASES = [
    # -- token ------------------------------------------------------------------------------------
    case(D, "status=current", "d1 d4 d5 d6"),
    case(D, "status=current,superseded", "d1 d2 d4 d5 d6"),
    case(D, "status=current&status=superseded", ""),
    case(D, "status:not=current", "d2 d3"),
    case(D, "status:not=current,superseded", "d3"),
    case(D, "type=11488-4", "d1 d3 d4"),
    case(D, f"type={LOINC}|11488-4", "d1 d3"),
    case(D, "type=|local-1", "d5"),
    case(D, "type=|11488-4", ""),
    case(D, f"type={LOINC}|", "d1 d2 d3 d6"),
    case(D, f"type:not={LOINC}|11488-4", "d2 d4 d5 d6"),
    case(D, "type:text=consult", "d1"),  # Coding.display
    case(D, "type:text=compte", "d1"),  # CodeableConcept.text, next to a Coding with a display
    case(D, "type:text=RENDU", "d1"),
    case(D, "type:text=endu", ""),
    case(D, "category=ambulatory&category=inpatient", "d2"),
    case(D, "category=ambulatory,inpatient", "d1 d2 d4"),
    case(D, "category:missing=true", "d3 d5 d6"),
    case(D, "category:missing=false", "d1 d2 d4"),
    case(D, "security-label=R", "d2"),
    case(D, f"security-label={CONF}|N", "d1 d4"),
    case(D, "security-label:not=R", "d1 d3 d4 d5 d6"),
    case(D, "security-label:missing=true", "d3 d5 d6"),
    case(D, "identifier=urn:docs|D1", "d1"),
    case(D, "identifier=D1", "d1"),
    case(D, "identifier=urn:other|D1", ""),
    case(D, "identifier=urn:docs|", "d1 d2 d3"),
    case(D, "identifier=A\\,B", "d2"),  # escaped comma: one value 'A,B'
    case(D, "identifier=urn:docs|A\\,B,urn:docs|D3", "d2 d3"),
    case(D, "identifier=A,B", ""),
    case(P, f"identifier:of-type={V2}|MR|MR-1", "pA"),
    case(P, f"identifier:of-type={V2}|MR|MR-2", ""),
    case(P, f"identifier:of-type={V2}|XX|MR-1", ""),
    case(P, f"identifier={INS}|", "pA pB pC"),
    case(P, "gender=female", "pA"),
    case(P, "gender:not=female", "pB pC"),  # :not includes resources without a value
    case(P, "gender:missing=true", "pC"),
    case(P, "email=a@x.fr", "pA"),
    case(P, "_tag=http://example.test/tags|vip", "pA"),
    case(P, "_tag:not=vip", "pB pC"),
    case(P, "_security=R", "pA"),
    case(P, f"_security={CONF}|R", "pA"),
    case(P, "_security:missing=true", "pB pC"),
    # -- string -----------------------------------------------------------------------------------
    case(P, "name=hel", "pA pC"),
    case(P, "name=helene", "pA"),
    case(P, "name=HÉLÈNE", "pA"),
    case(P, "family=LEG", "pA"),
    case(P, "family=artin", ""),
    case(P, "given=mar", "pA"),
    case(P, "name=mar", "pA pB"),
    case(P, "name:exact=Hélène", "pA"),
    case(P, "name:exact=helene", ""),
    case(P, "name:exact=Hél", ""),
    case(P, "name:contains=ege", "pA"),
    case(P, "name:contains=ARTI", "pB"),
    case(P, "family=helen,martin", "pB pC"),
    case(P, "name=claire&name=mart", "pB"),
    case(P, "address-city=saint-e", "pA"),
    case(P, "address-city:exact=Saint-Étienne", "pA"),
    case(P, "address-postalcode=42", "pA"),
    case(P, "address:missing=true", "pB pC"),
    case(P, "name:missing=false", "pA pB pC"),
    # -- date: DocumentReference.date (instants) --------------------------------------------------
    case(D, "date=2021", "d1 d2 d4"),
    case(D, "date=2021-03", "d1 d2 d4"),
    case(D, "date=2021-03-04", "d1 d4"),  # d2 is 2021-03-04T23:30-02:00 = 03-05 UTC
    case(D, "date=2021-03-05", "d2"),
    case(D, "date=2021-03-04T09:20Z", "d1 d4"),
    case(D, "date=2021-03-04T10:20+01:00", "d1 d4"),
    case(D, "date=2021-03-04T09:20:30Z", "d1"),
    case(D, "date=2021-03-04T10:20:30+01:00", "d1"),
    case(D, "date=2021-03-04T09:20:00.250Z", "d4"),
    case(D, "date=2021-01-01T00:59:59+01:00", "d3"),
    case(D, "date=2020-12-31", "d3"),
    case(D, "date=ne2021-03-04", "d2 d3 d6"),
    case(D, "date=gt2021-03-04", "d2"),
    case(D, "date=lt2021-03-04", "d3 d6"),
    case(D, "date=ge2021-03-04", "d1 d2 d4"),
    case(D, "date=le2021-03-04", "d1 d3 d4 d6"),
    case(D, "date=sa2021-03-04", "d2"),
    case(D, "date=eb2021-03-04", "d3 d6"),
    case(D, "date=gt2021-03-04T09:20:30Z", "d2"),
    case(D, "date=ge2021-03-04T09:20:30Z", "d1 d2"),
    case(D, "date=lt2021-03-04T09:20:30Z", "d3 d4 d6"),
    case(D, "date=le2021-03-04T09:20:30Z", "d1 d3 d4 d6"),
    case(D, "date=eb2021-03-04T09:20", "d3 d6"),
    case(D, "date=sa2021-03-04T09:20Z", "d2"),
    case(D, "date=ap2021-03-04", "d1 d2 d3 d4"),
    case(D, "date=ap2010-06-01", "d6"),
    case(D, "date=ge2021-03-04&date=lt2021-03-05", "d1 d4"),
    case(D, "date=2021-03-04,2010", "d1 d4 d6"),
    case(D, "date:missing=true", "d5"),
    # -- date: Period (DocumentReference.context.period), open ends --------------------------------
    case(D, "period=2021-03", "d1"),
    case(D, "period=2021", "d1 d4"),
    case(D, "period=gt2021-06", "d2 d4"),
    case(D, "period=lt2021-01-15", "d3 d4"),
    case(D, "period=sa2021-03-03", "d2"),
    case(D, "period=eb2021-02", "d3"),
    case(D, "period=ne2021", "d2 d3"),
    case(D, "period=ge2021-03-04", "d1 d2 d4"),
    case(D, "period=le2021-03-04", "d1 d3 d4"),
    case(D, "period=ap2021-03-04", "d1 d2 d3 d4"),
    case(D, "period=2021-03-04T10:00:00Z", ""),
    case(D, "period:missing=true", "d5 d6"),
    # -- date: Patient.birthDate (dates of every precision) ---------------------------------------
    case(P, "birthdate=1980", "pA pC"),
    case(P, "birthdate=1980-01", "pA pC"),
    case(P, "birthdate=1980-01-17", "pA"),
    case(P, "birthdate=gt1980-01-17", "pC"),
    case(P, "birthdate=ge1980-01-17", "pA pC"),
    case(P, "birthdate=lt1980-01-17", "pB pC"),
    case(P, "birthdate=le1980-01-17", "pA pB pC"),
    case(P, "birthdate=sa1979", "pA pC"),
    case(P, "birthdate=eb1980", "pB"),
    case(P, "birthdate=ne1980", "pB"),
    case(P, "birthdate=1980-01-17T10:00Z", ""),
    # -- reference --------------------------------------------------------------------------------
    case(D, "patient=Patient/{pA}", "d1 d2"),  # d2 holds an absolute URL on our base
    case(D, "patient={pA}", "d1 d2"),
    case(D, f"patient={BASE}/Patient/{{pA}}", "d1 d2"),
    case(D, "patient=Patient/{pC}", "d4 d5"),  # d4 holds a versioned reference
    case(D, "patient=Patient/{pA},Patient/{pB}", "d1 d2 d3 d6"),
    case(D, "subject:Patient={pA}", "d1 d2"),
    case(D, "subject:Practitioner={pA}", ""),
    case(D, "author=Practitioner/{prA}", "d1"),
    case(D, "author={prA}", "d1"),
    case(D, "author:PractitionerRole={roleA}", "d2"),
    case(D, f"author:identifier={RPPS}|10002", "d3"),
    case(D, "author:missing=true", "d4 d5"),
    case(D, "relatesto=DocumentReference/{d1}", "d3"),
    case(P, "general-practitioner=Practitioner/{prA}", "pA"),
    case(P, "general-practitioner=Organization/{orgA}", "pB"),
    # -- uri ------------------------------------------------------------------------------------------
    case(P, f"_profile={PROFILES}patient-a", "pA"),
    case(P, f"_profile={PROFILES}patient", ""),
    case(P, f"_profile:below={PROFILES}", "pA pB"),
    case(P, f"_profile:above={PROFILES}patient-a/v2", "pA"),
    case(P, "_profile:missing=true", "pC"),
    case(D, "location=http://docs.example.test/store/a/1.pdf", "d1"),
    case(D, "location:below=http://docs.example.test/store/", "d1 d2"),
    case(D, "location:below=http://docs.example.test/store", "d1 d2 d3"),
    case(D, "location:above=http://docs.example.test/store/a/1.pdf", "d1 d3"),
    case(D, "location=urn:oid:1.2.3", "d4"),
    case(D, "location:missing=true", "d5 d6"),
    # -- composite: relationship = relatesto (reference) $ relation (token) -----------------------
    case(D, "relationship=DocumentReference/{d1}$replaces", "d3"),
    case(D, f"relationship=DocumentReference/{{d1}}${RELATION}|replaces", "d3"),
    case(D, f"relationship={BASE}/DocumentReference/{{d1}}$replaces", "d3"),
    case(D, "relationship=DocumentReference/{d1}$appends", ""),
    case(D, "relationship=DocumentReference/{d2}$replaces", ""),
    case(D, "relationship:missing=false", "d3"),
    # -- _id --------------------------------------------------------------------------------------
    case(D, "_id={d1}", "d1"),
    case(D, "_id={d1},{d3}", "d1 d3"),
    case(D, "_id=no-such-id", ""),
    case(D, "_id:not={d1}", "d2 d3 d4 d5 d6"),
    case(D, "_id={d1},{d3}&_id={d3}", "d3"),
    # -- chains -----------------------------------------------------------------------------------
    case(D, f"patient.identifier={INS}|1800175123456", "d1 d2"),
    case(D, "subject:Patient.name=helene", "d1 d2"),
    case(D, "subject:Patient.name=hel", "d1 d2 d4 d5"),
    case(D, "patient.birthdate=1975", "d3 d6"),
    case(D, "patient.name=martin&patient.birthdate=1975", "d3 d6"),
    case(D, f"author.identifier={RPPS}|10001", "d1"),
    case(D, "author.name=petit", "d6"),
    case(D, f"author:PractitionerRole.practitioner.identifier={RPPS}|10001", "d2"),
    case(D, "author:PractitionerRole.practitioner.name=durand", "d2"),
    case(D, f"patient.general-practitioner:Practitioner.identifier={RPPS}|10001", "d1 d2"),
    case(D, "patient.general-practitioner.name=clinique", "d3 d6"),
    case(P, f"general-practitioner:Practitioner.identifier={RPPS}|10001", "pA"),
    case(P, f"general-practitioner.identifier={FINESS}|F1", "pB"),
    # -- _has -------------------------------------------------------------------------------------
    case(P, "_has:DocumentReference:patient:status=entered-in-error", "pB"),
    case(P, "_has:DocumentReference:patient:status=superseded,entered-in-error", "pA pB"),
    case(P, "_has:DocumentReference:subject:type=|local-1", "pC"),
    case(P, "_has:DocumentReference:subject:_has:DocumentReference:relatesto:relation=replaces", "pA"),
    case("Practitioner", "_has:DocumentReference:author:date=2010", "prB"),
    case("Practitioner", "_has:PractitionerRole:practitioner:_has:DocumentReference:author:status=superseded",
         "prA"),
]


@pytest.mark.parametrize(("resource_type", "query", "expected"), CASES)
def test_search(world, resource_type: str, query: str, expected: set[str]) -> None:
    client, w = world
    assert found(client, w, resource_type, query) == expected


def test_unknown_parameter_is_ignored_and_reported_unless_strict(world) -> None:
    client, w = world
    for query in ("nonsense=1", "patient.nonsense=1", "status=current&nonsense=1"):
        body = search(client, "DocumentReference", [tuple(p.split("=")) for p in query.split("&")])
        expected = {w[d] for d in ("d1", "d4", "d5", "d6")} if "status" in query else {w[d] for d in DOCS}
        assert set(matches(body)) == expected
        warnings = [e["resource"] for e in body["entry"] if e["search"]["mode"] == "outcome"]
        assert [i["code"] for i in warnings[0]["issue"]] == ["not-supported"]
        strict = client.get(f"DocumentReference?{query}", headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400
        assert json_of(strict)["issue"][0]["code"] == "not-supported"
    lenient = client.get("DocumentReference?nonsense=1", headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200


@pytest.mark.parametrize("query", [
    "date=2021-13", "date=2021-02-30", "date=foo", "date=zz2021", "date=gt", "date=2021-03-04T25:00Z",
    "date=2021-03-04T10", "date:exact=2021", "status:exact=current", "status:missing=yes", "subject:Foo=1",
    "identifier:of-type=MR|1", "status.name=x", "_has:Foo:patient:status=x", "_has:DocumentReference:status:status=x",
    "_has:DocumentReference=x", "location:contains=x", "_id:text=x",
])
def test_bad_values_are_400(world, query: str) -> None:
    client, _ = world
    for headers in ({}, {"Prefer": "handling=strict"}):
        resp = client.get(f"DocumentReference?{urlencode([tuple(query.split('=', 1))])}", headers=headers)
        assert resp.status_code == 400, (query, resp.data)
        assert json_of(resp)["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("query", ["name:below=x", "birthdate:text=1980", "gender:contains=f"])
def test_unknown_modifier_is_400(world, query: str) -> None:
    client, _ = world
    assert client.get(f"Patient?{query}").status_code == 400


def test_only_observation_has_number_or_quantity_parameters() -> None:
    """So number/quantity prefixes need no HTTP test here: only Observation (a VSM entry) indexes such values, and
    tests/vsm tests its value-quantity."""
    kinds = {p.type for t in SERVED_TYPES if t != "Observation" for p in indexed_params(t).values()}
    assert not kinds & {"number", "quantity"}


def test_last_updated_every_prefix(world) -> None:
    """Two Organizations written 10 ms apart (no world case returns Organizations); each search also
    carries `_id=a,b` so that the data set's older resources stay out of the answers."""
    client, _ = world
    stamps = []
    for name in ("first", "second"):
        time.sleep(0.01)
        resp = client.post("Organization", {"resourceType": "Organization", "name": f"Last updated {name}"})
        assert resp.status_code == 201, resp.data
        body = json_of(resp)
        stamps.append((body["id"], body["meta"]["lastUpdated"]))
    (a, ta), (b, tb) = stamps
    assert ta < tb

    def got(*values: str) -> set[str]:
        pairs = [("_lastUpdated", v) for v in values] + [("_id", f"{a},{b}")]
        return set(matches(search(client, "Organization", pairs)))

    assert got(ta) == {a} and got(f"eq{tb}") == {b}
    assert got(f"ne{ta}") == {b}
    assert got(f"gt{ta}") == {b} and got(f"sa{ta}") == {b}
    assert got(f"ge{tb}") == {b} and got(f"ge{ta}") == {a, b}
    assert got(f"lt{tb}") == {a} and got(f"eb{tb}") == {a}
    assert got(f"le{ta}") == {a} and got(f"le{tb}") == {a, b}
    assert got(ta[:4]) == {a, b} and got(f"gt{ta[:4]}") == set() and got(f"lt{ta[:4]}") == set()
    assert a in got(f"ap{ta}")  # widened by 10% of the (few ms) distance to now
    second = ta[:19]  # second precision, no zone (UTC)
    assert got(f"ge{second}") == {a, b} and got(f"lt{second}") == set()
    assert got(f"ge{ta}", f"le{tb}") == {a, b} and got(f"gt{ta}", f"lt{tb}") == set()
    assert got(f"{ta},{tb}") == {a, b}
    assert set(matches(search(client, "Organization", [("_lastUpdated:missing", "false")]))) >= {a, b}
