"""Searches over current rows and versions: keyset pages, exact counts, includes, history, a DMP's pages.

Every query takes a `scope` (the caller's access scope, or `SYSTEM_SCOPE` for the server's own lookups) that is
ANDed into its WHERE clause: the access policy narrows the query itself, never the rows it returned.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from fhir_dmp.storage import paging, shapes
from fhir_dmp.storage.compile import compile_criterion
from fhir_dmp.storage.criteria import AllOf, Criterion
from fhir_dmp.storage.paging import Cursor, SortSpec
from fhir_dmp.storage.records import Stored, row_to_stored
from fhir_dmp.storage.resources import CURRENT, VERSION_ROWS, VERSIONS
from fhir_dmp.storage.tables import INDEX_TABLES, resource, resource_version


def history(
    conn: Connection,
    resource_type: str | None,
    rid: str | None,
    *,
    since: datetime | None,
    before_pk: int | None,
    limit: int,
    scope: Criterion,
) -> list[Stored]:
    """Versions newest first within `scope` (judged on the resource's current row), keyset-paged on the version key."""
    query = VERSIONS.where(*_history_filter(resource_type, rid, since, scope))
    if before_pk is not None:
        query = query.where(resource_version.c.pk < before_pk)
    rows = conn.execute(query.order_by(resource_version.c.pk.desc()).limit(limit)).all()
    return [row_to_stored(r) for r in rows]


def history_count(conn: Connection, resource_type: str | None, rid: str | None, since: datetime | None, *,
                  scope: Criterion) -> int:
    query = select(func.count()).select_from(VERSION_ROWS).where(
        *_history_filter(resource_type, rid, since, scope))
    return conn.execute(query).scalar_one()


def _history_filter(resource_type: str | None, rid: str | None, since: datetime | None,
                    scope: Criterion) -> list[ColumnElement[bool]]:
    conds = [compile_criterion(scope)]
    if resource_type:
        conds.append(resource_version.c.resource_type == resource_type)
    if rid:
        conds.append(resource_version.c.id == rid)
    if since is not None:
        conds.append(resource_version.c.last_updated >= since)
    return conds


class IncludeSpec(Protocol):
    """One `_include`/`_revinclude` as the search parser gives it (`search.parse.Include`)."""

    @property
    def source_type(self) -> str: ...
    @property
    def param(self) -> str: ...  # "*": every reference parameter of the source type
    @property
    def target_type(self) -> str | None: ...


def find(conn: Connection, resource_type: str, where: Criterion, *, limit: int, scope: Criterion,
         sort: Sequence[SortSpec] = (), cursor: Cursor | None = None) -> list[Stored]:
    """Current, non-deleted matches within `scope`, one keyset page in `sort` order (then by key).

    Rows come back in display order, each with its `sort_key`; a backwards cursor reads the reversed
    order and re-reverses, so the row beyond the page is then the first one. `scope` is always given:
    the caller's access scope, or `SYSTEM_SCOPE` for the server's own lookups. A first page on PostgreSQL
    runs the statement of its criteria's shape (`shapes`), built once.
    """
    shaped = shapes.parametrize(AllOf((where, scope))) if cursor is None and conn.dialect.name == "postgresql" \
        else None
    if shaped is not None:
        template, values = shaped
        found = shapes.rows(conn, _find_query, (resource_type, *template.parts, tuple(sort), None, limit), values)
        if found is not None:
            return [row_to_stored(r, sort_width=len(sort)) for r in found]
    query = _find_query(resource_type, where, scope, tuple(sort), cursor, limit)
    rows = [row_to_stored(r, sort_width=len(sort)) for r in conn.execute(query)]
    return rows[::-1] if cursor is not None and not cursor.forward else rows


def _find_query(resource_type: str, where: Criterion, scope: Criterion, sort: tuple[SortSpec, ...],
                cursor: Cursor | None, limit: int) -> Any:
    keys = select(resource.c.pk.label("pk"), *(paging.sort_value(s).label(f"k{i}") for i, s in enumerate(sort)))
    keys = keys.where(_visible(resource_type, where, scope))
    matches = keys.subquery("matches")
    # The page's keys are chosen (cursor, order, limit) before any content is joined: with ORDER BY ...
    # LIMIT over the join, PostgreSQL may walk every row of the type in key order (measured: 75 ms
    # instead of 1 ms for a patient-identifier chain).
    backwards = cursor is not None and not cursor.forward
    keyed = [matches.c[f"k{i}"] for i in range(len(sort))]
    chosen = select(matches)
    if cursor is not None:
        chosen = chosen.where(paging.beyond(keyed, sort, matches.c.pk, cursor))
    page = chosen.order_by(*paging.order_by(keyed, sort, matches.c.pk, reverse=backwards)).limit(limit).subquery("page")
    columns = [page.c[f"k{i}"] for i in range(len(sort))]
    query = CURRENT.add_columns(*columns).join(page, page.c.pk == resource.c.pk)
    return query.order_by(*paging.order_by(columns, sort, page.c.pk, reverse=backwards))


def patient_keys(conn: Connection, resource_type: str, where: Criterion, *, among: Set[str]) -> list[str]:
    """The DMPs (patient keys) among `among` holding current matches of `where`, whoever may see them: the
    server's own lookup of which DMPs' scopes a conditional operation naming no patient must be judged in. All of
    them, no bound: a bound would let matches the caller may not see crowd out the one they see."""
    if not among:
        return []
    query = select(resource.c.patient_key).where(
        resource.c.resource_type == resource_type, resource.c.deleted.is_(False),
        resource.c.patient_key.in_(sorted(among)), compile_criterion(where))
    return sorted(conn.execute(query.distinct()).scalars())


def count(conn: Connection, resource_type: str, where: Criterion, *, scope: Criterion) -> int:
    """The exact number of matches `find` pages through (same criteria, same scope)."""
    shaped = shapes.parametrize(AllOf((where, scope))) if conn.dialect.name == "postgresql" else None
    if shaped is not None:
        found = shapes.rows(conn, _count_query, (resource_type, *shaped[0].parts), shaped[1])
        if found is not None:
            return int(found[0][0])
    return conn.execute(_count_query(resource_type, where, scope)).scalar_one()


def _count_query(resource_type: str, where: Criterion, scope: Criterion) -> Any:
    return select(func.count()).select_from(resource).where(_visible(resource_type, where, scope))


def _visible(resource_type: str, where: Criterion, scope: Criterion) -> ColumnElement[bool]:
    return and_(resource.c.resource_type == resource_type, resource.c.deleted.is_(False),
                compile_criterion(where), compile_criterion(scope))


def included(conn: Connection, sources: Sequence[Stored], specs: Sequence[IncludeSpec], *,
             scope: Criterion) -> list[Stored]:
    """`_include`: the current resources within `scope` that `sources` refer to through `specs`, one statement."""
    if not sources or not specs:
        return []
    refs = INDEX_TABLES["reference"]
    x = refs.c
    target = resource.alias("target")
    by_spec = or_(*(and_(x.resource_type == s.source_type, *_param(x, s.param),
                         *([target.c.resource_type == s.target_type] if s.target_type else []))
                    for s in specs))
    # Uncorrelated: the page's reference rows drive the lookup of their targets (a correlated EXISTS made
    # SQLite probe every stored resource: 260 ms at 100,000 documents).
    referred = resource.c.pk.in_(
        select(target.c.pk)
        .select_from(refs.join(target, and_(target.c.resource_type == x.target_type, target.c.id == x.target_id)))
        .where(x.resource_pk.in_(sorted({s.pk for s in sources})), by_spec))
    return _current_where(conn, referred, scope)


def revincluded(conn: Connection, targets: Sequence[Stored], specs: Sequence[IncludeSpec], *,
                scope: Criterion) -> list[Stored]:
    """`_revinclude`: the current resources within `scope` whose `specs` reference points at a target."""
    if not targets or not specs:
        return []
    x = INDEX_TABLES["reference"].c
    ids: dict[str, set[str]] = {}
    for t in targets:
        ids.setdefault(t.resource_type, set()).add(t.id)
    pointing = or_(*(and_(x.target_type == rtype, x.target_id.in_(sorted(rids))) for rtype, rids in ids.items()))
    by_spec = or_(*(and_(x.resource_type == s.source_type, *_param(x, s.param),
                         *([x.target_type == s.target_type] if s.target_type else []))
                    for s in specs))
    referring = resource.c.pk.in_(select(x.resource_pk).where(pointing, by_spec))
    return _current_where(conn, referring, scope)


def _param(x: Any, param: str) -> list[ColumnElement[bool]]:
    return [] if param == "*" else [x.param == param]


def _current_where(conn: Connection, condition: ColumnElement[bool], scope: Criterion) -> list[Stored]:
    query = CURRENT.where(resource.c.deleted.is_(False), condition, compile_criterion(scope))
    return [row_to_stored(r) for r in conn.execute(query.order_by(resource.c.pk))]


def dmp_page(conn: Connection, patient_key: str, types: Sequence[str], *, since: datetime | None, scope: Criterion,
             after_pk: int | None, limit: int) -> list[Stored]:
    """The current resources of `types` filed in one DMP, within `scope`, in key order after `after_pk`: a
    keyset page of `Patient/$everything` (the access scope is in the statement, never applied after it)."""
    query = CURRENT.where(*_dmp_filter(patient_key, types, since, scope))
    if after_pk is not None:
        query = query.where(resource.c.pk > after_pk)
    return [row_to_stored(r) for r in conn.execute(query.order_by(resource.c.pk).limit(limit))]


def dmp_count(conn: Connection, patient_key: str, types: Sequence[str], *, since: datetime | None,
              scope: Criterion) -> int:
    """The exact number of resources `dmp_page` pages through."""
    query = select(func.count()).select_from(resource).where(*_dmp_filter(patient_key, types, since, scope))
    return conn.execute(query).scalar_one()


def _dmp_filter(patient_key: str, types: Sequence[str], since: datetime | None,
                scope: Criterion) -> list[ColumnElement[bool]]:
    conds = [resource.c.patient_key == patient_key, resource.c.resource_type.in_(list(types)),
             resource.c.deleted.is_(False), compile_criterion(scope)]
    if since is not None:
        conds.append(resource.c.last_updated >= since)
    return conds
