"""The search index of traces, written when a search needs it rather than with every trace.

Every interaction writes an AuditEvent; few are ever searched. Writing a trace's dozen or more index rows (a
search's trace names every document it returned) cost about a third of a read's database work. So a trace is
stored with its resource row and a row of `index_pending` (its DMP, its owner); a search that can reach traces
first claims the pending rows its access scope can reach (`claim`), and the caller writes their index rows
(`write`) in the same transaction, before the search's own statements run. Claiming locks the pending rows in key
order, so two searches never index a trace twice nor deadlock; a search waiting on another's claim then sees the
rows it wrote (READ COMMITTED: each statement a new snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from fhir_dmp.storage import bulk, prepared
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage.compile import compile_criterion
from fhir_dmp.storage.records import IndexRows, Stored, row_to_stored
from fhir_dmp.storage.resources import CURRENT
from fhir_dmp.storage.tables import index_pending, resource

TRACE = "AuditEvent"
_TRUE: c.Criterion = c.AllOf(())
_FALSE: c.Criterion = c.AnyOf(())


def reach(scope: c.Criterion) -> c.Criterion:
    """The pending traces a search within `scope` could reach, as a criterion over `index_pending`'s own columns
    (its DMP and owner): every other condition of the scope is widened to true (indexing a trace nobody asked
    for costs a little; missing one would hide it), and a type test is true when it admits traces."""
    if isinstance(node := scope, c.PatientIs | c.OwnerIs):
        return node
    if isinstance(node, c.TypeIs):
        return _TRUE if TRACE in node.types else _FALSE
    if isinstance(node, c.AllOf | c.AnyOf):  # simplified: false absorbs an AllOf and true an AnyOf
        absorbing, neutral = (_FALSE, _TRUE) if isinstance(node, c.AllOf) else (_TRUE, _FALSE)
        parts = [reach(p) for p in node.parts]
        if absorbing in parts:
            return absorbing
        kept = tuple(p for p in parts if p != neutral)
        return kept[0] if len(kept) == 1 else type(node)(kept)
    return _TRUE  # Not, index criteria, access facts: widened


def claim(conn: Connection, scope: c.Criterion | None, *, limit: int | None = None) -> list[Stored]:
    """Take the pending traces within reach of `scope` (None: every one), oldest first, at most `limit`: their
    pending rows are deleted (locked until this transaction ends) and their current versions returned."""
    where = reach(scope) if scope is not None else _TRUE
    if where == _FALSE:
        return []
    keys = select(index_pending.c.patient_key, index_pending.c.resource_pk) \
        .where(compile_criterion(where, index_pending)).order_by(index_pending.c.resource_pk).limit(limit) \
        .with_for_update()
    if conn.dialect.name == "postgresql":  # by the primary key of the rows locked, in key order
        claimed = keys.subquery("claimed")
        pks = [r[0] for r in conn.execute(delete(index_pending).where(
            index_pending.c.patient_key == claimed.c.patient_key,
            index_pending.c.resource_pk == claimed.c.resource_pk).returning(index_pending.c.resource_pk))]
    else:
        found = [tuple(r) for r in conn.execute(keys)]
        pks = [pk for _, pk in found]
        for key, pk in found:
            conn.execute(delete(index_pending).where(index_pending.c.patient_key == key,
                                                     index_pending.c.resource_pk == pk))
    if not pks:
        return []
    rows = conn.execute(CURRENT.where(resource.c.pk.in_(sorted(pks))).order_by(resource.c.pk))
    return [row_to_stored(r) for r in rows]


def write(conn: Connection, items: Sequence[tuple[Stored, IndexRows]]) -> None:
    """Write the index rows of claimed traces, replacing any they had (`fhir-dmp reindex` may have been first)."""
    if not items:
        return
    if conn.dialect.name != "postgresql":
        for stored, rows in items:
            bulk.replace_index(conn, stored.pk, stored.resource_type, stored.patient_key, rows)
        return
    kinds = bulk.index_kinds([rows for _, rows in items])
    params: dict[str, Any] = {"items": bulk.to_json([
        {"n": n, "pk": s.pk, "patient_key": s.patient_key, "resource_type": s.resource_type}
        for n, (s, _) in enumerate(items)])}
    for kind in kinds:
        params[kind] = bulk.to_json([{"n": n, **row} for n, (_, rows) in enumerate(items)
                                     for row in rows.get(kind, ())])
    prepared.rows(conn, bulk.index_existing_statement(kinds), params)


def pend(conn: Connection, rows: Sequence[tuple[str, int, str]]) -> None:
    """Note traces (DMP, resource key, owner) as not indexed yet (SQLite; PostgreSQL does it in the append)."""
    if rows:
        conn.execute(insert(index_pending), [{"patient_key": k, "resource_pk": pk, "owner": owner}
                                             for k, pk, owner in rows])
