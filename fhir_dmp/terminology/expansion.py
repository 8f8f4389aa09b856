"""ValueSet semantics over the shipped CodeSystems: the codes of a compose, `$expand` and `$validate-code`.

What a compose may say and what this server does with it (R4 valueset.html#compose):
- `include.concept` lists: taken as written; displays from the list, else from the CodeSystem when shipped.
  This is how JDV_J57, J58 and J66 name their codes, LOINC and TRE_A10/A12 included: no LOINC needed.
- a whole `system`: every concept of that CodeSystem, when it is shipped and `content` is complete.
- `filter`: on the shipped CodeSystem, `concept` (or `code`) with `is-a`, `descendent-of`, `is-not-a`, `=`,
  `in`; any other property with `=`, `in`, `exists`.
- `include.valueSet`: the codes of the named shipped ValueSets (intersected, as R4 says), `exclude` likewise.
Anything else, above all a system this server does not ship (all of LOINC, SNOMED CT), is a 400
`not-supported` that says so: an expansion is never silently partial.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_dmp.errors import FhirError
from fhir_dmp.terminology.codesystems import CodeSystemIndex, Concept
from fhir_dmp.terminology.store import Conformance

_CONCEPT_OPS = ("is-a", "descendent-of", "is-not-a", "=", "in")
_PROPERTY_OPS = ("=", "in", "exists")
_VALUE_KEYS = ("valueCode", "valueString", "valueBoolean", "valueInteger", "valueDateTime", "valueDecimal")


@dataclass(frozen=True)
class Code:
    """One code of a value set, as its expansion shows it."""

    system: str
    code: str
    display: str | None
    version: str | None = None
    abstract: bool = False
    inactive: bool = False
    designations: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Validation:
    result: bool
    message: str | None
    display: str | None


def not_supported(diagnostics: str) -> FhirError:
    return FhirError.of(400, "not-supported", diagnostics)


def label(valueset: dict) -> str:
    url = valueset.get("url") or f"ValueSet/{valueset.get('id', '(inline)')}"
    return f"{url}|{valueset['version']}" if valueset.get("version") else url


def codes_of(conf: Conformance, valueset: dict, seen: frozenset[str] = frozenset()) -> list[Code]:
    """Every code of the value set, in compose order, each (system, code) once, excluded ones left out."""
    name = label(valueset)
    if name in seen:
        raise not_supported(f"ValueSet {name} includes itself")
    compose = valueset.get("compose")
    if not isinstance(compose, dict):
        raise not_supported(f"ValueSet {name} has no compose: this server only expands what a compose defines")
    seen = seen | {name}
    out: dict[tuple[str, str], Code] = {}
    for part in compose.get("include") or []:
        for code in _part(conf, name, part, seen):
            out.setdefault((code.system, code.code), code)
    for part in compose.get("exclude") or []:
        for code in _part(conf, name, part, seen):
            out.pop((code.system, code.code), None)
    return list(out.values())


def _part(conf: Conformance, name: str, part: dict, seen: frozenset[str]) -> list[Code]:
    system, version = part.get("system"), part.get("version")
    sets: list[list[Code]] = []
    for canonical in part.get("valueSet") or []:
        included = conf.resolve("ValueSet", canonical)
        if included is None:
            raise not_supported(f"ValueSet {name} includes ValueSet {canonical}, which this server does not ship")
        sets.append(codes_of(conf, included, seen))
    in_sets = set.intersection(*({(c.system, c.code) for c in codes} for codes in sets)) if sets else None
    if not system:
        if not sets:
            raise not_supported(f"ValueSet {name}: an include names neither a system nor a valueSet")
        return [c for c in sets[0] if (c.system, c.code) in in_sets]  # type: ignore[operator]
    cs = conf.code_system(system, version)
    if part.get("concept"):
        codes = [_listed(system, version, cs, c) for c in part["concept"]]
        if part.get("filter"):
            kept = {c.code for c in _filtered(_shipped(cs, name, system, version, "filter"), part["filter"], name)}
            codes = [c for c in codes if c.code in kept]
    else:
        cs = _shipped(cs, name, system, version, "filter" if part.get("filter") else "whole")
        concepts = _filtered(cs, part["filter"], name) if part.get("filter") else list(cs.concepts.values())
        codes = [_of(cs, c) for c in concepts]
    return codes if in_sets is None else [c for c in codes if (c.system, c.code) in in_sets]


def _shipped(cs: CodeSystemIndex | None, name: str, system: str, version: str | None, need: str) -> CodeSystemIndex:
    what = "a filter on" if need == "filter" else "the whole of"
    pinned = f"|{version}" if version else ""
    if cs is None:
        raise not_supported(f"ValueSet {name} includes {what} {system}{pinned}, a code system this server does not "
                            "ship: it cannot list its codes (it only knows the codes ValueSets enumerate)")
    if cs.content != "complete":
        raise not_supported(f"ValueSet {name} includes {what} {system}, whose shipped CodeSystem is only a "
                            f"{cs.content}: it cannot list all its codes")
    return cs


def _listed(system: str, version: str | None, cs: CodeSystemIndex | None, listed: dict) -> Code:
    concept = cs.find(listed["code"]) if cs is not None else None
    designations = tuple(listed.get("designation") or ()) + (concept.designations if concept else ())
    return Code(system, listed["code"], listed.get("display") or (concept.display if concept else None),
                cs.version if cs is not None else version, concept.abstract if concept else False,
                concept.inactive if concept else False, designations)


def _of(cs: CodeSystemIndex, concept: Concept) -> Code:
    return Code(cs.url, concept.code, concept.display, cs.version, concept.abstract, concept.inactive,
                concept.designations)


def _filtered(cs: CodeSystemIndex, filters: list[dict], name: str) -> list[Concept]:
    concepts = list(cs.concepts.values())
    for f in filters:
        prop, op, value = f.get("property"), f.get("op"), str(f.get("value", ""))
        if prop in ("concept", "code") and op in _CONCEPT_OPS:
            keep = _concept_filter(cs, op, value)
            concepts = [c for c in concepts if c.code in keep]
        elif prop and op in _PROPERTY_OPS:
            concepts = [c for c in concepts if _property_matches(c, prop, op, value)]
        else:
            raise not_supported(f"ValueSet {name}: filter '{prop} {op} {value}' is not supported (supported: concept "
                                f"{', '.join(_CONCEPT_OPS)}; any property {', '.join(_PROPERTY_OPS)})")
    return concepts


def _concept_filter(cs: CodeSystemIndex, op: str, value: str) -> set[str]:
    if op == "in":
        return {c for v in value.split(",") if (c := _code(cs, v.strip()))}
    root = _code(cs, value)
    if root is None:
        return set(cs.concepts) if op == "is-not-a" else set()
    below = set(cs.descendants(root))
    if op == "is-a":
        return below | {root}
    if op == "descendent-of":
        return below
    if op == "is-not-a":
        return set(cs.concepts) - below - {root}
    return {root}  # "="


def _code(cs: CodeSystemIndex, code: str) -> str | None:
    concept = cs.find(code)
    return concept.code if concept else None


def _property_matches(concept: Concept, prop: str, op: str, value: str) -> bool:
    values = [_text(p) for p in concept.properties if p.get("code") == prop]
    if op == "exists":
        return bool(values) == (value == "true")
    wanted = {v.strip() for v in value.split(",")} if op == "in" else {value}
    return any(v in wanted for v in values)


def _text(prop: dict) -> str:
    for key in _VALUE_KEYS:
        if key in prop:
            value = prop[key]
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
    return ""


def expand(conf: Conformance, valueset: dict, *, text: str | None = None, offset: int = 0, count: int | None = None,
           active_only: bool = False, designations: bool = False, selectable_only: bool = False) -> dict:
    """The ValueSet with its `expansion` (R4 valueset-operation-expand): `text` keeps the codes each word of which
    starts the code or is in the display (case and accents ignored); `offset`/`count` page what is left;
    `active_only` drops inactive codes, `selectable_only` (excludeNotForUI) abstract ones."""
    every = codes_of(conf, valueset)
    codes = [c for c in every if not (active_only and c.inactive) and not (selectable_only and c.abstract)]
    if text and text.strip():
        words = fold(text).split()
        codes = [c for c in codes if all(fold(c.code).startswith(w) or w in fold(c.display or "") for w in words)]
    page = codes[offset:] if count is None else codes[offset:offset + count]
    parameters: list[dict] = []
    if text:
        parameters.append({"name": "filter", "valueString": text})
    if active_only:
        parameters.append({"name": "activeOnly", "valueBoolean": True})
    if selectable_only:
        parameters.append({"name": "excludeNotForUI", "valueBoolean": True})
    parameters.append({"name": "offset", "valueInteger": offset})
    if count is not None:
        parameters.append({"name": "count", "valueInteger": count})
    for system, version in dict.fromkeys((c.system, c.version) for c in every):
        if conf.code_system(system, version) is not None:
            parameters.append({"name": "used-codesystem", "valueUri": f"{system}|{version}" if version else system})
    out = {k: v for k, v in valueset.items() if k not in ("compose", "expansion", "text")}
    out["expansion"] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "total": len(codes),
        "offset": offset,
        "parameter": parameters,
        **({"contains": [_contains(c, designations) for c in page]} if page else {}),
    }
    return out


def _contains(code: Code, designations: bool) -> dict:
    out: dict = {"system": code.system}
    if code.abstract:
        out["abstract"] = True
    if code.inactive:
        out["inactive"] = True
    if code.version:
        out["version"] = code.version
    out["code"] = code.code
    if code.display:
        out["display"] = code.display
    if designations and code.designations:
        out["designation"] = list(code.designations)
    return out


def validate_code(conf: Conformance, valueset: dict, system: str, code: str, display: str | None = None,
                  system_version: str | None = None, abstract_ok: bool = False) -> Validation:
    """Is `system#code` in the value set, and is `display` one of its names (display or a designation, case
    and spacing ignored)? A wrong display is a `false` result whose message gives the right one; an abstract
    code is valid only when `abstract_ok`."""
    name = label(valueset)
    codes = codes_of(conf, valueset)
    cs = conf.code_system(system)
    folded = cs is not None and not cs.case_sensitive
    match = next((c for c in codes if c.system == system
                  and (c.code == code or (folded and c.code.casefold() == code.casefold()))), None)
    if match is None:
        known = cs.find(code) if cs is not None else None
        if cs is not None and known is None:
            return Validation(False, f"Unknown code '{code}' in the CodeSystem {system}|{cs.version}; it is not "
                                     f"in the value set {name}", None)
        return Validation(False, f"The code '{system}#{code}' is not in the value set {name}",
                          known.display if known else None)
    if system_version and match.version and system_version != match.version:
        return Validation(False, f"The value set {name} has {system}#{match.code} in version {match.version}, "
                                 f"not {system_version}", match.display)
    if match.abstract and not abstract_ok:
        return Validation(False, f"{system}#{match.code} is abstract (notSelectable): not valid here unless "
                                 "abstract=true", match.display)
    if display is not None:
        names = [match.display or ""] + [str(d.get("value", "")) for d in match.designations]
        if _same(display) not in {_same(n) for n in names if n}:
            return Validation(False, f"Wrong display '{display}' for {system}#{match.code}: it should be "
                                     f"'{match.display}'", match.display)
    message = f"{system}#{match.code} is inactive" if match.inactive else None
    return Validation(True, message, match.display)


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a text filter ("medecin" finds "Médecin")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _same(text: str) -> str:
    return " ".join(text.split()).casefold()
