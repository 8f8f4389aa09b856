"""Unit tests of keyset paging (`fhir_dmp/storage/paging.py`): cursors (round trip, and every kind of forged or
foreign cursor refused with `BadCursor`), and the pages `queries.find` cuts in `_sort` orders on a real SQLite
table: walked forwards or backwards through cursors, they never repeat nor skip a row, missing values sort last
in both directions, ties fall back on the next key and finally on the row key."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from fhir_dmp.search.parse import SortKey
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import paging, queries
from fhir_dmp.storage.paging import BadCursor, Cursor, decode, encode
from fhir_dmp.storage.records import SYSTEM_SCOPE, Stored
from fhir_dmp.storage.resources import insert_resources
from tests.storage.helpers import new, sqlite_database

# (id, family, birth year, gender, last updated day): ties and missing values in every key.
PEOPLE: list[tuple[str, str | None, int | None, str | None, int]] = [
    ("pa", "b", 1980, "male", 3), ("pb", "a", 1990, "female", 1), ("pc", None, 1980, None, 2),
    ("pd", "b", None, "male", 3), ("pe", "c", 1970, None, 5), ("pf", None, None, "other", 4),
    ("pg", "a", 1990, "female", 1), ("ph", "B", 1985, "male", 6), ("pi", "é", 1980, "female", 2),
]
# What each sort parameter reads of a person (None: no index row), as the index keeps it.
VALUES: dict[str, Callable[[tuple], Any]] = {
    "family": lambda p: None if p[1] is None else {"é": "e"}.get(p[1], p[1].lower()),
    "birthdate": lambda p: None if p[2] is None else datetime(p[2], 1, 1),
    "gender": lambda p: p[3],
    "_lastUpdated": lambda p: datetime(2024, 1, p[4]),
    "_id": lambda p: p[0],
}
KINDS = {"family": "string", "birthdate": "date", "gender": "token", "_lastUpdated": "_lastUpdated", "_id": "_id"}


def sort_of(text: str) -> tuple[SortKey, ...]:
    """`_sort=text` as the parser gives it."""
    return tuple(SortKey(k.lstrip("-"), KINDS[k.lstrip("-")], k.startswith("-")) for k in text.split(","))


def expected_order(sort: tuple[SortKey, ...]) -> list[str]:
    """The R4 order worked out in Python: by each key (missing last, either direction), then creation order."""
    rows = list(PEOPLE)  # creation order = row key order
    for key in reversed(sort):  # stable sorts from the last key to the first: lexicographic
        get = VALUES[key.param]
        present = sorted((p for p in rows if get(p) is not None), key=get, reverse=key.descending)
        rows = present + [p for p in rows if get(p) is None]
    return [p[0] for p in rows]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    db = sqlite_database(Path(tmp_path_factory.mktemp("paging")))
    items = []
    for pid, family, year, gender, day in PEOPLE:
        body: dict[str, Any] = {"resourceType": "Patient", "id": pid}
        if family is not None:
            body["name"] = [{"family": family}]
        if year is not None:
            body["birthDate"] = str(year)
        if gender is not None:
            body["gender"] = gender
        items.append(new(body, patient_key=pid, last_updated=datetime(2024, 1, day)))
    with db.transaction(write=True) as tx:
        insert_resources(tx, items)
    with db.engine.connect() as connection:
        yield connection
    db.dispose()


def page(conn: Connection, sort: tuple[SortKey, ...], cursor: Cursor | None, limit: int) -> list[Stored]:
    """One page, the cursor first sent through its text form as a client would hand it back."""
    if cursor is not None:
        cursor = decode(encode(cursor, sort), sort)
    return queries.find(conn, "Patient", c.AllOf(()), limit=limit, scope=SYSTEM_SCOPE, sort=sort, cursor=cursor)


def after(row: Stored) -> Cursor:
    return Cursor(True, row.sort_key, row.pk)


def before(row: Stored) -> Cursor:
    return Cursor(False, row.sort_key, row.pk)


SORTS = ["family", "-family", "birthdate", "-birthdate", "gender", "-gender", "_lastUpdated", "-_lastUpdated",
         "_id", "-_id", "family,-birthdate", "-family,birthdate", "gender,family", "-gender,-family,_lastUpdated",
         "birthdate,-_lastUpdated"]


@pytest.mark.parametrize("limit", [1, 2, 4])
@pytest.mark.parametrize("text", SORTS)
def test_forwards_then_backwards_walks_every_row_once(conn: Connection, text: str, limit: int) -> None:
    sort = sort_of(text)
    expected = expected_order(sort)
    seen: list[Stored] = []
    rows = page(conn, sort, None, limit)
    while rows:
        assert len(rows) <= limit
        seen += rows
        rows = page(conn, sort, after(rows[-1]), limit)
    assert [r.id for r in seen] == expected

    # backwards from the last row: the pages before it, each in display order, back to the first row
    back: list[Stored] = []
    rows = page(conn, sort, before(seen[-1]), limit)
    while rows:
        assert len(rows) <= limit
        back = rows + back
        rows = page(conn, sort, before(rows[0]), limit)
    assert [r.id for r in back] == expected[:-1]


@pytest.mark.parametrize("text", SORTS)
def test_a_page_backwards_from_any_row_ends_just_before_it(conn: Connection, text: str) -> None:
    """`previous` from any boundary gives exactly the rows before it (up to the limit), in display order."""
    sort = sort_of(text)
    every = page(conn, sort, None, 100)
    for i, row in enumerate(every):
        assert [r.id for r in page(conn, sort, before(row), 3)] == [r.id for r in every[max(0, i - 3):i]]
        assert [r.id for r in page(conn, sort, after(row), 3)] == [r.id for r in every[i + 1:i + 4]]


def test_sort_keys_carry_missing_values_as_none(conn: Connection) -> None:
    rows = page(conn, sort_of("family,birthdate"), None, 100)
    keys = {r.id: r.sort_key for r in rows}
    assert keys["pf"] == (None, None)
    assert keys["pd"] == ("b", None)
    assert keys["pa"] == ("b", datetime(1980, 1, 1))


def test_rows_added_meanwhile_never_shift_a_page(tmp_path: Path) -> None:
    """A row created after page 1 was cut appears before the boundary (not shown) or after it (shown later)."""
    db = sqlite_database(tmp_path)
    sort = sort_of("family")

    def patient(pid: str, family: str) -> None:
        with db.transaction(write=True) as tx:
            insert_resources(tx, [new({"resourceType": "Patient", "id": pid, "name": [{"family": family}]},
                                      patient_key=pid)])

    for pid, family in (("x1", "a"), ("x2", "c"), ("x3", "e")):
        patient(pid, family)
    with db.engine.connect() as conn:
        first = page(conn, sort, None, 2)
    assert [r.id for r in first] == ["x1", "x2"]
    patient("y1", "b")  # before the boundary
    patient("y2", "d")  # after it
    with db.engine.connect() as conn:
        assert [r.id for r in page(conn, sort, after(first[-1]), 10)] == ["y2", "x3"]
    db.dispose()


# --- cursors --------------------------------------------------------------------------------------------------

MIXED = (SortKey("family", "string", False), SortKey("birthdate", "date", True),
         SortKey("value-quantity", "quantity", False), SortKey("_lastUpdated", "_lastUpdated", False))


@pytest.mark.parametrize("cursor", [
    Cursor(True, ("dupont", datetime(1980, 5, 17, 10, 30), Decimal("5.40"), datetime(2024, 1, 1)), 1),
    Cursor(False, (None, None, None, datetime(2024, 1, 1, 0, 0, 0, 1)), 2**63 - 1),
    Cursor(True, ("é,\"x\"\\", None, Decimal("-1E-12"), datetime(2024, 1, 1)), 0),
])
def test_cursor_round_trip(cursor: Cursor) -> None:
    text = encode(cursor, MIXED)
    assert "=" not in text and "+" not in text and "/" not in text  # urlsafe, unpadded: a query value as is
    assert decode(text, MIXED) == cursor


def test_a_float_from_sqlite_comes_back_as_an_exact_decimal() -> None:
    sort = (SortKey("n", "number", False),)
    assert decode(encode(Cursor(True, (0.1,), 3), sort), sort).values == (Decimal("0.1"),)


def test_a_cursor_of_another_sort_is_refused() -> None:
    text = encode(Cursor(True, ("a",), 1), sort_of("family"))
    for other in ("-family", "gender", "family,_id"):
        with pytest.raises(BadCursor):
            decode(text, sort_of(other))


def forge(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


GOOD = {"v": 1, "d": "a", "s": "family,-birthdate", "k": ["a", "1980-01-01T00:00:00"], "pk": 7}


@pytest.mark.parametrize("text", [
    "", "x" * (paging.MAX_CURSOR + 1), "!!!not-base64", base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    forge([1, 2]), forge("cursor"), forge(None),
    forge({**GOOD, "v": 2}), forge({**GOOD, "d": "c"}), forge({k: v for k, v in GOOD.items() if k != "d"}),
    forge({**GOOD, "s": "family"}),
    forge({**GOOD, "pk": -1}), forge({**GOOD, "pk": 2**63}), forge({**GOOD, "pk": "7"}), forge({**GOOD, "pk": True}),
    forge({**GOOD, "pk": 7.0}), forge({k: v for k, v in GOOD.items() if k != "pk"}),
    forge({**GOOD, "k": ["a"]}), forge({**GOOD, "k": "a"}), forge({**GOOD, "k": ["a", "1980-01-01", "x"]}),
    forge({**GOOD, "k": [1, "1980-01-01"]}), forge({**GOOD, "k": ["a\x00", "1980-01-01"]}),
    forge({**GOOD, "k": ["a" * 1025, "1980-01-01"]}), forge({**GOOD, "k": ["a", "yesterday"]}),
    forge({**GOOD, "k": ["a", ["1980"]]}),
])
def test_forged_cursors_are_refused(text: str) -> None:
    with pytest.raises(BadCursor):
        decode(text, sort_of("family,-birthdate"))


def test_the_good_forgery_passes() -> None:
    """The base of the forgeries above is a valid cursor: each refusal is the one field changed."""
    assert decode(forge(GOOD), sort_of("family,-birthdate")) == Cursor(True, ("a", datetime(1980, 1, 1)), 7)


@pytest.mark.parametrize(("sort", "values"), [
    ((SortKey("_id", "_id", False),), [None]),                      # a row always has an id
    ((SortKey("_lastUpdated", "_lastUpdated", False),), [None]),
    ((SortKey("n", "number", False),), ["NaN"]),
    ((SortKey("n", "number", False),), ["-Infinity"]),
    ((SortKey("n", "number", False),), ["ten"]),
])
def test_impossible_values_are_refused(sort: tuple[SortKey, ...], values: list[Any]) -> None:
    doc = {"v": 1, "d": "b", "s": paging.signature(sort), "k": values, "pk": 1}
    with pytest.raises(BadCursor):
        decode(forge(doc), sort)


def test_a_tampered_cursor_is_refused_or_names_another_boundary() -> None:
    """Flipping any one character never crashes the decoder: a BadCursor, or some other well-formed boundary."""
    sort = sort_of("family,-birthdate")
    text = encode(Cursor(True, ("dupont", datetime(1980, 1, 1)), 42), sort)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i in range(len(text)):
        for ch in alphabet[::7]:
            forged = text[:i] + ch + text[i + 1:]
            try:
                cursor = decode(forged, sort)
            except BadCursor:
                continue
            assert isinstance(cursor.pk, int) and len(cursor.values) == 2


def test_order_by_puts_missing_values_last_and_ends_with_the_key() -> None:
    from fhir_dmp.storage.tables import resource

    sort = sort_of("family,_id")
    cols = [paging.sort_value(s) for s in sort]
    forward = [str(e) for e in paging.order_by(cols, sort, resource.c.pk, reverse=False)]
    backward = [str(e) for e in paging.order_by(cols, sort, resource.c.pk, reverse=True)]
    assert len(forward) == 4  # family's missing flag, family, _id (never missing: no flag), the key
    assert forward[0].startswith("CASE") and forward[0].endswith("ASC") and backward[0].endswith("DESC")
    assert forward[-1] == "resource.pk ASC" and backward[-1] == "resource.pk DESC"
    assert forward[2] == "resource.id ASC" and backward[2] == "resource.id DESC"


def test_unsortable_kinds_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        paging.sort_value(SortKey("relationship", "composite", False))
