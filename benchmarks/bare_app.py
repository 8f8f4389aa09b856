"""The bare baseline of benchmarks/ceiling.py: Flask + psycopg 3 doing the least a FHIR read or create must do,
so fhir-dmp's rates can be read as a fraction of what this stack can serve on the same machine.

    BARE_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/db BARE_SCHEMA=ceiling_bare \
        gunicorn --workers 2 --threads 4 --chdir benchmarks 'bare_app:create_app()'

Endpoints (the tables are made and filled by `prepare`, which ceiling.py calls before starting gunicorn):
    GET  /dict             a constant dict as JSON, no database
    GET  /row/<pk>         one 2 KB JSON text row by primary key
    GET  /row-audit/<pk>   the same read plus one audit row INSERT, committed (a FHIR read writes an AuditEvent)
    POST /insert           the request body (2 KB) as one new row, committed (a FHIR create)
Connections: a psycopg_pool.ConnectionPool of --threads connections per worker when psycopg_pool is installed,
otherwise one connection per thread.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from flask import Flask, Response, jsonify, request

try:
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - the fallback is measured too, when the pool is absent
    ConnectionPool = None  # type: ignore[assignment,misc]

ROWS = 1000
PAYLOAD = {"resourceType": "DocumentReference", "status": "current", "text": "x" * 1900}  # ~2 KB as JSON


def payload() -> str:
    """A 2 KB JSON text, the size of a small DocumentReference."""
    return json.dumps(PAYLOAD)


def prepare(conninfo: str, schema: str, rows: int = ROWS) -> None:
    """(Re)create the schema and its three tables; fill `doc` with `rows` rows."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        conn.execute("CREATE TABLE doc (pk bigint PRIMARY KEY, content text NOT NULL)")
        conn.execute("CREATE TABLE audit (pk bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), "
                     "who text NOT NULL, what text NOT NULL)")
        conn.execute("CREATE TABLE written (pk bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), "
                     "content text NOT NULL)")
        with conn.cursor() as cursor, cursor.copy("COPY doc (pk, content) FROM STDIN") as copy:
            for pk in range(1, rows + 1):
                copy.write_row((pk, payload()))
        conn.execute("ANALYZE")


class Connections:
    """Per worker process, made at the first request (after gunicorn forked): a pool, or one per thread."""

    def __init__(self, conninfo: str, schema: str, size: int) -> None:
        self.conninfo, self.options, self.size = conninfo, f"-csearch_path={schema}", size
        self.pool: Any = None
        self.local = threading.local()
        self.lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in a transaction: committed when the block ends, rolled back on error."""
        if ConnectionPool is not None:
            with self.lock:
                if self.pool is None:
                    self.pool = ConnectionPool(self.conninfo, min_size=self.size, max_size=self.size,
                                               kwargs={"options": self.options}, open=True)
            with self.pool.connection() as conn:
                yield conn
            return
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = self.local.conn = psycopg.connect(self.conninfo, options=self.options)
        with conn.transaction():
            yield conn


def create_app() -> Flask:
    """The WSGI app; configured by BARE_DATABASE_URL (a libpq URL), BARE_SCHEMA and BARE_POOL_SIZE."""
    db = Connections(os.environ["BARE_DATABASE_URL"], os.environ.get("BARE_SCHEMA", "ceiling_bare"),
                     int(os.environ.get("BARE_POOL_SIZE", "4")))
    app = Flask(__name__)
    constant = dict(PAYLOAD)

    def read(conn: psycopg.Connection, pk: int) -> Response:
        row = conn.execute("SELECT content FROM doc WHERE pk = %s", (pk,)).fetchone()
        if row is None:
            return Response(status=404)
        return Response(row[0], mimetype="application/json")

    @app.get("/dict")
    def a_dict() -> Response:
        return jsonify(constant)

    @app.get("/row/<int:pk>")
    def a_row(pk: int) -> Response:
        with db.connection() as conn:
            return read(conn, pk)

    @app.get("/row-audit/<int:pk>")
    def a_row_and_audit(pk: int) -> Response:
        with db.connection() as conn:
            response = read(conn, pk)
            conn.execute("INSERT INTO audit (who, what) VALUES (%s, %s)",
                         (request.headers.get("Authorization", "anonymous")[:64], f"read doc/{pk}"))
            return response

    @app.post("/insert")
    def an_insert() -> Response:
        with db.connection() as conn:
            pk = conn.execute("INSERT INTO written (content) VALUES (%s) RETURNING pk",
                              (request.get_data(as_text=True),)).fetchone()[0]  # type: ignore[index]
        return Response(json.dumps({"pk": pk}), status=201, mimetype="application/json")

    return app
