"""The conformance resources the server ships, loaded once and indexed by type, id and canonical url.

Sources, under FHIR_DMP_HOME: `terminologies/fhir/*.json` (CodeSystems, ValueSets, ConceptMaps built by
`tools/build_terminologies.py`), `profiles/*.json` (StructureDefinitions, and any other of these types found
there) and `capability/operations/*.json` (the OperationDefinitions of the operations the server declares).
They are files, not rows: reference data published by ANS and HL7 (and our profiles), versioned with the code
that relies on them, never written through the API.

Loading validates: malformed JSON, a resource without id or url, or two resources claiming one (type, id) or
one (type, url, version) raise `ValueError` naming the file, so the server does not start on bad data. The
result is cached per set of files (path, size, mtime): each app of a test run does not parse them again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fhir_dmp import fhirjson
from fhir_dmp.errors import not_found
from fhir_dmp.terminology.codesystems import CodeSystemIndex, Lookup

TYPES = ("CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition", "OperationDefinition")
FOLDERS = (("terminologies", "fhir"), ("profiles",), ("capability", "operations"))
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conformance:
    """Shared by every request: read-only, so callers copy a resource before changing it."""

    by_id: Mapping[tuple[str, str], dict]  # (type, id) -> resource, in (type, id) order
    by_url: Mapping[tuple[str, str], tuple[dict, ...]]  # (type, url) -> its versions, newest first
    code_systems: Mapping[tuple[str, str | None], CodeSystemIndex]  # (url, version) and (url, None) = newest
    files: Mapping[tuple[str, str], str]  # (type, id) -> the file it was read from
    # what a write asks on every resource, answered once (the store never changes): the resources of a type, and
    # the implicit ValueSets (one object per url, so what is expanded from it is expanded once)
    _memo: dict[tuple[str, str], object] = field(default_factory=dict, compare=False, repr=False)

    def read(self, rtype: str, rid: str) -> dict | None:
        return self.by_id.get((rtype, rid))

    def all(self, rtype: str) -> list[dict]:
        held = self._memo.get(("all", rtype))
        if held is None:
            held = self._memo[("all", rtype)] = tuple(r for (t, _), r in self.by_id.items() if t == rtype)
        return list(held)  # type: ignore[arg-type]

    def resolve(self, rtype: str, canonical: str, version: str | None = None) -> dict | None:
        """A canonical reference (`url` or `url|version`) -> the resource; no version: the newest. A ValueSet
        url may also name all the codes of a shipped CodeSystem (`implicit_value_set`)."""
        url, _, pinned = canonical.partition("|")
        version = pinned or version
        versions = self.by_url.get((rtype, url), ())
        if not versions and rtype == "ValueSet":
            implicit = self.implicit_value_set(url)
            versions = (implicit,) if implicit is not None else ()
        if version is None:
            return versions[0] if versions else None
        return next((r for r in versions if r.get("version") == version), None)

    def implicit_value_set(self, url: str) -> dict | None:
        """`<code system url>?vs` (ANS's name for "every code of this TRE", used in its bindings) or the
        CodeSystem's own `valueSet`: a ValueSet of the whole shipped CodeSystem, made once per url (no id)."""
        key = ("implicit", url)
        if key not in self._memo:
            self._memo[key] = self._implicit(url)
        return self._memo[key]  # type: ignore[return-value]

    def _implicit(self, url: str) -> dict | None:
        for (rtype, cs_url), versions in self.by_url.items():
            cs = versions[0]
            if rtype == "CodeSystem" and url in (f"{cs_url}?vs", cs.get("valueSet")):
                return {"resourceType": "ValueSet", "url": url, "version": cs.get("version"),
                        "name": f"{cs.get('name') or cs['id']}_all", "status": cs.get("status", "unknown"),
                        "description": f"Every code of the CodeSystem {cs_url}",
                        "compose": {"include": [{"system": cs_url}]}}
        return None

    def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None:
        return self.code_systems.get((url, version or None))

    def versions_of(self, rtype: str, url: str) -> list[str]:
        return [str(r.get("version")) for r in self.by_url.get((rtype, url), ())]

    def lookup(self, system: str, code: str, version: str | None = None,
               properties: frozenset[str] | None = None) -> Lookup:
        """CodeSystem/$lookup: 404 for a code system not shipped (in that version) or a code it does not have."""
        cs = self.code_system(system, version)
        if cs is None:
            shipped = self.versions_of("CodeSystem", system)
            if shipped:
                raise not_found(f"CodeSystem {system} is shipped in version {', '.join(shipped)}, not {version}")
            raise not_found(f"CodeSystem {system} is not shipped by this server (GET CodeSystem lists those it "
                            "can look codes up in)")
        concept = cs.find(code)
        if concept is None:
            raise not_found(f"Unknown code '{code}' in the CodeSystem {system}|{cs.version}")
        return cs.lookup(concept, properties)


def load(home: Path) -> Conformance:
    files = sorted(p for parts in FOLDERS for p in home.joinpath(*parts).glob("*.json") if p.is_file())
    return _load(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=4)
def _load(signature: tuple[tuple[str, int, int], ...]) -> Conformance:
    by_id: dict[tuple[str, str], dict] = {}
    files: dict[tuple[str, str], str] = {}
    by_url: dict[tuple[str, str], list[dict]] = {}
    for name, _, _ in signature:
        resource = _read(Path(name))
        if resource is None:
            continue
        key = (resource["resourceType"], resource["id"])
        if key in by_id:
            raise ValueError(f"{name}: {key[0]}/{key[1]} is also in {files[key]}")
        by_id[key], files[key] = resource, name
        versions = by_url.setdefault((key[0], resource["url"]), [])
        if any(r.get("version") == resource.get("version") for r in versions):
            raise ValueError(f"{name}: {key[0]} {resource['url']}|{resource.get('version')} is defined twice")
        versions.append(resource)
    ordered = {k: by_id[k] for k in sorted(by_id)}
    newest = {k: tuple(sorted(v, key=_recency, reverse=True)) for k, v in by_url.items()}
    systems: dict[tuple[str, str | None], CodeSystemIndex] = {}
    for (rtype, url), versions in newest.items():
        if rtype != "CodeSystem":
            continue
        for i, resource in enumerate(versions):
            try:
                index = CodeSystemIndex.of(resource)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{files[('CodeSystem', resource['id'])]}: bad concept ({exc})") from exc
            systems[(url, resource.get("version"))] = index
            if i == 0:
                systems[(url, None)] = index
    return Conformance(ordered, newest, systems, files)


def _read(path: Path) -> dict | None:
    try:
        resource = fhirjson.loads(path.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if rtype not in TYPES:
        log.info("%s: a %s, not a conformance resource this server serves; skipped", path, rtype)
        return None
    assert isinstance(resource, dict)
    if not isinstance(resource.get("id"), str) or not _ID.match(resource["id"]):
        raise ValueError(f"{path}: the {rtype} has no valid id")
    if not isinstance(resource.get("url"), str) or not resource["url"]:
        raise ValueError(f"{path}: {rtype}/{resource['id']} has no url")
    return resource


def _recency(resource: dict) -> tuple[str, str]:
    return str(resource.get("date") or ""), str(resource.get("version") or "")
