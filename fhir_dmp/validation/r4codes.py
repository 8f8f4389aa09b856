"""The code rules of `r4rules.py`: a Coding against the code system the server ships (the code exists, the display
is its), the syntax of SNOMED CT and LOINC codes without those code systems (`data/code-syntax.json`), and the
vital signs profiles R4 requires of an Observation of a vital sign (`data/vital-signs.json`: the magic LOINC code,
the vital-signs category, the UCUM units)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from fhir_dmp.errors import Issue
from fhir_dmp.terminology.store import Conformance

_DATA = Path(__file__).resolve().parent.parent / "data"
_UCUM = "http://unitsofmeasure.org"
# Verhoeff's dihedral group D5 and its position permutation (SNOMED CT Technical Implementation Guide 6.5)
_D = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
      (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
      (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
      (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
_P = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
      (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
      (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8))


@cache
def _data(name: str) -> dict:
    return json.loads((_DATA / name).read_text(encoding="utf-8"))


def coding_issues(conf: Conformance, coding: dict, where: str) -> list[Issue]:
    """A Coding of a shipped code system: its code exists and its display is the code system's (or one of its
    designations; case and spacing aside). Of SNOMED CT or LOINC, which are not shipped: its code is well-formed."""
    system, code = coding.get("system"), coding.get("code")
    if not isinstance(system, str) or not isinstance(code, str):
        return []
    version = coding.get("version")
    cs = conf.code_system(system, version if isinstance(version, str) else None)
    if cs is None:
        syntax = _data("code-syntax.json")["systems"].get(system)
        if syntax is not None and not well_formed(code, syntax):
            return [Issue("code-invalid", f"Unknown code '{code}' in the CodeSystem '{system}': not a well-formed "
                          "code of that system", (f"{where}.code",))]
        return []
    if cs.content != "complete":
        return []
    concept = cs.find(code)
    if concept is None:
        return [Issue("code-invalid", f"Unknown code '{code}' in the CodeSystem '{system}'", (f"{where}.code",))]
    display = coding.get("display")
    if isinstance(display, str) and concept.display is not None:
        allowed = {_fold(concept.display)} | {_fold(d.get("value", "")) if isinstance(d, dict) else _fold(
            str(getattr(d, "value", d))) for d in concept.designations}
        if _fold(display) not in allowed:
            return [Issue("invalid", f"Wrong Display Name '{display}' for {system}#{code}: should be "
                          f"'{concept.display}'", (f"{where}.display",))]
    return []


def well_formed(code: str, syntax: dict) -> bool:
    """Whether a code has the syntax of its code system (`data/code-syntax.json`)."""
    if any(c in code for c in syntax["skip_if_any"]):
        return True
    if not re.fullmatch(syntax["pattern"], code):
        return False
    if syntax["check"] == "verhoeff":  # the last digit makes the Verhoeff checksum of the whole id 0
        check = 0
        for i, digit in enumerate(reversed(code)):
            check = _D[check][_P[i % 8][int(digit)]]
        return check == 0
    if syntax["check"] == "loinc" and code[:1].isdigit():  # mod 10 of the digits before the dash (not LA, LP...)
        body, _, digit = code.rpartition("-")
        total = 0
        for i, d in enumerate(reversed([int(c) for c in body if c.isdigit()])):
            total += sum(divmod(d * 2, 10)) if i % 2 == 0 else d
        return (10 - total % 10) % 10 == int(digit)
    return True


def vital_sign_issues(obs: dict, where: str) -> list[Issue]:
    """R4 requires an Observation of a vital sign to follow its vital signs profile: recognised by the magic
    code, or by the vital-signs category with another code of the sign (or the blood pressure components)."""
    table = _data("vital-signs.json")
    category = any(c.get("code") == "vital-signs" and c.get("system") == table["category"]
                   for c in codings_of(obs.get("category")))
    codes = {(c.get("system"), c.get("code")) for c in codings_of(obs.get("code"))}
    parts = [comp for comp in obs.get("component") or () if isinstance(comp, dict)]
    components = {(c.get("system"), c.get("code")) for comp in parts for c in codings_of(comp.get("code"))}
    for sign in table["signs"]:
        magic = ("http://loinc.org", sign["code"]) in codes
        by_components = sign.get("components") and {tuple(s) for s in sign["components"]} <= components
        if not (magic or (category and (codes & {tuple(s) for s in sign["signals"]} or by_components))):
            continue
        source = f"(from {sign['profile']}|4.0.1)"
        out = []
        if not magic:
            out.append(Issue("structure", f"{sign['slice']}: magic LOINC code {sign['code']} required, but not "
                             f"found {source}. Note that other Observation codes are allowed in addition to this "
                             "required magic code", (f"{where}.code",)))
        if not category:
            out.append(Issue("structure", "Slice 'Observation.category:VSCat': a matching slice is required, but "
                             f"not found {source}", (f"{where}.category",)))
        out += _units(obs.get("valueQuantity"), sign.get("units"), f"{where}.valueQuantity", source)
        for i, comp in enumerate(parts):
            for system, code in {(c.get("system"), c.get("code")) for c in codings_of(comp.get("code"))}:
                allowed = sign.get("component_units", {}).get(code) if system == "http://loinc.org" else None
                out += _units(comp.get("valueQuantity"), allowed, f"{where}.component[{i}].valueQuantity", source)
        return out
    return []


def _units(quantity: Any, allowed: list[str] | None, where: str, source: str) -> list[Issue]:
    if not allowed or not isinstance(quantity, dict) or ("code" not in quantity and "value" not in quantity):
        return []
    if quantity.get("system") != _UCUM or quantity.get("code") not in allowed:
        return [Issue("value", f"The unit is {quantity.get('system')}|{quantity.get('code')}, not UCUM "
                      f"{' or '.join(allowed)} {source}", (f"{where}.code",))]
    return []


def codings_of(value: Any) -> list[dict]:
    """The Codings of a CodeableConcept or of a list of them."""
    concepts = value if isinstance(value, list) else [value]
    return [c for cc in concepts if isinstance(cc, dict) for c in cc.get("coding") or () if isinstance(c, dict)]


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()
