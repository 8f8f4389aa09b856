"""Reads and writes of resources and their versions.

Optimistic concurrency: a new version is inserted under a unique (type, id, version) key and the current row is
moved with `WHERE version_id = <expected>`; a concurrent writer makes one of the two fail with `StaleVersion`
and nothing of it is kept, so no update is ever silently lost. On PostgreSQL a write (its versions, current rows,
index rows and the facts of the resources it governs) is one statement (`storage/bulk.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    String,
    and_,
    any_,
    bindparam,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from fhir_dmp.storage import bulk, prepared
from fhir_dmp.storage.compile import compile_criterion
from fhir_dmp.storage.criteria import AccessFacts, Criterion
from fhir_dmp.storage.records import IndexRows, Located, NewResource, StaleVersion, Stored, row_to_stored
from fhir_dmp.storage.tables import INDEX_TABLES, dmp_facts, resource, resource_version

_FACTS = (resource.c.doc_type, resource.c.labels, resource.c.doc_date, resource.c.owner, resource.c.governed_by)

CURRENT = (
    select(resource.c.resource_type, resource.c.id, resource.c.version_id, resource.c.last_updated,
           resource.c.deleted, resource.c.patient_key, resource_version.c.content, resource_version.c.method,
           resource.c.pk, *_FACTS)
    .select_from(resource)
    .join(resource_version, resource_version.c.pk == resource.c.version_pk)
)
VERSION_ROWS = resource_version.join(resource, and_(resource.c.resource_type == resource_version.c.resource_type,
                                                    resource.c.id == resource_version.c.id))
VERSIONS = select(
    resource_version.c.resource_type, resource_version.c.id, resource_version.c.version_id,
    resource_version.c.last_updated, resource_version.c.deleted, resource_version.c.patient_key,
    resource_version.c.content, resource_version.c.method, resource_version.c.pk, *_FACTS,
).select_from(VERSION_ROWS)


# the key given at each run; the placeholder values only let the statement be compiled once beforehand
_BY_KEY = (resource.c.resource_type == bindparam("rtype", ""), resource.c.id == bindparam("rid", ""))
_LOCATE = (select(resource.c.patient_key, dmp_facts.c.facts, resource.c.deleted, resource.c.labels,
                  resource.c.doc_date)
           .select_from(resource.outerjoin(dmp_facts, dmp_facts.c.patient_key == resource.c.patient_key))
           .where(*_BY_KEY))


def locate(conn: Connection, resource_type: str, rid: str) -> Located | None:
    """The DMP a resource is filed in, with that DMP's access facts row: what the policy needs to decide a
    read before the row itself is read (one statement; None when no such resource exists)."""
    found = prepared.rows(conn, _LOCATE, {"rtype": resource_type, "rid": rid})
    if not found:
        return None
    row = found[0]
    return Located(row.patient_key, row.facts, bool(row.deleted), AccessFacts(labels=int(row.labels or 0),
                                                                             doc_date=row.doc_date))


@lru_cache(maxsize=2048)
def _current_within(scope: Criterion | None) -> Any:
    """The read of one current row by key within `scope`, built once per scope (a caller's scope recurs)."""
    query = CURRENT.where(*_BY_KEY)
    return query if scope is None else query.where(compile_criterion(scope))


def read_current(conn: Connection, resource_type: str, rid: str, *, scope: Criterion | None = None) -> Stored | None:
    """The current version; with a `scope`, only if the row is within it (judged in the WHERE clause)."""
    try:
        query = _current_within(scope)
    except TypeError:  # a scope holding an unhashable value: built afresh
        query = _current_within.__wrapped__(scope)
    found = prepared.rows(conn, query, {"rtype": resource_type, "rid": rid})
    return row_to_stored(found[0]) if found else None


Key = tuple[str, str]  # (type, id)
Identifier = tuple[str, str, str]  # (type, system, value)


def already_stored(conn: Connection, ids: Sequence[Key], identifiers: Sequence[Identifier]) -> tuple[set[Key],
                                                                                                    set[Identifier]]:
    """Which of these (type, id) are taken (deleted or not: an id is never reused) and which business identifiers
    (type, system, value, as the `identifier` search parameter indexes them) a current resource holds: one
    statement for a whole import batch, so that a resumed import skips what an earlier run stored."""
    token = INDEX_TABLES["token"]
    parts = []
    if ids:
        parts.append(select(literal("id"), resource.c.resource_type, literal(""), resource.c.id)
                     .where(tuple_(resource.c.resource_type, resource.c.id).in_(sorted(set(ids)))))
    if identifiers:
        wanted = sorted({(t, s[:255], v[:255]) for t, s, v in identifiers})  # as the index cuts them
        parts.append(select(literal("identifier"), token.c.resource_type, token.c.system, token.c.code)
                     .select_from(token.join(resource, resource.c.pk == token.c.resource_pk))
                     .where(token.c.param == "identifier", resource.c.deleted.is_(False),
                            tuple_(token.c.resource_type, token.c.system, token.c.code).in_(wanted)))
    if not parts:
        return set(), set()
    taken: set[Key] = set()
    held: set[Identifier] = set()
    for kind, rtype, system, value in conn.execute(union_all(*parts) if len(parts) > 1 else parts[0]):
        if kind == "id":
            taken.add((rtype, value))
        else:
            held.add((rtype, system, value))
    return taken, held


_KEYS_PER_STATEMENT = 10000  # SQLite: one bound value each, within its limit on parameters


@lru_cache(maxsize=2048)
def _visible_within(scope: Criterion) -> Any:
    """PostgreSQL: which of the (type, id) given as two arrays are rows within `scope`, built once per scope and
    prepared (a caller's scope recurs): an index condition on (resource_type, id) whatever the number of keys."""
    names = ARRAY(String)
    return select(resource.c.resource_type, resource.c.id).where(
        resource.c.resource_type == any_(bindparam("types", [], type_=names)),
        resource.c.id == any_(bindparam("ids", [], type_=names)), compile_criterion(scope))


def visible_keys(conn: Connection, keys: Sequence[Key], scope: Criterion) -> set[Key]:
    """Which of these (type, id) name a stored row (deleted or not) within `scope`: what a List may show of the
    resources its entries name, for every List of an answer in one statement."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    if conn.dialect.name == "postgresql":
        try:
            query = _visible_within(scope)
        except TypeError:  # a scope holding an unhashable value: built afresh
            query = _visible_within.__wrapped__(scope)
        params = {"types": sorted({t for t, _ in wanted}), "ids": sorted({i for _, i in wanted})}
        return {(row.resource_type, row.id) for row in prepared.rows(conn, query, params)} & set(wanted)
    found: set[Key] = set()
    for start in range(0, len(wanted), _KEYS_PER_STATEMENT):  # one, unless a page of Lists names thousands
        by_type: dict[str, list[str]] = {}
        for rtype, rid in wanted[start:start + _KEYS_PER_STATEMENT]:
            by_type.setdefault(rtype, []).append(rid)
        keyed = or_(*(and_(resource.c.resource_type == t, resource.c.id.in_(ids)) for t, ids in by_type.items()))
        query = select(resource.c.resource_type, resource.c.id).where(keyed, compile_criterion(scope))
        found.update((row.resource_type, row.id) for row in conn.execute(query))
    return found


def read_version(conn: Connection, resource_type: str, rid: str, version_id: int, *,
                 scope: Criterion | None = None) -> Stored | None:
    """One version, if the resource's current row is within `scope` (masking a document hides its past too)."""
    query = VERSIONS.where(resource_version.c.resource_type == resource_type, resource_version.c.id == rid,
                           resource_version.c.version_id == version_id)
    if scope is not None:
        query = query.where(compile_criterion(scope))
    row = conn.execute(query).first()
    return row_to_stored(row) if row else None


def insert_resources(conn: Connection, items: list[NewResource]) -> list[Stored]:
    """Create resources: versions, current rows and index rows; the resources whose access follows a new
    DocumentReference (Binaries stored before it) take its facts."""
    if not items:
        return []
    pks = bulk.insert_resources(conn, items)
    return [Stored(n.resource_type, n.id, 1, n.last_updated, False, n.patient_key, n.content, n.method, pk,
                   facts=n.facts) for n, pk in zip(items, pks, strict=True)]


def write_version(conn: Connection, current: Stored, *, content: str | None, patient_key: str,
                  last_updated: datetime, method: str, index: IndexRows | None = None,
                  facts: AccessFacts | None = None) -> Stored:
    """Append the next version (a deletion when `content` is None) and make it current; `facts` None keeps
    the current access facts (a deletion)."""
    facts = current.facts if facts is None else facts
    new = Stored(current.resource_type, current.id, current.version_id + 1, last_updated, content is None,
                 patient_key, content, method, current.pk, facts=facts)
    try:
        moved = bulk.write_version(conn, current, new, index or {})
    except IntegrityError as exc:
        raise StaleVersion(f"{current.resource_type}/{current.id} version {new.version_id} already exists") from exc
    if not moved:
        raise StaleVersion(f"{current.resource_type}/{current.id} changed concurrently")
    return new


def update_governed(conn: Connection, governed_by: str, facts: AccessFacts) -> None:
    """Resources whose access follows another's (a Binary, its DocumentReference) take its new facts."""
    conn.execute(update(resource).where(resource.c.governed_by == governed_by)
                 .values(doc_type=facts.doc_type, labels=facts.labels, doc_date=facts.doc_date))


def replace_index(conn: Connection, stored: Stored, rows: IndexRows, facts: AccessFacts) -> None:
    """Recompute a resource's index rows and access facts in place (the version itself is unchanged)."""
    bulk.replace_index(conn, stored.pk, stored.resource_type, stored.patient_key, rows)
    conn.execute(update(resource).where(resource.c.pk == stored.pk).values(**bulk.fact_values(facts)))


def current_of_patient(conn: Connection, patient_key: str, types: Sequence[str]) -> list[Stored]:
    """The current, non-deleted resources of `types` filed in one DMP (its Patient and Consents)."""
    query = CURRENT.where(resource.c.patient_key == patient_key, resource.c.resource_type.in_(types),
                          resource.c.deleted.is_(False))
    return [row_to_stored(r) for r in conn.execute(query.order_by(resource.c.pk))]


def current_batch(conn: Connection, after_pk: int, limit: int, resource_type: str | None = None) -> list[Stored]:
    """Current, non-deleted resources in key order from `after_pk` (the reindex walk)."""
    query = CURRENT.where(resource.c.deleted.is_(False), resource.c.pk > after_pk)
    if resource_type:
        query = query.where(resource.c.resource_type == resource_type)
    return [row_to_stored(r) for r in conn.execute(query.order_by(resource.c.pk).limit(limit))]


def count_current(conn: Connection, resource_type: str | None = None) -> int:
    """How many resources `current_batch` walks (the reindex's progress)."""
    query = select(func.count()).select_from(resource).where(resource.c.deleted.is_(False))
    if resource_type:
        query = query.where(resource.c.resource_type == resource_type)
    return int(conn.execute(query).scalar_one())
