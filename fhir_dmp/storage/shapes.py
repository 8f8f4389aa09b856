"""A search page's SQL built once per shape of criteria, its values bound at each run.

Two searches that differ only in the patient, the codes or the caller's identity (`DocumentReference?patient=a&
status=current` by one médecin, `?patient=b&status=current` by another) have the same statement. Building it
(SQLAlchemy's objects, its cache key, the compilation) cost a search about a fifth of its Python. So the criteria are
split into a template, where each value compared by equality is replaced by a marker, and those values
(`parametrize`); the template's statement is built and compiled once (`lru_cache`), and each run binds the values
in place of the markers. Values compared otherwise (prefixes, ranges, LIKE patterns) stay in the template: they are
transformed while the statement is built, so their statement is their own. Criteria holding a NUL character (no
marker may be mistaken for a client's value) are built the usual way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.base import Executable

from fhir_dmp.storage import criteria as c
from fhir_dmp.storage.statements import note_statement

_MARK = "\x00{}\x00"
_INDEX_WIDTH = 255  # token systems and codes are cut to their column's length when indexed and searched


def _holds_nul(leaf: object) -> bool:
    """True when a criterion kept in a template holds a NUL character (where a marker could hide)."""
    for value in vars(leaf).values():
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, tuple) and any(isinstance(v, str) and "\x00" in v for v in value):
            return True
    return False


class _Unshapeable(Exception):
    pass


def parametrize(node: c.Criterion) -> tuple[c.Criterion, tuple[Any, ...]] | None:
    """(template, values): `node` with its equality values replaced by markers, the values in marker order;
    None when a value kept in the template holds a NUL character."""
    values: list[Any] = []

    def mark(value: str) -> str:
        values.append(value)
        return _MARK.format(len(values) - 1)

    def walk(n: c.Criterion) -> c.Criterion:
        kind = type(n)
        if kind is c.AllOf or kind is c.AnyOf:
            return kind(tuple(walk(p) for p in n.parts))  # type: ignore[union-attr]
        if kind is c.PatientIs:
            return c.PatientIs(mark(n.patient_key))  # type: ignore[union-attr]
        if kind is c.OwnerIs:
            return c.OwnerIs(mark(n.owner))  # type: ignore[union-attr]
        if kind is c.Token and n.text is None:  # type: ignore[union-attr]
            return replace(n, code=None if n.code is None else mark(n.code[:_INDEX_WIDTH]),  # type: ignore
                           system=None if n.system is None else mark(n.system[:_INDEX_WIDTH]))  # type: ignore
        if kind is c.Reference:  # `within` (the caller's scope on the target) is a criterion of its own
            return replace(n, target_id=None if n.target_id is None else mark(n.target_id),  # type: ignore
                           url=_kept(n.url), target_type=_kept(n.target_type),  # type: ignore[union-attr]
                           within=None if n.within is None else walk(n.within))  # type: ignore
        if kind is c.Not:
            return c.Not(walk(n.part))  # type: ignore[union-attr]
        if kind is c.Chain or kind is c.Has or kind is c.PatientMatches:
            return replace(n, inner=walk(n.inner))  # type: ignore
        if _holds_nul(n):
            raise _Unshapeable
        return n

    try:
        return walk(node), tuple(values)
    except _Unshapeable:
        return None


def _kept(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise _Unshapeable
    return value


@lru_cache(maxsize=1024)
def _compiled(build: Callable[..., Executable], key: tuple[Any, ...], dialect: Any,
              ) -> tuple[str, dict[str, Any], dict[str, int]]:
    """The SQL of `build(*key)`, its fixed parameters, and which parameter carries which marker's value."""
    compiled = build(*key).compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    fixed = dict(compiled.params)
    marked = {}
    for name, value in fixed.items():
        if isinstance(value, str) and value.startswith("\x00") and value.endswith("\x00") and len(value) > 2:
            marked[name] = int(value[1:-1])
    return compiled.string, fixed, marked


def rows(conn: Connection, build: Callable[..., Executable], key: tuple[Any, ...], values: tuple[Any, ...],
         ) -> list[tuple[Any, ...]] | None:
    """Run the statement `build(*key)` (`key` holding templates) with `values` in its markers' places (PostgreSQL:
    sent as it is, unprepared, so each run is planned with its values); None, running nothing, when `key` cannot be
    a cache key (a criterion holding an unhashable value), for the caller to build its statement the usual way."""
    try:
        hash(key)
    except TypeError:
        return None
    sql, fixed, marked = _compiled(build, key, conn.dialect)
    params = {**fixed, **{name: values[i] for name, i in marked.items()}}
    note_statement(sql)
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(sql, params)
        return cursor.fetchall()
