"""Keyset pages in any `_sort` order: sort expressions, ORDER BY, "after the cursor" predicates, cursors.

No OFFSET: a page boundary is the last row's own sort values and key, so rows that other clients insert
meanwhile fall before the boundary (never shown) or after it (shown later), and never shift a page.
Every order ends with the row key, so it is total and a boundary is exact.

A missing value (no index row for the parameter) sorts last in both directions. Instead of sentinels,
whose place depends on the column's collation, the predicates test `IS NULL` explicitly, so NULL never
reaches a comparison that could drop or repeat a row.

The cursor is opaque to clients: urlsafe base64 of JSON `{"v": 1, "d": "a"|"b", "s": sort, "k": values,
"pk": key}` - "a" for the rows after the boundary (next), "b" for the rows before it (previous).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, case, false, func, or_, select
from sqlalchemy.sql.selectable import FromClause

from fhir_dmp.storage.tables import INDEX_TABLES, resource

VERSION = 1
MAX_CURSOR = 4096
# The index column a kind sorts by (the smallest of the resource's rows); date/number/quantity: the range's low.
_SORT_COLUMN = {"date": "low", "number": "low", "quantity": "low", "string": "value_norm", "token": "code",
                "uri": "uri"}


class SortSpec(Protocol):
    """One `_sort` key as the search parser gives it (`search.parse.SortKey`)."""

    @property
    def param(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def descending(self) -> bool: ...


class BadCursor(ValueError):
    """A cursor this server did not give for this order (tampered, truncated, or of another `_sort`)."""


@dataclass(frozen=True)
class Cursor:
    """A page boundary: the rows after it (`forward`) or before it, in the order of `_sort`."""

    forward: bool
    values: tuple[Any, ...]  # one per sort key; None when the row has no value
    pk: int


def sort_value(spec: SortSpec, row: FromClause = resource) -> ColumnElement[Any]:
    """The value a row sorts by: a column, or the smallest value of its index rows (NULL: none)."""
    if spec.kind == "_id":
        return row.c.id
    if spec.kind == "_lastUpdated":
        return row.c.last_updated
    t = INDEX_TABLES[spec.kind].c
    if spec.kind == "reference":  # a local target by id, else the absolute or canonical URL
        column: ColumnElement[Any] = case((t.target_id != "", t.target_id), else_=t.url)
    elif spec.kind in _SORT_COLUMN:
        column = t[_SORT_COLUMN[spec.kind]]
    else:
        raise TypeError(f"{spec.kind} parameters cannot be sorted")
    return (select(func.min(column)).where(t.resource_pk == row.c.pk, t.param == spec.param)
            .scalar_subquery())


def nullable(spec: SortSpec) -> bool:
    return spec.kind not in ("_id", "_lastUpdated")


def order_by(columns: Sequence[ColumnElement[Any]], sort: Sequence[SortSpec], pk: ColumnElement[Any],
             *, reverse: bool) -> list[ColumnElement[Any]]:
    """ORDER BY for `columns` (one per key, then the key): missing values last, or first when reversed."""
    out: list[ColumnElement[Any]] = []
    for col, spec in zip(columns, sort, strict=True):
        if nullable(spec):
            missing = case((col.is_(None), 1), else_=0)
            out.append(missing.desc() if reverse else missing.asc())
        out.append(col.desc() if spec.descending != reverse else col.asc())
    out.append(pk.desc() if reverse else pk.asc())
    return out


def beyond(columns: Sequence[ColumnElement[Any]], sort: Sequence[SortSpec], pk: ColumnElement[Any],
           cursor: Cursor) -> ColumnElement[bool]:
    """Rows strictly after the boundary in the walk's order: `(k1, ..., kn, pk) > cursor` as OR/AND chains.

    Walking backwards is walking forwards in the reversed order (directions flipped, missing first).
    """
    reverse = not cursor.forward
    disjuncts: list[ColumnElement[bool]] = []
    equal: list[ColumnElement[bool]] = []
    for col, spec, value in zip(columns, sort, cursor.values, strict=True):
        descending = spec.descending != reverse
        if value is None:  # the boundary row has no value: only other missing rows are level with it
            after = col.is_not(None) if reverse else false()
            same = col.is_(None)
        else:
            after = col < value if descending else col > value
            if not reverse:  # missing values come after every value
                after = or_(after, col.is_(None))
            same = col == value
        disjuncts.append(and_(*equal, after))
        equal.append(same)
    disjuncts.append(and_(*equal, pk < cursor.pk if reverse else pk > cursor.pk))
    return or_(*disjuncts)


def signature(sort: Sequence[SortSpec]) -> str:
    return ",".join(("-" if s.descending else "") + s.param for s in sort)


def encode(cursor: Cursor, sort: Sequence[SortSpec]) -> str:
    values = [_dump(v) for v in cursor.values]
    doc = {"v": VERSION, "d": "a" if cursor.forward else "b", "s": signature(sort), "k": values, "pk": cursor.pk}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str, sort: Sequence[SortSpec]) -> Cursor:
    """The boundary a cursor names, checked against the order it must have been made for."""
    if not text or len(text) > MAX_CURSOR:
        raise BadCursor("empty or oversized cursor")
    try:
        doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise BadCursor("not a cursor") from exc
    if not isinstance(doc, dict) or doc.get("v") != VERSION or doc.get("d") not in ("a", "b"):
        raise BadCursor("not a cursor of this server version")
    if doc.get("s") != signature(sort):
        raise BadCursor("the cursor was made for another _sort")
    pk, values = doc.get("pk"), doc.get("k")
    if type(pk) is not int or not 0 <= pk < 2**63 or not isinstance(values, list) or len(values) != len(sort):
        raise BadCursor("malformed cursor")
    return Cursor(doc["d"] == "a", tuple(_load(v, s) for v, s in zip(values, sort, strict=True)), pk)


def _dump(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):  # SQLite may hand numbers back as floats
        return repr(value)
    return value


def _load(value: Any, spec: SortSpec) -> Any:
    if value is None:
        if not nullable(spec):
            raise BadCursor(f"the cursor has no value for {spec.param}")
        return None
    if not isinstance(value, str) or len(value) > 1024 or "\x00" in value:  # NUL: PostgreSQL refuses it
        raise BadCursor(f"malformed cursor value for {spec.param}")
    try:
        if spec.kind in ("_lastUpdated", "date"):
            return datetime.fromisoformat(value)
        if spec.kind in ("number", "quantity"):
            number = Decimal(value)
            if not number.is_finite():
                raise BadCursor(f"malformed cursor value for {spec.param}")
            return number
    except (ValueError, InvalidOperation) as exc:
        raise BadCursor(f"malformed cursor value for {spec.param}") from exc
    return value
