"""Traces hide as what they name (6.8 in the audit trail): an AuditEvent naming a document hidden from a reader of
the trail (the patient for INVISIBLE_PATIENT, a representative for INVISIBLE_REPRESENTANTS_LEGAUX, the médecin
traitant for a masked one) is left out of their `AuditEvent?patient=`, so the trail never gives them the id of a
document that answers them 404. The same reads of a document they may see stay in their trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhir_dmp.policy import labels
from fhir_dmp.policy.facts import trace_facts
from fhir_dmp.storage.criteria import AccessFacts
from tests.fhirclient import json_of, patient
from tests.policy.test_access_table import IDNATPS, created, fresh_ins
from tests.policy.test_hidden_equals_absent import doc_body

AUTHOR = {"actor": "professional", "sub": "810000000101", "profession": "10"}
TREATING = {"actor": "professional", "sub": "810000000102", "profession": "10"}


def _world(client, hidden_label: str):  # type: ignore[no-untyped-def]
    """DMP A opened by its author (authorised), with the médecin traitant named; a document carrying
    `hidden_label` and a plain one, each read by the author."""
    ins = fresh_ins()
    author = client.as_(**AUTHOR)
    gp = [{"identifier": {"system": IDNATPS, "value": TREATING["sub"]}}]
    pid = created(author.post("Patient", patient(ins, generalPractitioner=gp)), "Patient")["id"]
    hidden = created(author.post("DocumentReference", doc_body(pid, "11488-4", (hidden_label,))), "hidden")["id"]
    plain = created(author.post("DocumentReference", doc_body(pid, "11488-4")), "plain")["id"]
    for rid in (hidden, plain):
        assert author.get(f"DocumentReference/{rid}").status_code == 200
    return ins, pid, hidden, plain


def _trail(reader, pid: str) -> str:  # type: ignore[no-untyped-def]
    response = reader.get(f"AuditEvent?patient=Patient/{pid}&_count=500")
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


@pytest.mark.parametrize("who", ["patient", "representative"])
def test_the_trail_of_a_patient_or_representative_never_names_a_document_invisible_to_them(client, who):
    label = "INVISIBLE_PATIENT" if who == "patient" else "INVISIBLE_REPRESENTANTS_LEGAUX"
    ins, pid, hidden, plain = _world(client, label)
    reader = client.as_(actor=who, sub=ins if who == "patient" else f"rep-{ins}", patient=ins)
    trail = _trail(reader, pid)
    assert hidden not in trail
    assert plain in trail  # the author's read of the plain document is there
    assert f"Patient/{pid}" in trail
    assert reader.get(f"DocumentReference/{hidden}").status_code == 404  # hidden from them: absent


def test_the_patient_sees_a_representatives_hidden_document_in_their_own_trail(client):
    ins, pid, hidden, _ = _world(client, "INVISIBLE_REPRESENTANTS_LEGAUX")
    assert hidden in _trail(client.as_(actor="patient", sub=ins, patient=ins), pid)


def test_the_medecin_traitant_who_sees_masked_documents_reads_their_traces(client):
    _, pid, hidden, plain = _world(client, "MASQUE_PS")
    treating = client.as_(**TREATING)
    trail = _trail(treating, pid)
    assert hidden in trail and plain in trail
    assert treating.get(f"DocumentReference/{hidden}").status_code == 200


def test_the_author_still_reads_their_own_traces_of_the_hidden_document(client):
    _, pid, hidden, _ = _world(client, "INVISIBLE_PATIENT")
    found = json_of(client.as_(**AUTHOR).get(f"AuditEvent?patient=Patient/{pid}&_count=500"))
    assert any(hidden in str(e["resource"].get("entity")) for e in found["entry"])


def test_trace_facts_carry_every_hiding_label_and_the_latest_hidden_date() -> None:
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    named = [AccessFacts("11488-4", labels.INVISIBLE_PATIENT, old, "a"),
             AccessFacts("11488-4", labels.MASQUE_PS, new, "b"),
             AccessFacts("11488-4", 0, new + timedelta(days=9), "c")]
    facts = trace_facts("professional|1", named)
    assert facts.labels == labels.INVISIBLE_PATIENT | labels.MASQUE_PS
    assert facts.doc_date == new and facts.owner == "professional|1" and facts.doc_type == ""
    assert trace_facts("x", []) == AccessFacts(owner="x")
