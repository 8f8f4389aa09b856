"""Count the SQL statements and transactions one unit of code sends, opt-in (the debug mode, the benchmarks).

A request's cost in round trips is what bounds its latency on a real network, and a regression there (a query
per row, a second transaction) hides easily behind a fast local database: counting makes it visible.
Counts are kept per context (a ContextVar), so the requests that threads or tasks serve at the same time never
mix; code outside `counting()` is not counted, and engines not `watch`ed pay nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event


@dataclass
class Counts:
    """What the code inside one `counting()` block sent: SQL statements and transactions begun."""

    statements: int = 0
    transactions: int = 0
    texts: list[str] = field(default_factory=list)  # the statements themselves, in order

    def header(self) -> str:
        """The `X-Debug-SQL` header value."""
        return f"statements={self.statements}; transactions={self.transactions}"


_current: ContextVar[Counts | None] = ContextVar("fhir_dmp_sql_counts", default=None)

# SQLite's BEGIN is sent as a statement by db.py's "begin" hook; it is counted as the transaction it starts,
# so that the same work gives the same statement count on SQLite and on PostgreSQL (where the driver sends it).
_TRANSACTION_CONTROL = frozenset({"BEGIN", "BEGIN IMMEDIATE"})


@contextmanager
def counting() -> Iterator[Counts]:
    """Count what the current thread/context sends to every watched engine until the block ends."""
    counts = Counts()
    token = _current.set(counts)
    try:
        yield counts
    finally:
        _current.reset(token)


def note_statement(text: str = "") -> None:
    """Count one statement sent outside SQLAlchemy's cursor events (prepared statements sent through the driver)."""
    counts = _current.get()
    if counts is not None:
        counts.statements += 1
        counts.texts.append(text)


def watch(engine: Engine) -> None:
    """Install the counting listeners on `engine` (once; a second call does nothing)."""
    if not event.contains(engine, "before_cursor_execute", _on_statement):
        event.listen(engine, "before_cursor_execute", _on_statement)
        event.listen(engine, "begin", _on_begin)


def _on_statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    counts = _current.get()
    if counts is not None and statement not in _TRANSACTION_CONTROL:
        counts.statements += 1
        counts.texts.append(statement)


def _on_begin(_conn: Any) -> None:
    counts = _current.get()
    if counts is not None:
        counts.transactions += 1
