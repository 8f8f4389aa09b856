"""One CodeSystem as an index of its concepts: find a code (case-insensitively when the system says codes
are), walk its hierarchy, and answer `$lookup`.

Concept status follows the CodeSystem's own properties: `notSelectable` makes a concept abstract; the
FHIR `status` property (retired, inactive), an `inactive` property, or the ANS end-of-use date (`dateFin`,
also `retirementDate`) in the past make it inactive. ANS `deprecated` codes carry a `dateFin`, so they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

_END_DATES = ("dateFin", "retirementDate")
_VALUE_KEYS = ("valueCode", "valueCoding", "valueString", "valueInteger", "valueBoolean", "valueDateTime",
               "valueDecimal")


@dataclass(frozen=True)
class Concept:
    code: str
    display: str | None
    definition: str | None
    designations: tuple[dict, ...]
    properties: tuple[dict, ...]
    parents: tuple[str, ...]
    abstract: bool
    inactive: bool


@dataclass(frozen=True)
class Lookup:
    """The answer of CodeSystem/$lookup (R4 codesystem-operation-lookup), without its wire format."""

    name: str
    version: str | None
    display: str
    designations: tuple[dict, ...]
    properties: tuple[tuple[str, str, object], ...]  # (code, value[x] key, value)


@dataclass(frozen=True)
class CodeSystemIndex:
    url: str
    version: str | None
    name: str
    case_sensitive: bool
    content: str
    resource_id: str
    concepts: Mapping[str, Concept]
    children: Mapping[str, tuple[str, ...]]
    _folded: Mapping[str, str] = field(repr=False)

    @classmethod
    def of(cls, resource: dict) -> CodeSystemIndex:
        flat: dict[str, Concept] = {}
        children: dict[str, list[str]] = {}
        today = datetime.now(UTC).date().isoformat()
        for raw, parent in _walk(resource.get("concept") or [], None):
            parents = ([parent] if parent else []) + [p["valueCode"] for p in raw.get("property", [])
                                                      if p.get("code") in ("parent", "subsumedBy") and "valueCode" in p]
            concept = Concept(raw["code"], raw.get("display"), raw.get("definition"),
                              tuple(raw.get("designation", [])), tuple(raw.get("property", [])), tuple(parents),
                              _flag(raw, "notSelectable"), _inactive(raw, today))
            if concept.code in flat:
                raise ValueError(f"CodeSystem {resource.get('url')}: code {concept.code!r} is defined twice")
            flat[concept.code] = concept
            for p in parents:
                children.setdefault(p, []).append(concept.code)
        case_sensitive = resource.get("caseSensitive") is not False
        folded = {} if case_sensitive else {code.casefold(): code for code in flat}
        return cls(resource["url"], resource.get("version"), resource.get("name") or resource["id"], case_sensitive,
                   resource.get("content", "complete"), resource["id"], flat,
                   {k: tuple(v) for k, v in children.items()}, folded)

    def find(self, code: str) -> Concept | None:
        if code in self.concepts:
            return self.concepts[code]
        real = self._folded.get(code.casefold())
        return self.concepts[real] if real is not None else None

    def descendants(self, code: str) -> list[str]:
        """Every concept below `code` (is-a), nearest first, each once."""
        out: list[str] = []
        queue = list(self.children.get(code, ()))
        while queue:
            child = queue.pop(0)
            if child not in out:
                out.append(child)
                queue.extend(self.children.get(child, ()))
        return out

    def lookup(self, concept: Concept, wanted: frozenset[str] | None = None) -> Lookup:
        """`wanted`: the property codes asked for (None: all the concept has, plus parent/child/definition)."""
        props: list[tuple[str, str, object]] = []
        for p in concept.properties:
            key = next((k for k in _VALUE_KEYS if k in p), None)
            if key is not None:
                props.append((p["code"], key, p[key]))
        props += [("parent", "valueCode", c) for c in concept.parents if not _has(concept.properties, "parent", c)]
        props += [("child", "valueCode", c) for c in self.children.get(concept.code, ())]
        if concept.definition:
            props.append(("definition", "valueString", concept.definition))
        if concept.inactive:
            props.append(("inactive", "valueBoolean", True))
        if wanted is not None:
            props = [p for p in props if p[0] in wanted]
        return Lookup(self.name, self.version, concept.display or concept.code,
                      concept.designations if wanted is None or "designation" in wanted else (), tuple(props))


def _walk(concepts: list[dict], parent: str | None) -> Iterator[tuple[dict, str | None]]:
    for raw in concepts:
        yield raw, parent
        yield from _walk(raw.get("concept") or [], raw["code"])


def _flag(raw: dict, code: str) -> bool:
    return any(p.get("code") == code and p.get("valueBoolean") is True for p in raw.get("property", []))


def _has(properties: tuple[dict, ...], code: str, value: str) -> bool:
    return any(p.get("code") == code and p.get("valueCode") == value for p in properties)


def _inactive(raw: dict, today: str) -> bool:
    for p in raw.get("property", []):
        if p.get("code") == "status" and p.get("valueCode") in ("retired", "inactive"):
            return True
        if p.get("code") == "inactive" and p.get("valueBoolean") is True:
            return True
        if p.get("code") in _END_DATES and str(p.get("valueDateTime", "9999"))[:10] <= today:
            return True
    return False
