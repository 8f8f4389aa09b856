"""Reads and writes of resources and their versions: the only module that issues SQL for them.

Optimistic concurrency: a new version is inserted under a unique (type, id, version) key and the
current row is moved with `WHERE version_id = <expected>`; a concurrent writer makes one of the two
fail with `StaleVersion` and nothing of it is kept, so no update is ever silently lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from fhir_dmp.storage.compile import compile_criterion
from fhir_dmp.storage.criteria import Criterion
from fhir_dmp.storage.tables import INDEX_TABLES, resource, resource_version


class StaleVersion(Exception):
    """Another writer changed the resource since it was read."""


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored; `content` is None for a deletion."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    patient_key: str
    content: str | None
    method: str = ""
    pk: int = 0  # resource.pk for current rows, resource_version.pk for history rows


_CURRENT = (
    select(
        resource.c.resource_type,
        resource.c.id,
        resource.c.version_id,
        resource.c.last_updated,
        resource.c.deleted,
        resource.c.patient_key,
        resource_version.c.content,
        resource_version.c.method,
        resource.c.pk,
    )
    .select_from(resource)
    .join(resource_version, resource_version.c.pk == resource.c.version_pk)
)

_VERSIONS = select(
    resource_version.c.resource_type,
    resource_version.c.id,
    resource_version.c.version_id,
    resource_version.c.last_updated,
    resource_version.c.deleted,
    resource_version.c.patient_key,
    resource_version.c.content,
    resource_version.c.method,
    resource_version.c.pk,
)


def read_current(conn: Connection, resource_type: str, rid: str) -> Stored | None:
    row = conn.execute(
        _CURRENT.where(resource.c.resource_type == resource_type, resource.c.id == rid)
    ).first()
    return Stored(*row) if row else None


def read_version(conn: Connection, resource_type: str, rid: str, version_id: int) -> Stored | None:
    row = conn.execute(
        _VERSIONS.where(
            resource_version.c.resource_type == resource_type,
            resource_version.c.id == rid,
            resource_version.c.version_id == version_id,
        )
    ).first()
    return Stored(*row) if row else None


def _insert_version(
    conn: Connection,
    resource_type: str,
    rid: str,
    version_id: int,
    patient_key: str,
    content: str | None,
    last_updated: datetime,
    method: str,
) -> int:
    try:
        return conn.execute(
            insert(resource_version).returning(resource_version.c.pk),
            {
                "resource_type": resource_type,
                "id": rid,
                "version_id": version_id,
                "patient_key": patient_key,
                "last_updated": last_updated,
                "method": method,
                "deleted": content is None,
                "content": content,
            },
        ).scalar_one()
    except IntegrityError as exc:
        raise StaleVersion(f"{resource_type}/{rid} version {version_id} already exists") from exc


IndexRows = Mapping[str, list[dict[str, Any]]]  # index table kind ("token", "date"...) -> rows


def _write_index(conn: Connection, resource_pk: int, resource_type: str, patient_key: str, rows: IndexRows,
                 *, replace: bool) -> None:
    """The resource's search index rows, replacing the previous version's in the same transaction."""
    if replace:
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.resource_pk == resource_pk))
    for kind, items in rows.items():
        if items:
            common = {"resource_pk": resource_pk, "patient_key": patient_key, "resource_type": resource_type}
            conn.execute(insert(INDEX_TABLES[kind]), [{**common, **item} for item in items])


def insert_resource(
    conn: Connection,
    resource_type: str,
    rid: str,
    patient_key: str,
    content: str,
    last_updated: datetime,
    index: IndexRows,
) -> Stored:
    version_pk = _insert_version(conn, resource_type, rid, 1, patient_key, content, last_updated, "POST")
    pk = conn.execute(
        insert(resource).returning(resource.c.pk),
        {"resource_type": resource_type, "id": rid, "patient_key": patient_key, "version_id": 1,
         "last_updated": last_updated, "deleted": False, "version_pk": version_pk},
    ).scalar_one()
    _write_index(conn, pk, resource_type, patient_key, index, replace=False)
    return Stored(resource_type, rid, 1, last_updated, False, patient_key, content, "POST", pk)


def write_version(
    conn: Connection,
    current: Stored,
    *,
    content: str | None,
    patient_key: str,
    last_updated: datetime,
    method: str,
    index: IndexRows | None = None,
) -> Stored:
    """Append the next version (a deletion when `content` is None) and make it current."""
    version_id = current.version_id + 1
    version_pk = _insert_version(
        conn, current.resource_type, current.id, version_id, patient_key, content, last_updated, method
    )
    moved = conn.execute(
        update(resource)
        .where(resource.c.pk == current.pk, resource.c.version_id == current.version_id)
        .values(version_id=version_id, version_pk=version_pk, deleted=content is None,
                last_updated=last_updated, patient_key=patient_key)
    ).rowcount
    if moved != 1:
        raise StaleVersion(f"{current.resource_type}/{current.id} changed concurrently")
    _write_index(conn, current.pk, current.resource_type, patient_key, index or {}, replace=True)
    return Stored(current.resource_type, current.id, version_id, last_updated, content is None,
                  patient_key, content, method, current.pk)


def history(
    conn: Connection,
    resource_type: str | None,
    rid: str | None,
    *,
    since: datetime | None,
    before_pk: int | None,
    limit: int,
) -> list[Stored]:
    """Versions newest first, keyset-paged on the version row key."""
    query = _VERSIONS
    if resource_type:
        query = query.where(resource_version.c.resource_type == resource_type)
    if rid:
        query = query.where(resource_version.c.id == rid)
    if since is not None:
        query = query.where(resource_version.c.last_updated >= since)
    if before_pk is not None:
        query = query.where(resource_version.c.pk < before_pk)
    rows = conn.execute(query.order_by(resource_version.c.pk.desc()).limit(limit)).all()
    return [Stored(*r) for r in rows]


def history_count(conn: Connection, resource_type: str | None, rid: str | None, since: datetime | None) -> int:
    query = select(func.count()).select_from(resource_version)
    if resource_type:
        query = query.where(resource_version.c.resource_type == resource_type)
    if rid:
        query = query.where(resource_version.c.id == rid)
    if since is not None:
        query = query.where(resource_version.c.last_updated >= since)
    return conn.execute(query).scalar_one()


def find(conn: Connection, resource_type: str, where: Criterion, *, after_pk: int | None, limit: int) -> list[Stored]:
    """Current, non-deleted matches in key order, keyset-paged."""
    query = _CURRENT.where(
        resource.c.resource_type == resource_type, resource.c.deleted.is_(False), compile_criterion(where)
    )
    if after_pk is not None:
        query = query.where(resource.c.pk > after_pk)
    rows = conn.execute(query.order_by(resource.c.pk).limit(limit)).all()
    return [Stored(*r) for r in rows]


def count(conn: Connection, resource_type: str, where: Criterion) -> int:
    query = select(func.count()).select_from(resource).where(
        resource.c.resource_type == resource_type, resource.c.deleted.is_(False), compile_criterion(where)
    )
    return conn.execute(query).scalar_one()
