"""Unit tests of the criteria compiler (`fhir_dmp/storage/compile.py`): every criterion kind, run as SQL on a
small SQLite world whose answers are worked out by hand here, with `queries.find` in the system scope.

The world (one module-scoped database; nothing writes after it is built):
- Patients p1 (INS 111, Dupont Jean, male, 1980-05-17, médecin Practitioner/dr1, profile .../sd/a/b), p2 (family
  `50%_off\\x`, given Émile, female, 1990, an external médecin, profile .../sd/a), p3 (Martin, no gender,
  1980-05, profile .../sd/ab) and p4, deleted;
- Practitioner dr1 (House), outside any DMP;
- Observations o1 (p1, LOINC 1234-5 "Hémoglobine glyquée", 5.4 mg, n=10), o2 (p2, other system 1234-5, text
  Glucose, 100 mmol/L, n=20), o3 (p3, code abc without system), o4 (subject p4, the deleted patient);
- DocumentReferences d1 (relatesTo replaces d0), d2 (relatesTo transforms d0).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Connection

from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import queries
from fhir_dmp.storage.compile import compile_criterion
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.records import SYSTEM_SCOPE
from fhir_dmp.storage.resources import insert_resources, write_version
from tests.storage.helpers import new, sqlite_database

INS = "urn:oid:1.2.250.1.213.1.4.8"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PROFILE = "http://ex.org/sd/"


def _patient(pid: str, **fields: object) -> dict:
    return {"resourceType": "Patient", "id": pid, **fields}


def _observation(oid: str, subject: str, **fields: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": subject},
            **fields}


def _n(value: str) -> dict[str, list[dict[str, object]]]:
    """A `number` index row (no served type has a number parameter; the compiler must still handle them)."""
    d = Decimal(value)
    return {"number": [{"param": "n", "low": d - Decimal("0.5"), "high": d + Decimal("0.5")}]}


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    db: Database = sqlite_database(Path(tmp_path_factory.mktemp("compile")))
    items = [
        new(_patient("p1", identifier=[{"system": INS, "value": "111"}],
                     name=[{"family": "Dupont", "given": ["Jean"]}], gender="male", birthDate="1980-05-17",
                     generalPractitioner=[{"reference": "Practitioner/dr1"}], meta={"profile": [PROFILE + "a/b"]}),
            patient_key="p1", last_updated=datetime(2024, 1, 1, 10)),
        new(_patient("p2", name=[{"family": "50%_off\\x", "given": ["Émile"]}], gender="female", birthDate="1990",
                     generalPractitioner=[{"reference": "https://other.example/Practitioner/9"}],
                     meta={"profile": [PROFILE + "a"]}),
            patient_key="p2", last_updated=datetime(2024, 1, 2)),
        new(_patient("p3", name=[{"family": "Martin"}], birthDate="1980-05", meta={"profile": [PROFILE + "ab"]}),
            patient_key="p3", last_updated=datetime(2024, 2, 1)),
        new(_patient("p4", name=[{"family": "Gone"}], gender="male"), patient_key="p4"),
        new({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "House"}]}),
        new(_observation("o1", "Patient/p1",
                         code={"coding": [{"system": LOINC, "code": "1234-5", "display": "Hémoglobine glyquée"}]},
                         valueQuantity={"value": 5.4, "system": UCUM, "code": "mg"}),
            patient_key="p1", extra=_n("10"),
            facts=AccessFacts("11488-4", 0b101, datetime(2024, 1, 1), "professional|A")),
        new(_observation("o2", "Patient/p2", code={"coding": [{"system": "http://other", "code": "1234-5"}],
                                                   "text": "Glucose"},
                         valueQuantity={"value": 100, "system": UCUM, "code": "mmol/L"}),
            patient_key="p2", extra=_n("20"), facts=AccessFacts("60591-5", 0b010, None, "patient|p2")),
        new(_observation("o3", "Patient/p3", code={"coding": [{"code": "abc"}]}), patient_key="p3"),
        new(_observation("o4", "Patient/p4"), patient_key="p4"),
        new({"resourceType": "DocumentReference", "id": "d1", "status": "current",
             "relatesTo": [{"code": "replaces", "target": {"reference": "DocumentReference/d0"}}]}),
        new({"resourceType": "DocumentReference", "id": "d2", "status": "current",
             "relatesTo": [{"code": "transforms", "target": {"reference": "DocumentReference/d0"}}]}),
    ]
    with db.transaction(write=True) as tx:
        stored = insert_resources(tx, items)
        p4 = next(s for s in stored if s.id == "p4")
        write_version(tx, p4, content=None, patient_key="p4", last_updated=datetime(2024, 3, 1), method="DELETE")
    with db.engine.connect() as connection:
        yield connection
    db.dispose()


def ids(conn: Connection, resource_type: str, criterion: c.Criterion) -> set[str]:
    """The ids `find` returns, after checking that `count` agrees (the same WHERE clause)."""
    found = {s.id for s in queries.find(conn, resource_type, criterion, limit=100, scope=SYSTEM_SCOPE)}
    assert queries.count(conn, resource_type, criterion, scope=SYSTEM_SCOPE) == len(found)
    return found


OBS = {"o1", "o2", "o3", "o4"}
PATIENTS = {"p1", "p2", "p3"}  # p4 is deleted: never found

CASES: list[tuple[str, str, c.Criterion, set[str]]] = [
    # ids, types, the DMP
    ("id in", "Patient", c.IdIn(("p1", "p3", "nope")), {"p1", "p3"}),
    ("id in none", "Patient", c.IdIn(()), set()),
    ("id of a deleted row", "Patient", c.IdIn(("p4",)), set()),
    ("type is", "Patient", c.TypeIs(("Patient", "List")), PATIENTS),
    ("type is other", "Patient", c.TypeIs(("Observation",)), set()),
    ("patient is", "Observation", c.PatientIs("p3"), {"o3"}),
    ("patient is outside any DMP", "Practitioner", c.PatientIs(""), {"dr1"}),
    ("patient matches", "Observation", c.PatientMatches(c.Token("gender", None, "female")), {"o2"}),
    ("patient matches skips deleted patients", "Observation", c.PatientMatches(c.Token("gender", None, "male")),
     {"o1"}),
    # access facts
    ("doc type in", "Observation", c.DocTypeIn(("11488-4", "x")), {"o1"}),
    ("doc type in none", "Observation", c.DocTypeIn(()), set()),
    ("doc type known", "Observation", c.Not(c.DocTypeIn(("",))), {"o1", "o2"}),
    ("labels clear 4", "Observation", c.LabelsClear(0b100), {"o2", "o3", "o4"}),
    ("labels clear 3", "Observation", c.LabelsClear(0b011), {"o3", "o4"}),
    ("labels clear nothing", "Observation", c.LabelsClear(0), OBS),
    ("owner is", "Observation", c.OwnerIs("patient|p2"), {"o2"}),
    ("doc date before", "Observation", c.DocDateBefore(datetime(2024, 6, 1)), {"o1"}),  # NULL dates never
    ("doc date before none", "Observation", c.DocDateBefore(datetime(2023, 1, 1)), set()),
    # tokens
    ("token any system", "Observation", c.Token("code", None, "1234-5"), {"o1", "o2"}),
    ("token system|code", "Observation", c.Token("code", LOINC, "1234-5"), {"o1"}),
    ("token no system", "Observation", c.Token("code", "", "abc"), {"o3"}),
    ("token no system excludes systems", "Observation", c.Token("code", "", "1234-5"), set()),
    ("token system|", "Observation", c.Token("code", LOINC, None), {"o1"}),
    ("token identifier (selective)", "Patient", c.Token("identifier", INS, "111"), {"p1"}),
    ("token text word start", "Observation", c.Token("code", None, None, "glyq"), {"o1"}),
    ("token text first word", "Observation", c.Token("code", None, None, "hemo"), {"o1"}),
    ("token text concept text", "Observation", c.Token("code", None, None, "gluc"), {"o2"}),
    ("token text mid-word", "Observation", c.Token("code", None, None, "lobine"), set()),
    ("token text % is literal", "Observation", c.Token("code", None, None, "%"), set()),
    ("token text _ is literal", "Observation", c.Token("code", None, None, "_"), set()),
    # strings
    ("string start", "Patient", c.String("family", "dup"), {"p1"}),
    ("string start given", "Patient", c.String("name", "emile"), {"p2"}),
    ("string start % literal", "Patient", c.String("family", "%"), set()),
    ("string start _ literal", "Patient", c.String("family", "_"), set()),
    ("string start with %_", "Patient", c.String("family", "50%_"), {"p2"}),
    ("string contains _", "Patient", c.String("family", "_", "contains"), {"p2"}),
    ("string contains backslash", "Patient", c.String("family", "\\", "contains"), {"p2"}),
    ("string contains \\x", "Patient", c.String("family", "f\\x", "contains"), {"p2"}),
    ("string contains middle", "Patient", c.String("family", "rti", "contains"), {"p3"}),
    ("string exact", "Patient", c.String("family", "Dupont", "exact"), {"p1"}),
    ("string exact is case-sensitive", "Patient", c.String("family", "dupont", "exact"), set()),
    # uris
    ("uri exact", "Patient", c.Uri("_profile", PROFILE + "a"), {"p2"}),
    ("uri below is a prefix", "Patient", c.Uri("_profile", PROFILE + "a", "below"), {"p1", "p2", "p3"}),
    ("uri below _ literal", "Patient", c.Uri("_profile", PROFILE + "a_", "below"), set()),
    ("uri below % literal", "Patient", c.Uri("_profile", PROFILE + "%", "below"), set()),
    ("uri above", "Patient", c.Uri("_profile", PROFILE + "a/b/c", "above"), {"p1", "p2"}),
    # references
    ("reference type/id", "Patient", c.Reference("general-practitioner", "Practitioner", "dr1"), {"p1"}),
    ("reference id only", "Patient", c.Reference("general-practitioner", None, "dr1"), {"p1"}),
    ("reference wrong type", "Patient", c.Reference("general-practitioner", "Organization", "dr1"), set()),
    ("reference url", "Patient", c.Reference("general-practitioner", url="https://other.example/Practitioner/9"),
     {"p2"}),
    ("reference subject", "Observation", c.Reference("subject", "Patient", "p1"), {"o1"}),
    # composite
    ("composite", "DocumentReference", c.Composite("relationship", "DocumentReference/d0", "replaces"), {"d1"}),
    ("composite pairs", "DocumentReference", c.Composite("relationship", "DocumentReference/d1", "replaces"),
     set()),
    # missing
    ("missing true", "Patient", c.Missing("gender", "token", True), {"p3"}),
    ("missing false", "Patient", c.Missing("gender", "token", False), {"p1", "p2"}),
    ("missing quantity", "Observation", c.Missing("value-quantity", "quantity", True), {"o3", "o4"}),
    # chains and _has
    ("chain", "Observation",
     c.Chain("subject", ("Patient",), c.AllOf((c.TypeIs(("Patient",)), c.String("family", "dup")))), {"o1"}),
    ("chain to a deleted target", "Observation", c.Chain("subject", ("Patient",), c.String("family", "gone")),
     set()),
    ("chain wrong target type", "Observation", c.Chain("subject", ("Group",), c.AllOf(())), set()),
    ("chain any target", "Observation", c.Chain("subject", (), c.AllOf(())), {"o1", "o2", "o3"}),
    ("chain of chain", "Observation", c.Chain("subject", ("Patient",), c.Chain(
        "general-practitioner", ("Practitioner",), c.String("name", "house"))), {"o1"}),
    ("has", "Patient", c.Has("Observation", "subject", c.Token("code", None, "1234-5")), {"p1", "p2"}),
    ("has other param", "Patient", c.Has("Observation", "performer", c.AllOf(())), set()),
    ("has any", "Patient", c.Has("Observation", "subject", c.AllOf(())), PATIENTS),
    ("not has", "Patient", c.Not(c.Has("Observation", "subject", c.Token("code", None, "1234-5"))), {"p3"}),
    # logic
    ("not", "Observation", c.Not(c.IdIn(("o1",))), OBS - {"o1"}),
    ("not token includes rows without one", "Observation", c.Not(c.Token("code", LOINC, "1234-5")),
     OBS - {"o1"}),
    ("any of", "Observation", c.AnyOf((c.IdIn(("o1",)), c.Token("code", "", "abc"))), {"o1", "o3"}),
    ("all of", "Observation", c.AllOf((c.Token("code", None, "1234-5"), c.LabelsClear(0b100))), {"o2"}),
    ("empty all of is true", "Observation", c.AllOf(()), OBS),
    ("empty any of is false", "Observation", c.AnyOf(()), set()),
    ("not of empty any of", "Observation", c.Not(c.AnyOf(())), OBS),
]


@pytest.mark.parametrize(("resource_type", "criterion", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_criterion(conn: Connection, resource_type: str, criterion: c.Criterion, expected: set[str]) -> None:
    assert ids(conn, resource_type, criterion) == expected


# Dates: birthdate p1 [1980-05-17, 05-18), p2 [1990, 1991), p3 [1980-05-01, 06-01).
DAY, MONTH, YEAR_1990 = ((datetime(1980, 5, 17), datetime(1980, 5, 18)), (datetime(1980, 5, 1), datetime(1980, 6, 1)),
                         (datetime(1990, 1, 1), datetime(1991, 1, 1)))


@pytest.mark.parametrize(("prefix", "bounds", "expected"), [
    ("eq", MONTH, {"p1", "p3"}),
    ("ne", MONTH, {"p2"}),
    ("gt", DAY, {"p2", "p3"}),     # p3's month reaches beyond the day
    ("lt", DAY, {"p3"}),           # p3's month starts before it
    ("ge", DAY, PATIENTS),
    ("le", DAY, {"p1", "p3"}),
    ("sa", MONTH, {"p2"}),
    ("eb", YEAR_1990, {"p1", "p3"}),
    ("eb", MONTH, set()),
    ("ap", (datetime(1980, 5, 10), datetime(1980, 5, 20)), {"p1", "p3"}),
])
def test_date_prefixes(conn: Connection, prefix: str, bounds: tuple[datetime, datetime], expected: set[str]) -> None:
    assert ids(conn, "Patient", c.DateRange("birthdate", prefix, *bounds)) == expected


@pytest.mark.parametrize(("prefix", "expected"), [
    ("eq", {"p2"}), ("ne", {"p1", "p3"}), ("gt", {"p3"}), ("sa", {"p3"}), ("lt", {"p1"}), ("eb", {"p1"}),
    ("ge", {"p2", "p3"}), ("le", {"p1", "p2"}), ("ap", {"p2"}),
])
def test_last_updated_prefixes(conn: Connection, prefix: str, expected: set[str]) -> None:
    """`_lastUpdated` is an instant on the row: p1 2024-01-01T10, p2 2024-01-02, p3 2024-02-01; searched: 01-02."""
    node = c.DateRange("_lastUpdated", prefix, datetime(2024, 1, 2), datetime(2024, 1, 3))
    assert ids(conn, "Patient", node) == expected


@pytest.mark.parametrize(("prefix", "value", "expected"), [
    ("eq", "10", {"o1"}), ("ne", "10", {"o2"}), ("gt", "10", {"o2"}), ("sa", "10", {"o2"}), ("lt", "20", {"o1"}),
    ("eb", "20", {"o1"}), ("ge", "10", {"o1", "o2"}), ("le", "10", {"o1"}), ("ge", "10.5", {"o2"}),
    ("ap", "10", {"o1"}),
])
def test_number_prefixes(conn: Connection, prefix: str, value: str, expected: set[str]) -> None:
    """Numbers compare the indexed value (the centre of its precision range): o1 10, o2 20."""
    d = Decimal(value)
    low, high = (d - 1, d + 1) if prefix == "ap" else (d - Decimal("0.5"), d + Decimal("0.5"))
    assert ids(conn, "Observation", c.NumberRange("n", prefix, d, low, high)) == expected


@pytest.mark.parametrize(("node", "expected"), [
    (c.NumberRange("value-quantity", "eq", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), True, UCUM, "mg"),
     {"o1"}),
    (c.NumberRange("value-quantity", "eq", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), True, None, "mmol/L"),
     set()),
    (c.NumberRange("value-quantity", "eq", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), True, "http://x", None),
     set()),
    (c.NumberRange("value-quantity", "gt", Decimal("5.4"), Decimal("5.35"), Decimal("5.45"), True), {"o2"}),
    (c.NumberRange("value-quantity", "eq", Decimal("5"), Decimal("4.5"), Decimal("5.5"), True), {"o1"}),
])
def test_quantities(conn: Connection, node: c.NumberRange, expected: set[str]) -> None:
    assert ids(conn, "Observation", node) == expected


def test_unknown_criterion_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compile_criterion("not a criterion")  # type: ignore[arg-type]


@pytest.mark.parametrize(("node", "sql"), [
    (c.String("family", "a%b_c\\"), "LIKE 'a\\%b\\_c\\\\%' ESCAPE '\\'"),
    (c.Uri("_profile", "x_", "below"), "LIKE 'x\\_%' ESCAPE '\\'"),
])
def test_like_patterns_escape_their_wildcards(node: c.Criterion, sql: str) -> None:
    """The pattern as SQL text: the user's % _ \\ are escaped, only the compiler's own % is a wildcard."""
    text = str(compile_criterion(node).compile(compile_kwargs={"literal_binds": True}))
    assert sql in text


def test_selective_tokens_and_references_drive_the_query() -> None:
    """Identifiers and references by id compile to `pk IN (lookup)` (the lookup index drives), others to EXISTS."""
    def sql(node: c.Criterion) -> str:
        return str(compile_criterion(node))

    assert "resource.pk IN (SELECT" in sql(c.Token("identifier", INS, "1"))
    assert "resource.pk IN (SELECT" in sql(c.Reference("subject", "Patient", "p1"))
    assert "EXISTS" in sql(c.Token("code", None, "1")) and " IN (SELECT" not in sql(c.Token("code", None, "1"))
    assert "EXISTS" in sql(c.Reference("subject", url="http://x"))
