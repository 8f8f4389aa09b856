"""A DMP as a whole: its access facts row, its removal (the purge) and the VSM's business queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from fhir_dmp.storage import prepared
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.storage.records import Stored, row_to_stored
from fhir_dmp.storage.resources import CURRENT
from fhir_dmp.storage.tables import (
    INDEX_TABLES,
    audit_chain,
    dmp_accessor,
    dmp_facts,
    index_pending,
    resource,
    resource_version,
    subscription,
    subscription_event,
)

_FACTS = select(dmp_facts.c.facts).where(dmp_facts.c.patient_key == bindparam("key", ""))


def facts_of(conn: Connection, patient_key: str) -> str | None:
    """The DMP's stored access facts (a JSON text the policy wrote), None when it has none yet (a row by its key:
    prepared once, as every search naming its patient asks it)."""
    found = prepared.rows(conn, _FACTS, {"key": patient_key})
    return found[0].facts if found else None


def facts_of_many(conn: Connection, patient_keys: Sequence[str]) -> dict[str, str]:
    """`facts_of` for several DMPs in one statement (those with no facts row are left out)."""
    if not patient_keys:
        return {}
    rows = conn.execute(select(dmp_facts.c.patient_key, dmp_facts.c.facts)
                        .where(dmp_facts.c.patient_key.in_(sorted(set(patient_keys)))))
    return {key: facts for key, facts in rows}


def related_to(conn: Connection, system: str, value: str) -> set[str]:
    """The DMPs whose Patient names this professional as médecin traitant or whose Consents name them (an
    authorisation, a grant, a block: the policy decides from the facts), by the index: one statement."""
    token = INDEX_TABLES["token"]
    query = (select(token.c.patient_key).where(
        token.c.param.in_(("general-practitioner:identifier", "actor:identifier")), token.c.code == value[:255],
        token.c.system == system, token.c.resource_type.in_(("Patient", "Consent"))).distinct())
    return {key for key in conn.execute(query).scalars() if key}


def drop_facts(conn: Connection, patient_key: str) -> None:
    """A DMP whose Patient is gone has no facts row: nothing to decide access from."""
    conn.execute(delete(dmp_facts).where(dmp_facts.c.patient_key == patient_key))


def save_facts(conn: Connection, patient_key: str, facts: str) -> None:
    """Store the DMP's access facts, recomputed in the unit of work that changed its Patient or Consents."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(dmp_facts).values(patient_key=patient_key, facts=facts)
    conn.execute(statement.on_conflict_do_update(index_elements=[dmp_facts.c.patient_key],
                                                 set_={"facts": statement.excluded.facts}))


def purge_patient(conn: Connection, patient_key: str) -> dict[str, int]:
    """Remove a DMP from the store, in the caller's transaction: every resource filed in it, every version of
    those resources and every version ever filed under it (a resource moved out keeps none of its DMP past), their
    index rows, its AuditEvents with its trace chain's head, its first-access records, the subscriptions on it and
    the subscription events about it. Returns the count of
    rows removed per table."""
    in_dmp = select(resource.c.pk).where(resource.c.patient_key == patient_key)
    removed: dict[str, int] = {}
    for name, table in INDEX_TABLES.items():
        removed[f"idx_{name}"] = conn.execute(delete(table).where(
            or_(table.c.resource_pk.in_(in_dmp), table.c.patient_key == patient_key))).rowcount
    owned = (select(resource.c.pk).where(resource.c.resource_type == resource_version.c.resource_type,
                                         resource.c.id == resource_version.c.id,
                                         resource.c.patient_key == patient_key).exists())
    removed["resource_version"] = conn.execute(delete(resource_version).where(
        or_(resource_version.c.patient_key == patient_key, owned))).rowcount
    removed["resource"] = conn.execute(delete(resource).where(resource.c.patient_key == patient_key)).rowcount
    removed["index_pending"] = conn.execute(delete(index_pending).where(
        index_pending.c.patient_key == patient_key)).rowcount
    removed["audit_chain"] = conn.execute(delete(audit_chain).where(audit_chain.c.patient_key == patient_key)).rowcount
    removed["dmp_accessor"] = conn.execute(delete(dmp_accessor).where(
        dmp_accessor.c.patient_key == patient_key)).rowcount
    removed["dmp_facts"] = conn.execute(delete(dmp_facts).where(dmp_facts.c.patient_key == patient_key)).rowcount
    # subscriptions: the events of its documents (whatever subscription numbered them), those on the DMP
    removed["subscription_event"] = conn.execute(delete(subscription_event).where(
        subscription_event.c.patient_key == patient_key)).rowcount
    removed["subscription"] = conn.execute(delete(subscription).where(
        subscription.c.patient_key == patient_key)).rowcount
    return removed


def govern(conn: Connection, keys: Sequence[tuple[str, str]], governed_by: str, facts: AccessFacts) -> None:
    """Resources whose access now follows a document's (a VSM's Composition and section entries, its
    DocumentReference): its type and date, its labels added to their own, and `update_governed` from then on."""
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in sorted(by_type.items()):
        conn.execute(update(resource).where(resource.c.resource_type == rtype, resource.c.id.in_(sorted(ids)))
                     .values(governed_by=governed_by, doc_type=facts.doc_type, doc_date=facts.doc_date,
                             labels=resource.c.labels.op("|")(facts.labels)))


def stale_documents(conn: Connection, practitioner: str, doc_type: str, cutoff: datetime,
                    ) -> list[tuple[Stored, datetime | None, str | None]]:
    """The open DMPs whose médecin traitant (Patient.generalPractitioner identifier) is `practitioner` and whose
    newest DocumentReference of `doc_type` (not entered-in-error) is missing or dated before `cutoff`: each
    Patient with that document's date and id. One statement: the newest document is a correlated subquery on
    the DMP's own rows (`ix_resource_patient`), never a scan of every document."""
    token = INDEX_TABLES["token"]
    doc = resource.alias("doc")
    withdrawn = select(token.c.resource_pk).where(token.c.resource_pk == doc.c.pk, token.c.param == "status",
                                                  token.c.code == "entered-in-error").exists()
    of_dmp = and_(doc.c.patient_key == resource.c.id, doc.c.resource_type == "DocumentReference",
                  doc.c.doc_type == doc_type, doc.c.deleted.is_(False), ~withdrawn)
    newest = select(func.max(doc.c.doc_date)).where(of_dmp).correlate(resource).scalar_subquery()
    newest_id = (select(doc.c.id).where(of_dmp).order_by(doc.c.doc_date.desc(), doc.c.pk.desc()).limit(1)
                 .correlate(resource).scalar_subquery())
    treated = select(token.c.resource_pk).where(token.c.resource_type == "Patient",
                                                token.c.param == "general-practitioner:identifier",
                                                token.c.code == practitioner)
    closed = select(token.c.resource_pk).where(token.c.resource_type == "Patient", token.c.param == "active",
                                               token.c.code == "false")
    mine = (select(resource.c.pk.label("pk"), newest.label("newest"), newest_id.label("newest_id"))
            .where(resource.c.resource_type == "Patient", resource.c.deleted.is_(False),
                   resource.c.pk.in_(treated), resource.c.pk.not_in(closed)).subquery("mine"))
    query = (CURRENT.add_columns(mine.c.newest, mine.c.newest_id).join(mine, mine.c.pk == resource.c.pk)
             .where(or_(mine.c.newest.is_(None), mine.c.newest < cutoff)).order_by(resource.c.pk))
    return [(row_to_stored(r), r[-2], r[-1]) for r in conn.execute(query)]
