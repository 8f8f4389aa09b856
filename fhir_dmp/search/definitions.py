"""The official SearchParameter definitions (data/search-parameters.json), loaded once."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "search-parameters.json"


@cache
def definitions() -> dict[tuple[str, str], dict]:
    """(resource type, code) -> SearchParameter; `Resource` parameters are listed under every type."""
    out: dict[tuple[str, str], dict] = {}
    for sp in json.loads(DATA.read_text(encoding="utf-8"))["searchParameters"]:
        for base in sp["base"]:
            out[(base, sp["code"])] = sp
    return out


def definition(resource_type: str, code: str) -> dict:
    table = definitions()
    found = table.get((resource_type, code)) or table.get(("Resource", code))
    if found is None:
        raise KeyError(f"no SearchParameter {code!r} for {resource_type}")
    return found
