"""Engine creation and units of work; the SQLite and PostgreSQL differences live here.

SQLite: WAL, a busy timeout, and `BEGIN IMMEDIATE` for writes so that two writers queue on the
database lock instead of failing when a read transaction upgrades. PostgreSQL: psycopg 3, READ
COMMITTED, and transaction-scoped advisory locks for conditional creates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from fhir_dmp.storage.statements import watch
from fhir_dmp.storage.tables import metadata

# PostgreSQL rolled the unit of work back to break a deadlock (or a serialization conflict).
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
CONNECT_TIMEOUT = 10  # seconds


Tx = Connection  # an open unit of work, as the layers above storage hold it: they pass it back, never use it


class TransientConflict(Exception):
    """The database aborted this unit of work because of concurrent writers; running it again is safe."""


class Unavailable(Exception):
    """The database cannot be reached (restarting, connection lost, locked beyond the busy timeout): nothing of
    the unit of work was committed; running it again later is safe."""


class OutcomeUnknown(Unavailable):
    """The connection was lost while PostgreSQL was committing: the unit of work may or may not be stored, so
    running it again could store it twice (only the client can tell, by reading or by a conditional retry)."""


def _normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and route them to psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


NEVER_AUTOMATIC = 2**31 - 1  # psycopg prepares a statement by itself after this many runs: never


class Database:
    """One engine per process; units of work are short transactions on pooled connections."""

    def __init__(self, url: str, *, echo: bool = False, count_statements: bool = False) -> None:
        self.url = _normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(self.url, echo=echo, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            # No automatic server-side prepared statements: after five runs PostgreSQL may switch a prepared
            # search to a generic plan that cannot see how selective a patient key is (measured: 10 ms -> 500 ms).
            # A threshold never reached, not None: with None psycopg ignores `prepare=True` too, and the hot
            # statements `storage/prepared.py` chooses would be planned afresh at every run.
            # No pre-ping either (a round trip per transaction): a connection found dead fails its unit of work,
            # which `Unavailable` lets the caller run again on a fresh one.
            # A bounded connect (a PostgreSQL host that does not answer must not hold a request for minutes),
            # unless the URL says otherwise.
            connect: dict = {"prepare_threshold": NEVER_AUTOMATIC}
            if "connect_timeout" not in make_url(self.url).query:
                connect["connect_timeout"] = CONNECT_TIMEOUT
            self.engine = create_engine(self.url, echo=echo, pool_size=10, max_overflow=20, connect_args=connect)
        if count_statements:  # statements.counting() blocks see this engine's statements and transactions
            watch(self.engine)

    def analyze(self) -> None:
        """Refresh the planner's statistics of the server's tables (after a bulk load: a store never analysed, with
        autovacuum off, had PostgreSQL drive a DMP's search through every `status=current` row of the store,
        benchmarks/scale.py). SQLite: its own ANALYZE."""
        with self.engine.begin() as conn:  # the tables this server owns, not the whole database
            for table in metadata.sorted_tables:
                conn.execute(text(f'ANALYZE "{table.name}"'))

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """A unit of work: commits when the block ends, rolls back everything on any exception.

        A connection that cannot be had (at pool checkout: PostgreSQL restarting) or is lost (a pooled connection
        found dead, no pre-ping) is `Unavailable`; lost during the COMMIT itself, `OutcomeUnknown`."""
        committing = False
        try:
            with self.engine.connect() as conn:
                if write and self.is_sqlite:
                    conn = conn.execution_options(sqlite_write=True)
                with conn.begin():
                    yield conn
                    committing = True  # the block ended: what fails from here on is the COMMIT
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
                raise TransientConflict(str(exc.orig)) from exc
            if exc.connection_invalidated or isinstance(exc, OperationalError):
                if committing and not self.is_sqlite and exc.connection_invalidated:
                    raise OutcomeUnknown(str(exc.orig)) from exc
                raise Unavailable(str(exc.orig)) from exc
            raise

    @contextmanager
    def snapshot(self, *, write: bool = False) -> Iterator[Connection]:
        """A unit of work whose statements all see one snapshot (REPEATABLE READ on PostgreSQL; a SQLite read
        transaction is one already). Read-only unless `write` (the seal: it reads a snapshot and writes one row;
        on SQLite it then takes the write lock from the start)."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            elif write:
                conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn

    def lock(self, conn: Connection, key: str) -> None:
        """Serialise writers on one key until the transaction ends (conditional create races).

        SQLite writers already hold the database lock from `BEGIN IMMEDIATE`.
        """
        if self.is_sqlite:
            return
        digest = hashlib.sha1(key.encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(digest[:8], "big", signed=True)})

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_conn.isolation_level = None  # let the "begin" hook emit BEGIN itself
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "BEGIN")
