"""Which resource types' index rows a search reads: its own type's, a chain's targets', `_has` sources' and its
includes' sources'. Traces are indexed only when a search can reach them (storage/trace_index.py)."""

from __future__ import annotations

from fhir_dmp.search.parse import SearchQuery
from fhir_dmp.storage import criteria as c


def reads_index_of(resource_type: str, query: SearchQuery, wanted: str) -> bool:
    """True when the search of `resource_type` may read index rows of `wanted` resources."""
    if resource_type == wanted:
        return True
    if any(i.source_type == wanted for i in query.includes + query.revincludes):
        return True
    return criterion_reaches(query.criteria, wanted)


def criterion_reaches(node: c.Criterion, wanted: str) -> bool:
    """True when matching `node` may read index rows of `wanted` resources (through a chain or `_has`)."""
    if isinstance(node, c.Chain):
        return wanted in node.target_types or criterion_reaches(node.inner, wanted)
    if isinstance(node, c.Has):
        return node.source_type == wanted or criterion_reaches(node.inner, wanted)
    if isinstance(node, c.PatientMatches):
        return criterion_reaches(node.inner, wanted)
    if isinstance(node, c.Not):
        return criterion_reaches(node.part, wanted)
    if isinstance(node, c.AnyOf | c.AllOf):
        return any(criterion_reaches(p, wanted) for p in node.parts)
    return False
