"""Traces indexed when a search needs them: before a search that can read index rows of AuditEvents runs, the
traces its scope can reach that are still waiting for their index rows get them, in the search's transaction
(storage/trace_index.py says why and how they are claimed)."""

from __future__ import annotations

from fhir_dmp import fhirjson
from fhir_dmp.search.extract import index_rows
from fhir_dmp.search.parse import SearchQuery
from fhir_dmp.search.reach import criterion_reaches, reads_index_of
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import trace_index
from fhir_dmp.storage.db import Tx

TRACE = trace_index.TRACE


def before_search(tx: Tx, resource_type: str, query: SearchQuery, scope: c.Criterion, base_url: str) -> None:
    """Index the pending traces within `scope` if this search can read traces' index rows."""
    if reads_index_of(resource_type, query, TRACE):
        index_pending(tx, scope, base_url)


def before_condition(tx: Tx, resource_type: str, criteria: c.Criterion, base_url: str) -> None:
    """A conditional match on traces (a transaction's conditional reference): every pending trace first, since
    the DMPs it may match in are only known from the index (a rare request: later ones find nothing pending)."""
    if resource_type == TRACE or criterion_reaches(criteria, TRACE):
        index_pending(tx, None, base_url)


def index_pending(tx: Tx, scope: c.Criterion | None, base_url: str, *, limit: int | None = None) -> int:
    """Write the index rows of the pending traces within `scope` (None: all, at most `limit`); how many."""
    claimed = trace_index.claim(tx, scope, limit=limit)
    trace_index.write(tx, [(s, index_rows(s.resource_type, fhirjson.trusted_loads(s.content), base_url))
                           for s in claimed if s.content is not None])
    return len(claimed)
