"""The `_include` and `_revinclude` values the search engine takes, from its own parameter table
(`extract.indexed_params`): what the CapabilityStatement declares as searchInclude and searchRevInclude."""

from __future__ import annotations

from functools import cache

from fhir_dmp.search.extract import SERVED_TYPES, indexed_params


def _references(rtype: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(code, p.targets) for code, p in indexed_params(rtype).items() if p.type == "reference"]


@cache
def includes(rtype: str) -> tuple[str, ...]:
    """`Type:parameter` for each reference parameter of the type, and `Type:*` (every one of them)."""
    refs = _references(rtype)
    return tuple(f"{rtype}:{code}" for code, _ in refs) + ((f"{rtype}:*",) if refs else ())


@cache
def revincludes(rtype: str) -> tuple[str, ...]:
    """`Source:parameter` for each reference parameter of a served type that may point at `rtype`."""
    return tuple(f"{source}:{code}" for source in SERVED_TYPES for code, targets in _references(source)
                 if rtype in targets)
