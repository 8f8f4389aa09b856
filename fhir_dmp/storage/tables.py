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
    Numeric,
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
    # Access facts of the current version, set by the access policy at write time (policy/facts.py) so
    # that its scope is a handful of column predicates on the rows a search already reads.
    Column("doc_type", String(64), nullable=False, default=""),  # habilitation type code
    Column("labels", Integer, nullable=False, default=0),  # visibility bits (TRE_A07)
    Column("doc_date", DateTime(), nullable=True),  # the date INVISIBLE_PATIENT's one-month reveal runs from
    Column("owner", String(140), nullable=False, default=""),  # depositor, or trace's agent
    Column("governed_by", String(140), nullable=False, default=""),  # Binary: its DocumentReference
    UniqueConstraint("resource_type", "id", name="uq_resource_type_id"),
    Index("ix_resource_type_updated", "resource_type", "last_updated"),
    Index("ix_resource_patient", "patient_key", "resource_type"),
    Index("ix_resource_governed", "governed_by"),
)

# The head of each DMP's AuditEvent hash chain ('' = the server's chain, for events tied to no DMP). Locking
# one row per DMP lets writers on different DMPs append their traces without waiting on each other.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
)

# Traces whose search index rows are not written yet (storage/trace_index.py): a search that can reach traces
# writes those of the pending rows within its scope first. Keyed by DMP, with the owner (the caller who caused the
# trace), the two columns an access scope narrows traces by.
index_pending = Table(
    "index_pending",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("resource_pk", PK, primary_key=True, autoincrement=False),
    Column("owner", String(140), nullable=False, default=""),
    Index("ix_index_pending_owner", "owner"),
)

# Signed checkpoints of the trace chains (services/seal.py, docs/audit.md): `body` is the canonical JSON the
# signature covers (its number, time, previous checkpoint's hash, key id, the chains changed since the previous
# one); the signature is what a database writer cannot produce. Numbered 1, 2, ... with no gap: two sealers can never
# both write checkpoint n.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("body", Text, nullable=False),
    Column("signature", String(128), nullable=False),
)

# Which professional has already opened which DMP: the first access is notified to the patient.
dmp_accessor = Table(
    "dmp_accessor",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("accessor", String(140), primary_key=True),
    Column("first_access", DateTime(), nullable=False),
)

# Each DMP's access facts (its INS, whether it is open, its médecin traitant, the patient's choices with their
# periods), recomputed from its Patient and Consents by the unit of work that changes them: a read decides access
# from this one row instead of parsing the Patient and every Consent.
dmp_facts = Table(
    "dmp_facts",
    metadata,
    Column("patient_key", String(64), primary_key=True),
    Column("facts", Text, nullable=False),
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



def _index_table(name: str, *columns: Column, lookup: tuple[str, ...] = ()) -> Table:
    """One index table per parameter type (as HAPI's SPIDX tables), rows replaced on every write.

    `(resource_pk, param)` serves the correlated probes that filter candidate rows. Tables whose
    values can drive a query (`pk IN (lookup)`: identifiers, references, names) also get a lookup index
    led by the parameter and value; ranges (dates, numbers) only filter, and a range index there would
    tempt the planner into scanning every row below a bound.
    """
    indexes = [Index(f"ix_{name}_resource", "resource_pk", "param")]
    if lookup:
        indexes.append(Index(f"ix_{name}_lookup", "param", *lookup, "resource_type"))
    return Table(
        name,
        metadata,
        Column("resource_pk", PK, ForeignKey("resource.pk", ondelete="CASCADE"), nullable=False),
        Column("patient_key", String(64), nullable=False, default=""),
        Column("resource_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
        *indexes,
    )


# Values are cut to their column's length at write time (and search values alike), so no write fails on
# a long value; a search on a value longer than the column compares the same prefix.
token_index = _index_table(
    "idx_token",
    Column("system", String(255), nullable=False, default=""),
    Column("code", String(255), nullable=False),
    Column("text", String(255), nullable=True),  # display / CodeableConcept.text, normalised, for :text
    lookup=("code", "system"),
)
string_index = _index_table(
    "idx_string",
    Column("value_norm", String(255), nullable=False),  # lower case, accents removed
    Column("value_exact", String(255), nullable=False),
    lookup=("value_norm",),
)
date_index = _index_table(
    "idx_date",
    Column("low", DateTime(), nullable=False),  # the instant range [low, high) the value covers
    Column("high", DateTime(), nullable=False),
)
reference_index = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=False, default=""),
    Column("target_id", String(64), nullable=False, default=""),
    Column("url", String(512), nullable=False, default=""),  # absolute, canonical or unresolved references
    lookup=("target_id", "target_type"),
)
uri_index = _index_table("idx_uri", Column("uri", String(512), nullable=False), lookup=("uri",))
number_index = _index_table(
    "idx_number",
    Column("low", Numeric(38, 12), nullable=False),
    Column("high", Numeric(38, 12), nullable=False),
)
quantity_index = _index_table(
    "idx_quantity",
    Column("system", String(255), nullable=False, default=""),
    Column("code", String(255), nullable=False, default=""),
    Column("low", Numeric(38, 12), nullable=False),
    Column("high", Numeric(38, 12), nullable=False),
)
composite_index = _index_table(
    "idx_composite",
    Column("first", String(255), nullable=False),
    Column("second", String(255), nullable=False),
    lookup=("first", "second"),
)

INDEX_TABLES = {
    "token": token_index, "string": string_index, "date": date_index, "reference": reference_index,
    "uri": uri_index, "number": number_index, "quantity": quantity_index, "composite": composite_index,
}

# -- subscriptions (services/subscriptions.py, docs/subscriptions.md) -------------------------------------------
# A Subscription (R4 backport of R5 topic-based subscriptions, IHE DSUBm): its resource as the client wrote it plus
# what the server keeps about it. `patient_key` is the DMP a patient-dependent subscription names ('' for a
# multi-patient one): rows shard with their DMP. `events` counts the events numbered for it so far (in the
# transaction of the document that caused them: no gap), `delivered` the last one the endpoint acknowledged;
# `lease_until` is a worker's claim on its delivery (one worker at a time per subscription, order kept).
subscription = Table(
    "subscription",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("patient_key", String(64), nullable=False, default=""),
    Column("owner", String(140), nullable=False),  # the creator's identity (policy/facts.py owner_key)
    Column("subscriber", Text, nullable=False),  # the creator's claims (JSON), decided again at every event
    Column("status", String(16), nullable=False),  # requested, active, error, off
    Column("topic", String(255), nullable=False),
    Column("resource_type", String(64), nullable=False),  # the topic's focus type (DocumentReference, List)
    Column("criteria", Text, nullable=False),  # the filter's query, as a search of that type would take it
    Column("endpoint", String(1024), nullable=False),
    Column("content", String(16), nullable=False),  # empty, id-only, full-resource
    Column("heartbeat", Integer, nullable=True),  # seconds
    Column("timeout", Integer, nullable=False),  # seconds
    Column("max_count", Integer, nullable=False),
    Column("base_url", String(512), nullable=False, default=""),
    Column("body", Text, nullable=False),  # the resource as stored (its status and meta set by the server)
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(), nullable=False),
    Column("events", BigInteger, nullable=False, default=0),
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
    Column("next_attempt", DateTime(), nullable=True),
    Column("lease_until", DateTime(), nullable=True),
    Column("last_sent", DateTime(), nullable=True),
    Column("heartbeat_at", DateTime(), nullable=True),  # when the next heartbeat is due
    Column("error", Text, nullable=True),
    Index("ix_subscription_patient", "patient_key", "status"),
    Index("ix_subscription_owner", "owner"),
)

# The outbox: one row per (subscription, event number), written in the transaction of the write that caused it,
# kept after delivery for `$events`.
subscription_event = Table(
    "subscription_event",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("patient_key", String(64), nullable=False, default=""),
    Column("focus", String(200), nullable=False),  # Type/id/_history/version
    Column("occurred", DateTime(), nullable=False),
    Column("delivered_at", DateTime(), nullable=True),
)
