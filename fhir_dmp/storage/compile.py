"""Criteria tree -> one SQLAlchemy WHERE clause over a `resource` row (or an alias of it, in chains).

Each index match is an EXISTS on its index table correlated to the row's key, so that AND, OR, NOT,
chains and `_has` compose freely and the access policy can add its own criteria to the same clause.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from sqlalchemy import ColumnElement, and_, exists, false, literal, not_, or_, select, true
from sqlalchemy.sql.selectable import FromClause

from fhir_dmp.storage import criteria as c
from fhir_dmp.storage.tables import INDEX_TABLES, resource

_SQL_ESCAPE = "\\"


def compile_criterion(node: c.Criterion, row: FromClause = resource) -> ColumnElement[bool]:
    """The WHERE clause for `node` on the resource row `row`. On the resource table itself, the clause of a
    criterion is built once and reused (criteria are immutable values; an access scope recurs on every request
    of its caller, so the same clause, and SQLAlchemy's cached compilation of it, serve them all)."""
    if row is resource:
        try:
            return _compiled(node)
        except TypeError:  # a criterion holding an unhashable value: built afresh
            return _compile(node, row)
    return _compile(node, row)


@lru_cache(maxsize=4096)
def _compiled(node: c.Criterion) -> ColumnElement[bool]:
    return _compile(node, resource)


def _compile(node: c.Criterion, row: FromClause) -> ColumnElement[bool]:
    compiler = _COMPILERS.get(type(node))
    if compiler is None:
        raise TypeError(f"unknown criterion {node!r}")
    return compiler(node, row)


def _index(kind: str, param: str, row: FromClause, *conds: ColumnElement[bool],
           selective: bool = False, table: FromClause | None = None) -> ColumnElement[bool]:
    """A match in an index table (or `table`, an alias of it): `pk IN (lookup)` for selective values (the lookup
    index drives the query), a correlated EXISTS probing (resource_pk, param) for the others (they only filter)."""
    table = INDEX_TABLES[kind] if table is None else table
    # correlated to the row alone (never to an enclosing match on the same index table: they nest inside `within`)
    if selective:
        return row.c.pk.in_(select(table.c.resource_pk).where(table.c.param == param, *conds).correlate(None))
    return exists(select(literal(1)).select_from(table).where(
        table.c.resource_pk == row.c.pk, table.c.param == param, *conds).correlate(row))


def _selective_token(node: c.Token) -> bool:
    return node.code is not None and ("identifier" in node.param or node.param.endswith(":of-type"))


def _like(value: str) -> str:
    return value.replace(_SQL_ESCAPE, _SQL_ESCAPE * 2).replace("%", _SQL_ESCAPE + "%").replace("_", _SQL_ESCAPE + "_")


def _token(node: c.Token, row: FromClause) -> ColumnElement[bool]:
    t = INDEX_TABLES["token"].c
    conds = []
    if node.code is not None:
        conds.append(t.code == node.code[:255])
    if node.system is not None:
        conds.append(t.system == node.system[:255])
    if node.text is not None:
        word = _like(node.text)
        conds.append(or_(t.text.like(f"{word}%", escape=_SQL_ESCAPE), t.text.like(f"% {word}%", escape=_SQL_ESCAPE)))
    return _index("token", node.param, row, *conds, selective=_selective_token(node))


def _string(node: c.String, row: FromClause) -> ColumnElement[bool]:
    t = INDEX_TABLES["string"].c
    if node.mode == "exact":
        cond = t.value_exact == node.value[:255]
    elif node.mode == "contains":
        cond = t.value_norm.like(f"%{_like(node.value)}%", escape=_SQL_ESCAPE)
    else:
        cond = t.value_norm.like(f"{_like(node.value)}%", escape=_SQL_ESCAPE)
    return _index("string", node.param, row, cond)


def _uri(node: c.Uri, row: FromClause) -> ColumnElement[bool]:
    t = INDEX_TABLES["uri"].c
    if node.mode == "below":
        cond = t.uri.like(f"{_like(node.value)}%", escape=_SQL_ESCAPE)
    elif node.mode == "above":
        parts = node.value.split("/")
        cond = t.uri.in_(["/".join(parts[:i]) for i in range(1, len(parts) + 1)])
    else:
        cond = t.uri == node.value[:512]
    return _index("uri", node.param, row, cond)


def date_condition(prefix: str, low_col, high_col, low: datetime, high: datetime):  # type: ignore[no-untyped-def]
    """R4 prefixes on ranges: the indexed [low_col, high_col) against the searched [low, high)."""
    inside = and_(low_col >= low, high_col <= high)
    if prefix == "eq":
        return inside
    if prefix == "ne":
        return not_(inside)
    if prefix == "gt":
        return high_col > high
    if prefix == "lt":
        return low_col < low
    if prefix == "ge":
        return or_(high_col > high, inside)
    if prefix == "le":
        return or_(low_col < low, inside)
    if prefix == "sa":
        return low_col >= high
    if prefix == "eb":
        return high_col <= low
    # ap: overlaps the searched range widened by the caller (parse.py widens low/high)
    return and_(low_col < high, high_col > low)


def _date(node: c.DateRange, row: FromClause) -> ColumnElement[bool]:
    if node.param == "_lastUpdated":
        return _instant_condition(node, row.c.last_updated)
    t = INDEX_TABLES["date"].c
    return _index("date", node.param, row, date_condition(node.prefix, t.low, t.high, node.low, node.high))


def _instant_condition(node: c.DateRange, col) -> ColumnElement[bool]:  # type: ignore[no-untyped-def]
    """A point in time against the searched range (no SQL interval arithmetic: portable)."""
    low, high, p = node.low, node.high, node.prefix
    if p == "eq":
        return and_(col >= low, col < high)
    if p == "ne":
        return or_(col < low, col >= high)
    if p in ("gt", "sa"):
        return col >= high
    if p in ("lt", "eb"):
        return col < low
    if p == "ge":
        return col >= low
    if p == "le":
        return col < high
    return and_(col >= low, col < high)  # ap: bounds already widened


def number_condition(prefix: str, col, value: Decimal, low: Decimal, high: Decimal):  # type: ignore[no-untyped-def]
    if prefix == "eq":
        return and_(col >= low, col < high)
    if prefix == "ne":
        return or_(col < low, col >= high)
    if prefix in ("gt", "sa"):
        return col > value
    if prefix in ("lt", "eb"):
        return col < value
    if prefix == "ge":
        return col >= value
    if prefix == "le":
        return col <= value
    return and_(col >= low, col <= high)  # ap: bounds widened by the parser


def _number(node: c.NumberRange, row: FromClause) -> ColumnElement[bool]:
    kind = "quantity" if node.quantity else "number"
    t = INDEX_TABLES[kind].c
    centre = (t.low + t.high) / 2
    conds = [number_condition(node.prefix, centre, node.value, node.low, node.high)]
    if node.quantity and node.system:
        conds.append(t.system == node.system)
    if node.quantity and node.code:
        conds.append(t.code == node.code)
    return _index(kind, node.param, row, *conds)


def _reference(node: c.Reference, row: FromClause) -> ColumnElement[bool]:
    table = INDEX_TABLES["reference"]
    if node.within is not None:  # its own alias: `within` may hold index matches of its own (they nest)
        table = table.alias()
    t = table.c
    conds = []
    if node.url is not None:
        conds.append(t.url == node.url[:512])
    if node.target_id is not None:
        conds.append(t.target_id == node.target_id)
    if node.target_type is not None:
        conds.append(t.target_type == node.target_type)
    if node.within is not None:
        target = resource.alias()
        reached = exists(select(literal(1)).select_from(target).where(
            target.c.resource_type == t.target_type, target.c.id == t.target_id,
            compile_criterion(node.within, target)))
        conds.append(reached if node.target_id is not None else or_(t.target_id == "", reached))
    return _index("reference", node.param, row, *conds, selective=node.target_id is not None, table=table)


def _composite(node: c.Composite, row: FromClause) -> ColumnElement[bool]:
    t = INDEX_TABLES["composite"].c
    return _index("composite", node.param, row, t.first == node.first[:255], t.second == node.second[:255])


def _missing(node: c.Missing, row: FromClause) -> ColumnElement[bool]:
    present = _index(node.kind, node.param, row)
    return not_(present) if node.missing else present


def _chain(node: c.Chain, row: FromClause) -> ColumnElement[bool]:
    t = INDEX_TABLES["reference"]
    target = resource.alias()
    conds = [target.c.resource_type == t.c.target_type, target.c.id == t.c.target_id,
             target.c.deleted.is_(False), compile_criterion(node.inner, target)]
    if node.target_types:
        conds.append(t.c.target_type.in_(node.target_types))
    return exists(select(literal(1)).select_from(t).join(target, and_(*conds)).where(
        t.c.resource_pk == row.c.pk, t.c.param == node.param))


def _has(node: c.Has, row: FromClause) -> ColumnElement[bool]:
    t = INDEX_TABLES["reference"]
    source = resource.alias()
    return exists(select(literal(1)).select_from(t).join(source, source.c.pk == t.c.resource_pk).where(
        t.c.param == node.param, t.c.target_type == row.c.resource_type, t.c.target_id == row.c.id,
        source.c.resource_type == node.source_type, source.c.deleted.is_(False),
        compile_criterion(node.inner, source)))


def _patients(inner: c.Criterion):  # type: ignore[no-untyped-def]
    patient = resource.alias()
    return select(patient.c.id).where(patient.c.resource_type == "Patient", patient.c.deleted.is_(False),
                                      compile_criterion(inner, patient))


_COMPILERS = {
    c.IdIn: lambda n, row: row.c.id.in_(n.ids) if n.ids else false(),
    c.TypeIs: lambda n, row: row.c.resource_type.in_(n.types),
    c.PatientIs: lambda n, row: row.c.patient_key == n.patient_key,
    c.PatientMatches: lambda n, row: row.c.patient_key.in_(_patients(n.inner)),
    c.DocTypeIn: lambda n, row: row.c.doc_type.in_(n.codes) if n.codes else false(),
    c.LabelsClear: lambda n, row: row.c.labels.op("&")(n.mask) == 0,
    c.OwnerIs: lambda n, row: row.c.owner == n.owner,
    c.DocDateBefore: lambda n, row: row.c.doc_date < n.instant,
    c.Token: _token,
    c.String: _string,
    c.Uri: _uri,
    c.DateRange: _date,
    c.NumberRange: _number,
    c.Reference: _reference,
    c.Composite: _composite,
    c.Missing: _missing,
    c.Chain: _chain,
    c.Has: _has,
    c.Not: lambda n, row: not_(compile_criterion(n.part, row)),
    c.AnyOf: lambda n, row: or_(false(), *(compile_criterion(p, row) for p in n.parts)),
    c.AllOf: lambda n, row: and_(true(), *(compile_criterion(p, row) for p in n.parts)),
}
