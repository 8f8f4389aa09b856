"""The traces' hash chains (one per DMP, '' for the server's) and the record of who opened which DMP.

An event is stored with two marks in its JSON (its chain sequence number and the hash of the previous event);
appending fills them from the chain head, stores the event and moves the head to the SHA-256 of the event's final
JSON. Its search index rows wait until a search needs them (`trace_index`). On PostgreSQL that is one statement
for every event of a unit of work (heads locked in key order, so writers never deadlock; the hash computed by the
server from the very text it stores), together with the first-access record; SQLite, in-process and serialised by
its write lock, does it in a few statements.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from fhir_dmp.storage import bulk, prepared, trace_index
from fhir_dmp.storage.records import GENESIS, NewResource
from fhir_dmp.storage.tables import audit_chain, dmp_accessor, resource_version


@dataclass(frozen=True)
class Event:
    """A trace to chain: `resource.content` holds `seq_mark` (a JSON string standing for the sequence number,
    quotes included) and `prev_mark` (standing for the previous hash, inside a JSON string); both are random per
    event, so no text a client got into the event can be taken for them."""

    resource: NewResource
    seq_mark: str
    prev_mark: str


def digest(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def append(conn: Connection, events: Sequence[Event], *, accessor: str = "", accessed: Sequence[str] = (),
           when: datetime | None = None) -> set[str]:
    """Chain and store `events` (at most one per chain) and record that `accessor` opened the DMPs `accessed`;
    returns those it opened for the first time."""
    keys = [e.resource.patient_key for e in events]
    assert len(keys) == len(set(keys)), "one event per chain and unit of work"
    if conn.dialect.name != "postgresql":
        _sqlite_append(conn, events)
        return _note_access(conn, accessed, accessor, when) if accessed else set()
    chained, first = _pg_append(conn, events, accessor, accessed, when)
    missing = [e for e in events if e.resource.patient_key not in chained]
    if missing:  # the first trace of a chain: its head row, then the events that waited for it
        _insert_ignore(conn, audit_chain, [{"patient_key": e.resource.patient_key, "seq": 0, "head": GENESIS}
                                           for e in missing])
        _pg_append(conn, missing, "", (), when)
    return first


_SOURCE = bulk.SOURCE + ", seq_mark text, prev_mark text"


@lru_cache(maxsize=64)
def _pg_append_statement(kinds: frozenset[str]) -> Any:
    """The append statement for events whose index rows fill `kinds`, built once per shape."""
    return text(
        "WITH src AS (SELECT * FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS s(" + _SOURCE + ")), "
        "cur AS (SELECT c.patient_key, c.seq, c.head FROM audit_chain c JOIN src s ON s.patient_key = c.patient_key "
        "ORDER BY c.patient_key FOR UPDATE OF c), "
        "ev AS (SELECT s.*, cur.seq + 1 AS next_seq, replace(replace(s.content, s.seq_mark, (cur.seq + 1)::text), "
        "s.prev_mark, cur.head) AS final FROM src s JOIN cur ON cur.patient_key = s.patient_key), "
        "h AS (UPDATE audit_chain c SET seq = ev.next_seq, "
        "head = encode(sha256(convert_to(ev.final, 'UTF8')), 'hex') FROM ev WHERE c.patient_key = ev.patient_key), "
        + bulk.stored_ctes("ev", "final", kinds)
        + "p AS (INSERT INTO index_pending (patient_key, resource_pk, owner) SELECT rn.patient_key, rn.pk, ev.owner "
        "FROM rn JOIN ev ON ev.n = rn.n), "
        + "a AS (INSERT INTO dmp_accessor (patient_key, accessor, first_access) SELECT k, :accessor, "
        "CAST(:when AS timestamp) FROM jsonb_array_elements_text(CAST(:accessed AS jsonb)) AS k "
        "ON CONFLICT DO NOTHING RETURNING patient_key) "
        "SELECT 'chained', patient_key FROM cur UNION ALL SELECT 'first', patient_key FROM a")


def _pg_append(conn: Connection, events: Sequence[Event], accessor: str, accessed: Sequence[str],
               when: datetime | None) -> tuple[set[str], set[str]]:
    params = {"items": bulk.to_json([{**bulk._source_row(e.resource, n), "seq_mark": e.seq_mark,
                                      "prev_mark": e.prev_mark} for n, e in enumerate(events)]),
              "accessor": accessor, "when": when, "accessed": bulk.to_json(sorted(set(accessed)))}
    kinds = bulk.index_kinds([e.resource.index for e in events])
    for kind in kinds:
        params[kind] = bulk.to_json([{"n": n, **row} for n, e in enumerate(events)
                                     for row in e.resource.index.get(kind, ())])
    chained: set[str] = set()
    first: set[str] = set()
    for kind, key in prepared.rows(conn, _pg_append_statement(kinds), params):
        (chained if kind == "chained" else first).add(key)
    return chained, first


def _sqlite_append(conn: Connection, events: Sequence[Event]) -> None:
    if not events:
        return
    keys = sorted(e.resource.patient_key for e in events)
    _insert_ignore(conn, audit_chain, [{"patient_key": k, "seq": 0, "head": GENESIS} for k in keys])
    heads = {r.patient_key: (int(r.seq), str(r.head)) for r in conn.execute(
        select(audit_chain.c.patient_key, audit_chain.c.seq, audit_chain.c.head)
        .where(audit_chain.c.patient_key.in_(keys)))}
    news = []
    for event in events:
        new = event.resource
        seq, head = heads[new.patient_key]
        final = new.content.replace(event.seq_mark, str(seq + 1)).replace(event.prev_mark, head)
        heads[new.patient_key] = (seq + 1, digest(final))
        news.append(NewResource(new.resource_type, new.id, new.patient_key, final, new.last_updated, new.index,
                                new.method, new.facts))
    conn.execute(update(audit_chain).where(audit_chain.c.patient_key == bindparam("key"))
                 .values(seq=bindparam("new_seq"), head=bindparam("new_head")),
                 [{"key": k, "new_seq": seq, "new_head": head} for k, (seq, head) in heads.items()])
    pks = bulk.insert_resources(conn, news)
    trace_index.pend(conn, [(n.patient_key, pk, n.facts.owner) for n, pk in zip(news, pks, strict=True)])


def _insert_ignore(conn: Connection, table: object, rows: list[dict]) -> list[tuple]:
    """INSERT the rows whose primary key is not there yet; the keys inserted."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(rows).on_conflict_do_nothing()  # type: ignore[arg-type]
    # RETURNING, not rowcount: psycopg under SQLAlchemy 2 reports -1 for this INSERT
    return [tuple(r) for r in conn.execute(statement.returning(*table.primary_key.columns)).all()]  # type: ignore


def _note_access(conn: Connection, keys: Sequence[str], accessor: str, when: datetime | None) -> set[str]:
    rows = _insert_ignore(conn, dmp_accessor, [{"patient_key": k, "accessor": accessor, "first_access": when}
                                               for k in sorted(set(keys))])
    return {r[0] for r in rows}


def lock_chain(conn: Connection, patient_key: str) -> tuple[int, str] | None:
    """A chain's head, locked until the transaction ends (the purge: appenders finish first)."""
    row = conn.execute(select(audit_chain.c.seq, audit_chain.c.head)
                       .where(audit_chain.c.patient_key == patient_key).with_for_update()).one_or_none()
    return None if row is None else (int(row.seq), str(row.head))


# -- verification ------------------------------------------------------------------------------------------------
def audit_chains(conn: Connection) -> set[str]:
    """Every chain: those with a head row and those with stored events (a removed head must not hide one)."""
    heads = set(conn.execute(select(audit_chain.c.patient_key)).scalars())
    return heads | set(conn.execute(select(resource_version.c.patient_key).where(
        resource_version.c.resource_type == "AuditEvent").distinct()).scalars())


def chain_head(conn: Connection, patient_key: str) -> tuple[int, str] | None:
    row = conn.execute(select(audit_chain.c.seq, audit_chain.c.head)
                       .where(audit_chain.c.patient_key == patient_key)).one_or_none()
    return None if row is None else (int(row.seq), str(row.head))


def audit_contents(conn: Connection, patient_key: str) -> list[tuple[str, str | None]]:
    """(id, stored JSON) of every AuditEvent version filed under a DMP, in writing order."""
    query = (select(resource_version.c.id, resource_version.c.content)
             .where(resource_version.c.resource_type == "AuditEvent", resource_version.c.patient_key == patient_key)
             .order_by(resource_version.c.pk))
    return [(r.id, r.content) for r in conn.execute(query)]
