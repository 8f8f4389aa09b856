"""Traces indexed when a search needs them: before a search that can read index rows of AuditEvents runs, the
traces its scope can reach that are still waiting for their index rows get them, in the search's transaction
(storage/trace_index.py says why and how they are claimed)."""

from __future__ import annotations

from collections.abc import Iterator

from fhir_dmp import fhirjson
from fhir_dmp.search.extract import index_rows
from fhir_dmp.search.parse import SearchQuery
from fhir_dmp.search.reach import criterion_reaches, reads_index_of
from fhir_dmp.storage import criteria as c
from fhir_dmp.storage import trace_index
from fhir_dmp.storage.db import Database, Tx

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


BATCH = 2000  # traces claimed, read and indexed at a time: the memory a long backlog takes stays bounded


def index_pending(tx: Tx, scope: c.Criterion | None, base_url: str, *, limit: int | None = None) -> int:
    """Write the index rows of the pending traces within `scope` (None: all), at most `limit` (None: every one,
    in batches); how many."""
    done = 0
    while limit is None or done < limit:
        batch = BATCH if limit is None else min(BATCH, limit - done)
        claimed = trace_index.claim(tx, scope, limit=batch)
        trace_index.write(tx, [(s, index_rows(s.resource_type, fhirjson.trusted_loads(s.content), base_url))
                               for s in claimed if s.content is not None])
        done += len(claimed)
        if len(claimed) < batch:
            break
    return done


def drain(db: Database, base_url: str, *, batch: int = BATCH) -> Iterator[int]:
    """Index every pending trace, `batch` at a time in transactions of their own (`fhir-dmp audit index`: an
    operator bounds the backlog that a first search of every DMP's traces would otherwise index); yields the
    running count."""
    done = 0
    while True:
        with db.transaction(write=True) as tx:
            count = index_pending(tx, None, base_url, limit=batch)
        done += count
        if count:
            yield done
        if count < batch:
            return
