"""Server-side prepared statements for the statements every request sends, on PostgreSQL.

The engine sends everything else unprepared (`db.py`: a prepared search may fall back to a generic plan blind to
how selective a patient key is). These are different: a row by its unique key, the trace's append, a write's
insert. Their plan never depends on the values, and planning them afresh each time (the trace's statement alone
is a third of a millisecond) is work the server repeats for every request. They are compiled once here and run
through the driver with `prepare=True`; SQLite runs them as any statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from threading import Lock
from typing import Any

from psycopg.rows import namedtuple_row, no_result
from sqlalchemy import Connection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import TextClause

from fhir_dmp.storage.statements import note_statement

_COMPILED: dict[int, tuple[Executable, str, dict[str, Any]]] = {}
_LOCK = Lock()
_MAX = 4096


def rows(conn: Connection, statement: Executable, params: Mapping[str, Any]) -> list[Any]:
    """Run `statement` (a statement object built once and kept: its compilation is cached by identity) and
    return its rows (attribute and position access alike)."""
    if conn.dialect.name != "postgresql":
        return list(conn.execute(statement, dict(params)))  # type: ignore[call-overload]
    sql, fixed = _compiled(conn, statement)
    note_statement(sql)
    raw = conn.connection.driver_connection
    with raw.cursor(row_factory=_row_factory(sql)) as cursor:  # type: ignore[union-attr]
        cursor.execute(sql, {**fixed, **params}, prepare=True)
        result = cursor.pgresult
        return cursor.fetchall() if result is not None and result.nfields else []


@lru_cache(maxsize=_MAX)
def _row_factory(sql: str) -> Callable[[Any], Callable[[Sequence[Any]], Any]]:
    """Rows as named tuples whose class is made once per statement: psycopg's `namedtuple_row` reads the cursor's
    description (a Column object per column) at every run to find the names it already knows."""
    maker: list[Callable[[Sequence[Any]], Any]] = []

    def factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
        if maker:
            return maker[0]
        made = namedtuple_row(cursor)
        if made is not no_result:  # asked before the result came: not kept
            maker.append(made)
        return made

    return factory


def _compiled(conn: Connection, statement: Executable) -> tuple[str, dict[str, Any]]:
    found = _COMPILED.get(id(statement))
    if found is not None and found[0] is statement:
        return found[1], found[2]
    # IN lists rendered as one parameter per item (their length is part of the statement's shape); a text
    # statement has none, and its parameters are all the caller's
    kwargs = {} if isinstance(statement, TextClause) else {"compile_kwargs": {"render_postcompile": True}}
    compiled = statement.compile(dialect=conn.dialect, **kwargs)
    fixed = {} if isinstance(statement, TextClause) else dict(compiled.params)
    entry = (statement, compiled.string, fixed)
    with _LOCK:
        if len(_COMPILED) >= _MAX:
            _COMPILED.clear()
        _COMPILED[id(statement)] = entry
    return entry[1], entry[2]
