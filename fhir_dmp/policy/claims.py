"""The shape of each bearer-token claim (dmp-reference.md 2), checked before anything else reads the token.

Why strict: every later rule compares claims as exact strings (the refused specialty SM25, the actor kinds,
the INS a patient acts for, the idNatPs a Consent names). A claim the server would trim, case-fold, take the
first item of, or read through a Unicode look-alike is a claim those rules never see: `" SM25"` or `["SM25"]`
used to get an occupational physician in. So a claim is exactly one well-formed value of its shape, or the
token is invalid (the caller answers 401); the rules then run on the one canonical `Caller` this returns.

Each shape is data (`SHAPES`, `SUB_SHAPES`): a JSON type, an ASCII-only pattern matched on the whole value (no
`\\d`, which also matches other scripts' digits; `fullmatch`, since `$` accepts a trailing newline), and for coded
claims the shipped code list it must belong to (terminologies/). Only an absent claim is "not given": JSON null,
"" or [] are values of another shape, refused like any other. Claims not in the table (iat, exp, iss, jti, an
OpenID Connect issuer's own claims...) are not read.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fhir_dmp.policy.caller import PURPOSES, Caller
from fhir_dmp.policy.habilitation import load_code_lists

# FINESS (9 characters; Corsican départements 2A/2B); idNatStruct: 1 + FINESS, 2 + SIREN, 3 + SIRET,
# 4 + the RPPS-based id of a cabinet (RPPS + rang).
_FINESS = r"(?:[0-9]{2}|2[AB])[0-9]{7}"
# INS (INS-NIR, INS-NIA, test and demo): the 13-character NIR/NIA, optionally followed by its 2-digit key;
# the département of a Corsican birth is written 2A/2B.
INS = r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{6}(?:[0-9]{2})?"
# idNatPs: 8 + RPPS (11 digits), 0 + ADELI (9 digits), or 3 + FINESS + '/' + the structure's own id of its staff.
IDNATPS = rf"8[0-9]{{11}}|0[0-9]{{9}}|3{_FINESS}/[0-9A-Za-z]{{1,20}}"
# A representative's own id, a system's name, a refused actor's id: printable ASCII, no space, no padding.
NAME = r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}"
ORGANIZATION = rf"{_FINESS}|1{_FINESS}|2[0-9]{{9}}|3[0-9]{{14}}|4[0-9]{{11,15}}"
FREE_TEXT_MAX = 1000


@dataclass(frozen=True)
class Shape:
    """One claim: its JSON type, the ASCII pattern of its whole value, the code list it must belong to
    (a name resolved by `ClaimShapes`), and what it means, for the 401's diagnostics."""

    kind: str  # "code" (a string), "text" (free text), "bool" (a JSON boolean)
    pattern: str = ""
    code_list: str = ""
    meaning: str = ""


SHAPES: Mapping[str, Shape] = {
    "actor": Shape("code", r"[a-z]+(?:-[a-z]+)*", "actors", "one of the actor kinds"),
    "profession": Shape("code", r"[0-9]{2}", "professions", "a TRE_G15 profession code (e.g. 10)"),
    "specialty": Shape("code", r"(?:SM|SCD|SI|SP)[0-9]{2}", "specialties", "a TRE_R38 specialty code (e.g. SM26)"),
    "organization": Shape("code", ORGANIZATION, "", "a FINESS or an idNatStruct"),
    "patient": Shape("code", INS, "", "an INS (13 digits, or 15 with its key)"),
    "purpose_of_use": Shape("code", "|".join(PURPOSES), "purposes", f"one of {', '.join(PURPOSES)}"),
    "access_reason": Shape("text", meaning="free text without control or invisible characters"),
    "secret": Shape("bool", meaning="a JSON boolean"),
}

# `sub` depends on the actor (dmp-reference.md 2): a professional's idNatPs, a patient's INS, a name otherwise.
SUB_SHAPES: Mapping[str, Shape] = {
    "professional": Shape("code", IDNATPS, "", "an idNatPs (e.g. 810001234567)"),
    "patient": Shape("code", INS, "", "the patient's INS"),
}
SUB_DEFAULT = Shape("code", NAME, "", "an identifier of ASCII letters, digits and . _ : @ / -")


class InvalidClaim(ValueError):
    """A claim that is not exactly one value of its shape: the token is invalid."""


@dataclass(frozen=True)
class ClaimShapes:
    """The code lists the coded claims are checked against (loaded from terminologies/)."""

    lists: Mapping[str, frozenset[str]]

    def read(self, claims: Mapping[str, Any]) -> Caller:
        """The canonical `Caller` of verified `claims`, or `InvalidClaim` naming the first malformed one."""
        actor = self._value(claims, "actor", SHAPES["actor"], required=True)
        sub = self._value(claims, "sub", SUB_SHAPES.get(actor, SUB_DEFAULT), required=True)
        values = {name: self._value(claims, name, shape) for name, shape in SHAPES.items() if name != "actor"}
        return Caller(
            actor=actor, sub=sub, profession=values["profession"], specialty=values["specialty"],
            organization=values["organization"], patient=values["patient"],
            purpose_of_use=values["purpose_of_use"] or "TREAT", access_reason=values["access_reason"],
            secret=values["secret"] is True,
        )

    def _value(self, claims: Mapping[str, Any], name: str, shape: Shape, required: bool = False) -> Any:
        if name not in claims:
            if required:
                raise InvalidClaim(f"The bearer token has no '{name}' claim ({shape.meaning})")
            return None
        value = claims[name]
        if shape.kind == "bool":
            if type(value) is not bool:
                raise InvalidClaim(f"The '{name}' claim must be {shape.meaning}, not {_show(value)}")
            return value
        if not isinstance(value, str):
            raise InvalidClaim(f"The '{name}' claim must be one string, {shape.meaning}, not {_show(value)}")
        if shape.kind == "text":
            if not 0 < len(value) <= FREE_TEXT_MAX or any(_invisible(ch) for ch in value):
                raise InvalidClaim(f"The '{name}' claim must be {shape.meaning}, of 1 to {FREE_TEXT_MAX} "
                                   "characters")
            return value
        known = self.lists.get(shape.code_list) if shape.code_list else None
        if not re.fullmatch(shape.pattern, value, re.ASCII) or (known is not None and value not in known):
            raise InvalidClaim(f"The '{name}' claim must be exactly {shape.meaning}: {_show(value)} is not "
                               "(no spaces around it, no other case, no list)")
        return value


def _invisible(ch: str) -> bool:
    """Control, format (zero-width, bidi overrides), surrogate, private-use, unassigned or line/paragraph
    separator characters: they would hide or rewrite what the patient is shown as the reason."""
    category = unicodedata.category(ch)
    return category[0] == "C" or category in ("Zl", "Zp")


def _show(value: Any) -> str:
    """The rejected value, escaped (ASCII), short: it is echoed in an OperationOutcome."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@cache
def load_claim_shapes(terminologies: Path) -> ClaimShapes:
    """The shapes with their code lists: actor kinds (allowed and refused, refused-actors.json), TRE_G15 and
    TRE_R38 (professions.csv, specialties.csv). A refused actor or specialty is a well-formed claim: it is
    turned away by `actors.refusal` (403), not as a malformed token."""
    codes = load_code_lists(terminologies)
    rules = json.loads((terminologies / "refused-actors.json").read_text(encoding="utf-8"))
    actors = frozenset(rules["allowed_actors"]) | frozenset(rules.get("refused_actors", ()))
    lists = {"actors": actors, "professions": codes.professions, "specialties": frozenset(codes.specialties),
             "purposes": frozenset(PURPOSES)}
    for name, known in lists.items():
        shape = next(s for s in SHAPES.values() if s.code_list == name)
        odd = sorted(code for code in known if not re.fullmatch(shape.pattern, code, re.ASCII))
        if not known or odd:
            raise ValueError(f"{terminologies}: the {name} code list is empty or has codes of another shape: {odd}")
    return ClaimShapes(lists)
