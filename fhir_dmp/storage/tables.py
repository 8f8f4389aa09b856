"""The relational schema: current resources, every version, and search index rows.

Every DMP-scoped row carries `patient_key` (the Patient id of the DMP it belongs to, '' for
resources outside any DMP) so the store can later be distributed by patient (Citus) without
a redesign. Bodies are kept once, in `resource_version`, as the client's JSON text plus the
server-set id/meta; `resource` is the small current-state row that points at its version.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
PK = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("patient_key", String(64), nullable=False, default=""),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("version_pk", PK, nullable=False),
    UniqueConstraint("resource_type", "id", name="uq_resource_type_id"),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
    Index("ix_resource_patient", "patient_key", "resource_type"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("patient_key", String(64), nullable=False, default=""),
    Column("last_updated", DateTime(), nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),
    # Two writers can never both create version n+1 of one resource.
    UniqueConstraint("resource_type", "id", "version_id", name="uq_version"),
    Index("ix_version_type_pk", "resource_type", "pk"),
)

token_index = Table(
    "idx_token",
    metadata,
    Column("resource_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
    Column("patient_key", String(64), nullable=False, default=""),
    Column("resource_type", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255), nullable=False, default=""),
    Column("code", String(255), nullable=False),
    Index("ix_token_lookup", "resource_type", "param", "code", "system"),
    Index("ix_token_resource", "resource_pk"),
)
