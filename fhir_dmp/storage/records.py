"""What storage hands back and takes in: stored versions, new resources, their index rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_dmp.storage.criteria import NO_FACTS, AccessFacts, AllOf, Criterion

# The server's own lookups (reference resolution, its own bookkeeping): no access restriction, said explicitly.
SYSTEM_SCOPE: Criterion = AllOf(())
GENESIS = "0" * 64  # the `previous` hash of a trace chain's first event

IndexRows = Mapping[str, list[dict[str, Any]]]  # index table kind ("token", "date"...) -> rows


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
    sort_key: tuple[Any, ...] = ()  # search pages: the row's `_sort` values, for the paging cursors
    facts: AccessFacts = NO_FACTS  # the current version's access facts


@dataclass(frozen=True)
class NewResource:
    """A resource to create: its first version, already stamped, and its index rows."""

    resource_type: str
    id: str
    patient_key: str
    content: str
    last_updated: datetime
    index: IndexRows
    method: str = "POST"  # PUT when a conditional update created it
    facts: AccessFacts = NO_FACTS


@dataclass(frozen=True)
class Located:
    """Where a resource is filed, read before its content: its DMP's key and that DMP's stored access facts
    (None when the DMP has no facts row yet, or the resource is outside any DMP)."""

    patient_key: str
    dmp_facts: str | None
    deleted: bool = False
    facts: AccessFacts = NO_FACTS  # the resource's own labels and date (what a trace naming it must carry)


def row_to_stored(row: Sequence[Any], *, sort_width: int = 0) -> Stored:
    """A row of the current/version selects (9 columns, the 5 facts, then `sort_width` sort values)."""
    sort_key = tuple(row[14:14 + sort_width])
    return Stored(*row[:9], sort_key=sort_key, facts=AccessFacts(*row[9:14]))
