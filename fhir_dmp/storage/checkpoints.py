"""The SQL of the trace chains' signed checkpoints (services/seal.py signs and checks them; no cryptography here).

A checkpoint row is (number, canonical JSON body, signature), numbered 1, 2, ...; the seal reads every chain's head
with its count of stored events, and the events of a chain from a given position on.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from fhir_dmp.storage.tables import audit_chain, audit_checkpoint, resource_version

_SEAL_LOCK = int.from_bytes(hashlib.sha1(b"fhir-dmp audit seal").digest()[:8], "big", signed=True)


def claim_seal(conn: Connection) -> bool:
    """Claim the right to seal until the transaction ends; False when another process is sealing (PostgreSQL: a
    transaction-scoped advisory lock, not waited for; SQLite: the write lock `BEGIN IMMEDIATE` already holds). The
    checkpoint number's primary key is the final guard: two sealers never both write checkpoint n."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _SEAL_LOCK}).scalar())


def read_all(conn: Connection) -> list[tuple[int, str, str]]:
    """(number, body, signature) of every stored checkpoint, in number order."""
    query = select(audit_checkpoint.c.number, audit_checkpoint.c.body, audit_checkpoint.c.signature)
    return [(int(r.number), str(r.body), str(r.signature))
            for r in conn.execute(query.order_by(audit_checkpoint.c.number))]


def insert(conn: Connection, number: int, body: str, signature: str) -> bool:
    """Store checkpoint `number`; False when it exists already (another sealer wrote it first)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(audit_checkpoint).values(number=number, body=body, signature=signature)
    return conn.execute(statement.on_conflict_do_nothing().returning(audit_checkpoint.c.number)).first() is not None


def chain_states(conn: Connection) -> dict[str, tuple[int, str, int]]:
    """Every chain with a head row: patient key -> (head seq, head hash, count of its stored events), read in one
    statement (so one snapshot even under READ COMMITTED)."""
    count = (select(func.count()).select_from(resource_version)
             .where(resource_version.c.resource_type == "AuditEvent",
                    resource_version.c.patient_key == audit_chain.c.patient_key)
             .scalar_subquery())
    query = select(audit_chain.c.patient_key, audit_chain.c.seq, audit_chain.c.head, count.label("n"))
    return {r.patient_key: (int(r.seq), str(r.head), int(r.n)) for r in conn.execute(query)}


def events_from(conn: Connection, patient_key: str, position: int) -> list[tuple[str, str | None]]:
    """(id, stored JSON) of a chain's AuditEvents from the `position`-th (1-based, in writing order) on."""
    query = (select(resource_version.c.id, resource_version.c.content)
             .where(resource_version.c.resource_type == "AuditEvent", resource_version.c.patient_key == patient_key)
             .order_by(resource_version.c.pk).offset(max(position - 1, 0)))
    return [(r.id, r.content) for r in conn.execute(query)]
