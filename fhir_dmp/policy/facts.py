"""The access facts of a resource, computed at write time and stored on its row (storage `AccessFacts`).

Search scopes then test columns (`doc_type IN`, label bits, owner) instead of reading every candidate's
content: the policy stays inside the one SQL statement of a search at the cost of one UPDATE when a
document's governing facts change (a Binary follows its DocumentReference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from fhir_dmp.policy import labels
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.habilitation import LOINC, TRE_A05, DocumentType
from fhir_dmp.storage.criteria import AccessFacts
from fhir_dmp.terminology.classes import codings, declared_classes

VSM_TYPE = "60591-5"  # LOINC synthèse médicale: the VSM (dmp-reference.md 8)
# The patient summary's entry types, stored as VSM section entries: each is seen as a VSM is (type 60591-5).
SUMMARY_TYPES = frozenset({"Condition", "AllergyIntolerance", "MedicationStatement", "Procedure",
                           "DeviceUseStatement", "Immunization", "Observation"})
# Types governed as documents: the habilitation matrix and the visibility labels apply to them.
DOCUMENT_TYPES = frozenset({"DocumentReference", "Composition", "Binary", *SUMMARY_TYPES})


def owner_key(caller: Caller) -> str:
    """Who deposited a resource or caused a trace, as stored in the `owner` column."""
    return f"{caller.actor}|{caller.sub}"


def access_facts(resource_type: str, resource: dict, owner: str, created: datetime,
                 types: Mapping[str, DocumentType], governing: AccessFacts | None = None) -> AccessFacts:
    """`owner` is recorded by the server (never read from the payload); `governing`: a Binary's
    DocumentReference's facts, when it is known."""
    bits = labels.bits_of(labels.codings(resource_type, resource))
    if resource_type == "Binary":
        governed_by = governing_reference(resource)
        base = governing or AccessFacts()
        return AccessFacts(base.doc_type, base.labels | bits, base.doc_date, owner, governed_by)
    if resource_type not in DOCUMENT_TYPES:
        return AccessFacts("", bits, None, owner, "")
    if resource_type in SUMMARY_TYPES:  # a VSM entry, whatever it says: no type of its own to judge it by
        return AccessFacts(VSM_TYPE if VSM_TYPE in types else "", bits, created, owner, "")
    doc_type = _document_type(resource, types)
    return AccessFacts(doc_type, bits, _instant(resource.get("date")) or created, owner, "")


HIDING = labels.MASQUE_PS | labels.INVISIBLE_PATIENT | labels.INVISIBLE_REPRESENTANTS_LEGAUX


def trace_facts(owner: str, named: Sequence[AccessFacts]) -> AccessFacts:
    """An AuditEvent names the resources its interaction touched: it carries their hiding labels (and, for the
    one-month rule of INVISIBLE_PATIENT, the latest date among the labelled ones), so that whoever may not see
    such a resource does not learn its id from the trail either (6.8: hidden is absent, in the traces too)."""
    bits = 0
    latest: datetime | None = None
    for facts in named:
        hiding = facts.labels & HIDING
        if hiding:
            bits |= hiding
            if facts.doc_date is not None and (latest is None or facts.doc_date > latest):
                latest = facts.doc_date
    return AccessFacts("", bits, latest, owner, "")


def governed(own: AccessFacts, governor: AccessFacts, governed_by: str) -> AccessFacts:
    """A resource whose access follows a document's (a VSM's Composition and entries follow its
    DocumentReference): the document's type and date, its labels added to the resource's own."""
    return AccessFacts(governor.doc_type, governor.labels | own.labels, governor.doc_date, own.owner, governed_by)


def governing_reference(binary: dict) -> str:
    """`DocumentReference/<id>` of a Binary's securityContext ('' when it has none)."""
    ctx = binary.get("securityContext")
    ref = ctx.get("reference") if isinstance(ctx, dict) else None
    if not isinstance(ref, str) or "DocumentReference/" not in ref:
        return ""
    tail = ref.split("DocumentReference/", 1)[1].split("/_history/")[0]
    return f"DocumentReference/{tail}" if tail and "/" not in tail else ""


def _document_type(resource: dict, types: Mapping[str, DocumentType]) -> str:
    """The first LOINC or TRE_A05 type code; '' (seen by no professional but its depositor) when it is not
    a DMP type or the document's class (TRE_A03) contradicts its type's (ASS_X16)."""
    code = next((c["code"] for c in codings(resource.get("type"))
                 if c.get("system") in (LOINC, TRE_A05) and isinstance(c.get("code"), str)), "")
    known = types.get(code)
    if known is None:  # not a DMP type: no row of the matrix can allow it
        return ""
    declared = declared_classes(resource)
    return "" if declared and known.doc_class not in declared else code


def _instant(value: object) -> datetime | None:
    """A document's date counts when it is a full instant (a bare date falls back to its creation)."""
    return moment(value) if isinstance(value, str) and "T" in value else None


def moment(value: object) -> datetime | None:
    """A FHIR date or dateTime as naive UTC (a bare date is its midnight); None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if "T" in value else value + "T00:00:00")
        # year 1 east of UTC, year 9999 west of it: beyond `datetime` in UTC (OverflowError: a 500 on every read)
        return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    except (ValueError, OverflowError):
        return None
