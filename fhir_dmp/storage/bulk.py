"""Multi-table writes in as few round trips as the database allows.

PostgreSQL: one statement per write, whatever the number of resources and index rows: the rows travel as JSON
arrays (`jsonb_to_recordset`) into data-modifying CTEs, so the statement's text is the same for every write of
its shape (parsed once per connection by the server, built once per process here). SQLite runs in-process, where
a round trip costs nothing: plain multi-row INSERTs.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Connection, DateTime, Integer, Numeric, delete, insert, select, text, tuple_, update

from fhir_dmp.storage import prepared
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.records import IndexRows, NewResource, Stored
from fhir_dmp.storage.tables import INDEX_TABLES, dmp_facts, resource, resource_version

_COMMON = ("resource_pk", "patient_key", "resource_type")


def fact_values(facts: AccessFacts) -> dict[str, Any]:
    return {"doc_type": facts.doc_type, "labels": facts.labels, "doc_date": facts.doc_date, "owner": facts.owner,
            "governed_by": facts.governed_by}


def to_json(rows: list[dict[str, Any]]) -> str:
    """Rows as the JSON array `jsonb_to_recordset` reads (instants ISO 8601, decimals exact). orjson: the rows carry
    every new resource's text (a Binary's ~70 KB of base64), which the standard library took ~1.5 ms a 10-document
    ITI-65 to escape again; it refuses what JSON cannot carry (a lone surrogate), which the standard library
    writes escaped."""
    try:
        return orjson.dumps(rows, default=_json_value, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=_json_value, ensure_ascii=False, separators=(",", ":"))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


def _pg_type(column: Any) -> str:
    if isinstance(column.type, DateTime):
        return "timestamp"
    if isinstance(column.type, Numeric):
        return "numeric"
    if isinstance(column.type, Integer):
        return "bigint"
    return "text"


def _value_columns(kind: str) -> list[Any]:
    return [c for c in INDEX_TABLES[kind].columns if c.name not in _COMMON]


def _coalesced(column: Any, source: str) -> str:
    default = column.default.arg if column.default is not None and not callable(column.default.arg) else None
    name = f'{source}."{column.name}"'
    return f"coalesce({name}, '{default}')" if isinstance(default, str) else name


def _index_ctes(key_source: str, key_join: str, *, per_row_key: bool, kinds: frozenset[str]) -> list[str]:
    """One INSERT ... SELECT per index table that has rows, reading them from the bind parameter of its name
    (a statement holds only the tables it writes: less for the server to plan)."""
    ctes = []
    for kind, table in INDEX_TABLES.items():
        if kind not in kinds:
            continue
        columns = _value_columns(kind)
        record = ", ".join(f'"{c.name}" {_pg_type(c)}' for c in columns)
        record = (f"n int, {record}" if per_row_key else record)
        values = ", ".join(_coalesced(c, "x") for c in columns)
        names = ", ".join(f'"{c.name}"' for c in columns)
        ctes.append(
            f"i_{kind} AS (INSERT INTO {table.name} (resource_pk, patient_key, resource_type, {names}) "
            f"SELECT {key_source}, {values} FROM jsonb_to_recordset(CAST(:{kind} AS jsonb)) AS x({record}) "
            f"{key_join})")
    return ctes


SOURCE = ("n int, resource_type text, id text, patient_key text, last_updated timestamp, method text, "
          "content text, doc_type text, labels int, doc_date timestamp, owner text, governed_by text")


def stored_ctes(source: str, content: str, kinds: frozenset[str]) -> str:
    """The CTEs that store new resources read from CTE `source` (the columns of SOURCE, the text to store in its
    column `content`): their first versions (`v`), current rows (`r`), each one's key by row number (`rn`) and
    their index rows (`i_<kind>`, read from the bind parameter of the kind's name). Ends with a comma."""
    return (
        f"v AS (INSERT INTO resource_version (resource_type, id, version_id, patient_key, last_updated, method, "
        f"deleted, content) SELECT resource_type, id, 1, patient_key, last_updated, method, false, {content} "
        f"FROM {source} ORDER BY n RETURNING pk, resource_type, id), "
        f"r AS (INSERT INTO resource (resource_type, id, patient_key, version_id, last_updated, deleted, version_pk, "
        f"doc_type, labels, doc_date, owner, governed_by) SELECT s.resource_type, s.id, s.patient_key, 1, "
        f"s.last_updated, false, v.pk, s.doc_type, s.labels, s.doc_date, s.owner, s.governed_by FROM {source} s "
        f"JOIN v ON v.resource_type = s.resource_type AND v.id = s.id ORDER BY s.n RETURNING pk, resource_type, id), "
        f"rn AS (SELECT r.pk, s.n, s.patient_key, s.resource_type FROM r JOIN {source} s "
        f"ON r.resource_type = s.resource_type AND r.id = s.id), "
        + "".join(c + ", " for c in _index_ctes("rn.pk, rn.patient_key, rn.resource_type", "JOIN rn ON rn.n = x.n",
                                                per_row_key=True, kinds=kinds)))


class _Texts(list):
    """Texts sent as one binary `text[]` parameter: the server takes each as it is, where inside a JSON array it
    parsed every character again (resource bodies: a 10-document ITI-65's ~700 KB, ~2 ms of its CPU)."""


psycopg.adapters.register_dumper(_Texts, ListBinaryDumper)  # this class only: every other list is dumped as before

_NO_CONTENT = SOURCE.replace(", content text", "")


@lru_cache(maxsize=256)
def _pg_insert(kinds: frozenset[str]) -> Any:
    """The insert statement for resources whose index rows fill `kinds`, built once per shape: the rows as JSON,
    their bodies as a text array in the same order."""
    return text(
        "WITH src AS (SELECT s.*, b.content FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS s(" + _NO_CONTENT
        + ") JOIN unnest(CAST(:contents AS text[])) WITH ORDINALITY AS b(content, k) ON b.k = s.n + 1), "
        + stored_ctes("src", "content", kinds)
        + "g AS (UPDATE resource t SET doc_type = s.doc_type, labels = s.labels, doc_date = s.doc_date FROM src s "
        "WHERE s.resource_type = 'DocumentReference' AND t.governed_by = 'DocumentReference/' || s.id) "
        "SELECT n, pk FROM rn")


@lru_cache(maxsize=64)
def index_existing_statement(kinds: frozenset[str]) -> Any:
    """The statement replacing the index rows of stored resources (`:items`: their n, pk, patient_key and
    resource_type), rows filling `kinds` read from the bind parameter of each kind's name."""
    ctes = ["rn AS (SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) "
            "AS s(n int, pk bigint, patient_key text, resource_type text))",
            *(f"d_{kind} AS (DELETE FROM {table.name} WHERE resource_pk IN (SELECT pk FROM rn))"
              for kind, table in INDEX_TABLES.items()),
            *_index_ctes("rn.pk, rn.patient_key, rn.resource_type", "JOIN rn ON rn.n = x.n", per_row_key=True,
                         kinds=kinds)]
    return text("WITH " + ", ".join(ctes) + " SELECT count(*) FROM rn")


def index_kinds(indexes: list[IndexRows]) -> frozenset[str]:
    return frozenset(kind for index in indexes for kind, rows in index.items() if rows)


def insert_resources(conn: Connection, items: list[NewResource]) -> list[int]:
    """Insert new resources (first versions, current rows, index rows); their `resource.pk`s in order."""
    if not items:
        return []
    if conn.dialect.name == "postgresql":
        kinds = index_kinds([item.index for item in items])
        params: dict[str, Any] = {
            "items": to_json([{k: v for k, v in _source_row(item, n).items() if k != "content"}
                              for n, item in enumerate(items)]),
            "contents": _Texts(item.content for item in items)}
        for kind in kinds:
            params[kind] = to_json([{"n": i, **row} for i, n in enumerate(items) for row in n.index.get(kind, ())])
        by_n = {n: pk for n, pk in prepared.rows(conn, _pg_insert(kinds), params)}
        return [by_n[i] for i in range(len(items))]
    version_pks = conn.execute(
        insert(resource_version).returning(resource_version.c.pk, sort_by_parameter_order=True),
        [{"resource_type": n.resource_type, "id": n.id, "version_id": 1, "patient_key": n.patient_key,
          "last_updated": n.last_updated, "method": n.method, "deleted": False, "content": n.content}
         for n in items]).scalars().all()
    pks = conn.execute(
        insert(resource).returning(resource.c.pk, sort_by_parameter_order=True),
        [{"resource_type": n.resource_type, "id": n.id, "patient_key": n.patient_key, "version_id": 1,
          "last_updated": n.last_updated, "deleted": False, "version_pk": vpk, **fact_values(n.facts)}
         for n, vpk in zip(items, version_pks, strict=True)]).scalars().all()
    _sqlite_index(conn, [(pk, n.resource_type, n.patient_key, n.index) for n, pk in zip(items, pks, strict=True)])
    for n in items:
        if n.resource_type == "DocumentReference":
            _sqlite_governed(conn, n.id, n.facts)
    return list(pks)


def _source_row(item: NewResource, n: int) -> dict[str, Any]:
    return {"n": n, "resource_type": item.resource_type, "id": item.id, "patient_key": item.patient_key,
            "last_updated": item.last_updated, "method": item.method, "content": item.content,
            **fact_values(item.facts)}


@lru_cache(maxsize=512)
def _pg_version(kinds: frozenset[str], governing: bool) -> Any:
    """The statement writing a version whose index rows fill `kinds` (and, for a DocumentReference, the facts
    of what it governs), built once per shape."""
    ctes = [
        "v AS (INSERT INTO resource_version (resource_type, id, version_id, patient_key, last_updated, method, "
        "deleted, content) VALUES (:resource_type, :id, :version_id, :patient_key, :last_updated, :method, :deleted, "
        ":content) RETURNING pk)",
        "u AS (UPDATE resource SET version_id = :version_id, version_pk = v.pk, deleted = :deleted, "
        "last_updated = :last_updated, patient_key = :patient_key, doc_type = :doc_type, labels = :labels, "
        "doc_date = :doc_date, owner = :owner, governed_by = :governed_by FROM v "
        "WHERE resource.pk = :resource_pk AND resource.version_id = :expected RETURNING resource.pk)",
        *(f"d_{kind} AS (DELETE FROM {table.name} WHERE resource_pk = :resource_pk)"
          for kind, table in INDEX_TABLES.items()),
        *_index_ctes("u.pk, :patient_key, :resource_type", "CROSS JOIN u", per_row_key=False, kinds=kinds),
    ]
    if governing:
        ctes.append("g AS (UPDATE resource t SET doc_type = :doc_type, labels = :labels, doc_date = :doc_date "
                    "FROM u WHERE t.governed_by = :governing)")
    return text("WITH " + ", ".join(ctes) + " SELECT count(*) FROM u")


def write_version(conn: Connection, current: Stored, new: Stored, index: IndexRows) -> bool:
    """Insert version `new` and move the current row to it, replacing the index rows (and, for a
    DocumentReference, the facts of what it governs); False when another writer moved the row first."""
    values = {"resource_type": new.resource_type, "id": new.id, "version_id": new.version_id,
              "patient_key": new.patient_key, "last_updated": new.last_updated, "method": new.method,
              "deleted": new.deleted, "content": new.content, **fact_values(new.facts)}
    governing = new.resource_type == "DocumentReference"
    if conn.dialect.name == "postgresql":
        kinds = index_kinds([index])
        params = {**values, "resource_pk": current.pk, "expected": current.version_id,
                  "governing": f"DocumentReference/{new.id}", **{kind: to_json(index[kind]) for kind in kinds}}
        return prepared.rows(conn, _pg_version(kinds, governing), params)[0][0] == 1
    version_pk = conn.execute(insert(resource_version).returning(resource_version.c.pk),
                              {k: values[k] for k in ("resource_type", "id", "version_id", "patient_key",
                                                      "last_updated", "method", "deleted", "content")}).scalar_one()
    moved = conn.execute(
        update(resource).where(resource.c.pk == current.pk, resource.c.version_id == current.version_id)
        .values(version_id=new.version_id, version_pk=version_pk, deleted=new.deleted,
                last_updated=new.last_updated, patient_key=new.patient_key, **fact_values(new.facts))).rowcount
    if moved != 1:
        return False
    replace_index(conn, current.pk, new.resource_type, new.patient_key, index)
    if governing:
        _sqlite_governed(conn, new.id, new.facts)
    return True


def replace_index(conn: Connection, resource_pk: int, resource_type: str, patient_key: str,
                  rows: IndexRows) -> None:
    for table in INDEX_TABLES.values():
        conn.execute(delete(table).where(table.c.resource_pk == resource_pk))
    _sqlite_index(conn, [(resource_pk, resource_type, patient_key, rows)])


def _sqlite_index(conn: Connection, items: list[tuple[int, str, str, IndexRows]]) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for pk, rtype, key, index in items:
        common = {"resource_pk": pk, "patient_key": key, "resource_type": rtype}
        for kind, rows in index.items():
            by_kind.setdefault(kind, []).extend({**common, **row} for row in rows)
    for kind, rows in by_kind.items():
        if rows:
            conn.execute(insert(INDEX_TABLES[kind]), rows)


def _sqlite_governed(conn: Connection, doc_id: str, facts: AccessFacts) -> None:
    conn.execute(update(resource).where(resource.c.governed_by == f"DocumentReference/{doc_id}")
                 .values(doc_type=facts.doc_type, labels=facts.labels, doc_date=facts.doc_date))


def patients_by_identifier(conn: Connection, identifiers: list[tuple[str, str]]) -> dict[tuple[str, str],
                                                                                       list[tuple[str, str | None]]]:
    """The current Patients holding each (system, value) identifier, with their DMP's stored facts: what naming
    a DMP by INS resolves to (`references._resolve_patient`), for a whole import batch in one statement.
    Identifiers longer than the index keeps are left out (their lookup stays the search's)."""
    wanted = sorted({(s, v) for s, v in identifiers if len(s) <= 255 and len(v) <= 255})
    if not wanted:
        return {}
    token = INDEX_TABLES["token"]
    query = (select(token.c.system, token.c.code, resource.c.id, dmp_facts.c.facts)
             .select_from(token.join(resource, resource.c.pk == token.c.resource_pk)
                          .outerjoin(dmp_facts, dmp_facts.c.patient_key == resource.c.id))
             .where(token.c.param == "identifier", token.c.resource_type == "Patient",
                    resource.c.deleted.is_(False), tuple_(token.c.system, token.c.code).in_(wanted)))
    found: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for system, code, pid, facts in conn.execute(query):
        found.setdefault((system, code), []).append((pid, facts))
    return found
