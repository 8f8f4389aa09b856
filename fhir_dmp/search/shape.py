"""`_summary` and `_elements`: the top-level subset of a resource a client asked for (pure, no IO per call).

What each mode keeps comes from the R4 StructureDefinitions (data/r4-summary.json, built by
tools/build_r4_summary.py): `true` keeps the elements marked isSummary, `text` keeps id, meta and text,
`data` drops text, `_elements` keeps the listed elements; all keep resourceType and the mandatory
(min >= 1) elements, so a subset is still a valid resource. A subset is tagged SUBSETTED (R4 search.html
3.1.1.5.8) so that nobody mistakes it for the whole resource and writes it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from fhir_dmp.errors import bad_request

DATA = Path(__file__).resolve().parent.parent / "data" / "r4-summary.json"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
SUMMARY_MODES = ("true", "text", "data", "count", "false")
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@cache
def _types() -> dict[str, dict]:
    return json.loads(DATA.read_text(encoding="utf-8"))["types"]


def _table(resource_type: str) -> dict:
    return _types().get(resource_type, {"summary": ["id", "meta", "implicitRules"], "mandatory": [], "choices": {}})


def requested(pairs: Iterable[tuple[str, str]]) -> tuple[str | None, tuple[str, ...]]:
    """`_summary` and `_elements` of a read (a search has them from `parse_query`); a bad value is a 400."""
    summary, elements = None, ()
    for name, value in pairs:
        if name == "_summary":
            if value not in SUMMARY_MODES or value == "count":
                raise bad_request("_summary on a read must be true, text, data or false", "_summary")
            summary = value
        elif name == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
    return summary, elements


def subsets(summary: str | None, elements: Sequence[str]) -> bool:
    return summary in ("true", "text", "data") or bool(elements)


def subset(resource: dict, summary: str | None, elements: Sequence[str] = ()) -> dict:
    """The resource cut to what `summary` and `elements` keep (both: what both keep), tagged SUBSETTED.

    The input is not changed; without a subsetting mode it is returned as is.
    """
    if not subsets(summary, elements):
        return resource
    rtype = str(resource.get("resourceType", ""))
    table = _table(rtype)
    mandatory = set(table["mandatory"])
    names = set(resource) - {k for k in resource if k.startswith("_")}
    if summary == "true":
        names &= _ALWAYS | mandatory | set(table["summary"])
    elif summary == "text":
        names &= _ALWAYS | mandatory | {"text"}
    elif summary == "data":
        names -= {"text"}
    if elements:
        names &= _ALWAYS | mandatory | _element_names(rtype, elements, table["choices"])
    out = {k: v for k, v in resource.items() if k in names or (k.startswith("_") and k[1:] in names)}
    return _tagged(out)


def _element_names(resource_type: str, elements: Sequence[str], choices: dict[str, list[str]]) -> set[str]:
    """`name`, `Patient.name`, `deceased` / `deceased[x]` (every JSON name of the choice)."""
    out: set[str] = set()
    for element in elements:
        name = element.removeprefix(resource_type + ".").removesuffix("[x]")
        out.update(choices.get(name, [name]))
    return out


def _tagged(resource: dict) -> dict:
    meta = dict(resource.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("system") == SUBSETTED["system"] and t.get("code") == SUBSETTED["code"] for t in tags):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    return {**resource, "meta": meta} if "meta" in resource else {**_head(resource), "meta": meta, **resource}


def _head(resource: dict) -> dict:
    return {k: resource[k] for k in ("resourceType", "id") if k in resource}
