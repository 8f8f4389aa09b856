"""What a List (an MHD SubmissionSet) shows of the resources it names (dmp-reference.md 6.8 inside the List).

A SubmissionSet names the DocumentReferences it carried in `entry.item`. Shown as stored, it would give whoever may
read the List (everyone who opens the DMP) the id of a document hidden from them, and that it was filed: an
existence oracle. So, to everyone but a system caller, an entry whose item is a local reference to a resource
outside the caller's scope is left out of the List, whether that resource is hidden or does not exist (one answer),
and a search by `item` matches only through a reference the List shows (`reaching`, inside the SQL). The store
keeps every entry; the List's other elements (its narrative included: the producer's text) are shown as written.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from fhir_dmp.policy.caller import Caller
from fhir_dmp.storage import criteria as c

Key = tuple[str, str]  # (type, id)

# Per type, the search parameters over the references the shown resource may leave out: a search by them must
# match only through what it shows. The elements they index are the `entry.item` that `named` reads.
SHOWN_REFERENCES: dict[str, frozenset[str]] = {"List": frozenset({"item"})}
_EVERYTHING: c.Criterion = c.AllOf(())  # the system's scope (access.SYSTEM_SCOPE)


def shaped(caller: Caller, resource_type: str) -> bool:
    """Whether the caller is shown the resources of this type shaped (`shown`) rather than as stored."""
    return resource_type in SHOWN_REFERENCES and not caller.is_system


def named(resource: dict, base_url: str) -> list[Key | None]:
    """Per entry of the List, the local resource its item names (None: nothing local, e.g. an identifier, a
    `urn:`, another server's URL): a relative `Type/id` or this server's absolute URL, a version ignored, as
    the search index reads it (search/values.py `references`)."""
    entries = resource.get("entry")
    if not isinstance(entries, list):
        return []
    base = base_url.rstrip("/") + "/" if base_url else None
    found: list[Key | None] = []
    for entry in entries:
        item = entry.get("item") if isinstance(entry, dict) else None
        literal = item.get("reference") if isinstance(item, dict) else None
        found.append(_local(literal, base) if isinstance(literal, str) else None)
    return found


def _local(literal: str, base: str | None) -> Key | None:
    if base and literal.startswith(base):
        literal = literal[len(base):]
    parts = literal.split("/_history/")[0].split("/")
    if len(parts) == 2 and parts[0][:1].isupper() and parts[1]:
        return parts[0], parts[1][:64]
    return None


def shown(resource: dict, keys: Sequence[Key | None], visible: Collection[Key]) -> dict:
    """The List without the entries naming a local resource outside `visible` (hidden or absent alike)."""
    entries = resource.get("entry")
    if not isinstance(entries, list) or not keys:
        return resource
    kept = [e for e, key in zip(entries, keys, strict=False) if key is None or key in visible]
    if len(kept) == len(entries):
        return resource
    out = {k: v for k, v in resource.items() if k != "entry"}
    if kept:
        out["entry"] = kept
    return out


def left_out(resource: dict, keys: Sequence[Key | None], visible: Collection[Key]) -> list[dict]:
    """The entries `shown` leaves out: what a change by this caller must keep (`with_left_out`)."""
    entries = resource.get("entry")
    if not isinstance(entries, list):
        return []
    return [e for e, key in zip(entries, keys, strict=False) if key is not None and key not in visible]


def with_left_out(after: dict, kept: list[dict], base_url: str) -> dict:
    """A List as a caller changed it (a PUT, a patch of the List as shown to them), with the entries they were not
    shown kept (after theirs, those naming what the caller's own entries name aside): a caller cannot remove what
    they may not see, and the answer, shaped again, is the one a List that never named it gives."""
    if not kept:
        return after
    own = {k for k in named(after, base_url) if k is not None}
    added = [e for e, key in zip(kept, named({"entry": kept}, base_url), strict=True) if key not in own]
    if not added:
        return after
    entries = after.get("entry") if isinstance(after.get("entry"), list) else []
    return {**after, "entry": [*entries, *added]}


def naming_seen(seen: c.Criterion, mine: c.Criterion) -> c.Criterion:
    """When a List (inside a DMP the caller opens) is seen: it names at least one resource within `seen` (the rest of
    the caller's scope) or nothing local, or the caller filed it. A List whose every local item is hidden from the
    caller (or absent) is itself absent for them: shown without entries, it would tell that documents hidden from
    them were filed, when and by whom, as a trace naming them would (`facts.trace_facts`)."""
    terms: list[c.Criterion] = [mine]
    for param in sorted(set().union(*SHOWN_REFERENCES.values())):
        terms += [c.Not(c.Reference(param)), c.Reference(param, within=seen)]
    return c.AnyOf(tuple(terms))


def reaching(criterion: c.Criterion, resource_type: str | None, scope: c.Criterion) -> c.Criterion:
    """A search term over a reference the shown resource may leave out, matching only through a target within
    `scope` (the caller's): `List?item=DocumentReference/<hidden>` matches as for an absent id, and `:missing` sees
    the List as shown. Any other term as it is."""
    if resource_type not in SHOWN_REFERENCES or scope == _EVERYTHING:  # a system caller: the List as stored
        return criterion
    params = SHOWN_REFERENCES[resource_type]
    match criterion:
        case c.Reference(param, target_type, target_id, url, None) if param in params and url is None:
            return c.Reference(param, target_type, target_id, None, scope)
        case c.Missing(param, "reference", missing) if param in params:
            present = c.Reference(param, within=scope)
            return c.Not(present) if missing else present
    return criterion
