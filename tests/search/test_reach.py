"""search/reach.py: which searches read the index rows of traces (and so index the pending ones first)."""

from __future__ import annotations

import pytest

from fhir_dmp.search.parse import parse_query
from fhir_dmp.search.reach import reads_index_of


def _query(rtype: str, qs: str):  # type: ignore[no-untyped-def]
    pairs = [tuple(p.split("=", 1)) for p in qs.split("&") if p]
    return parse_query(rtype, pairs, strict=True, default_count=20, max_count=1000, base_url="http://x/fhir")


@pytest.mark.parametrize(("rtype", "qs"), [
    ("AuditEvent", ""),
    ("AuditEvent", "patient=p1&action=R"),
    ("DocumentReference", "_revinclude=AuditEvent:entity"),
    ("DocumentReference", "_has:AuditEvent:entity:agent=810000000001"),
    ("Patient", "_has:DocumentReference:patient:_has:AuditEvent:entity:action=R"),
    ("List", "item:AuditEvent.action=R"),
    ("DocumentReference", "_revinclude=List:item&_include:iterate=AuditEvent:entity"),
])
def test_searches_reaching_traces(rtype: str, qs: str) -> None:
    assert reads_index_of(rtype, _query(rtype, qs), "AuditEvent")


@pytest.mark.parametrize(("rtype", "qs"), [
    ("DocumentReference", "patient=p1&status=current"),
    ("DocumentReference", "_include=DocumentReference:subject&subject:Patient.name=martin"),
    ("Patient", "_has:DocumentReference:patient:type=11502-2"),
    ("List", "item=AuditEvent/a1"),  # the List's own reference rows: no trace's rows read
])
def test_searches_not_reaching_traces(rtype: str, qs: str) -> None:
    assert not reads_index_of(rtype, _query(rtype, qs), "AuditEvent")
