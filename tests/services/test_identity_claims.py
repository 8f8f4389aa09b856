"""Claims are read strictly (dmp-reference.md 2): a claim is exactly one value of its shape, or the token is 401.

The attack: a token whose claim is "almost" a code (" SM25", ["SM25"], "sm25", a Cyrillic С, fullwidth digits, a
zero-width space...) must never get a wider access than the plain code. Every such token is either refused with a
401 (OperationOutcome + WWW-Authenticate) or read as exactly the Caller the plain value gives; a refused actor's
look-alike is never admitted.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fhir_dmp.config import project_dir
from fhir_dmp.errors import FhirError
from fhir_dmp.policy import actors
from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.claims import SHAPES, load_claim_shapes
from fhir_dmp.services.identity import caller_from_claims
from tests.fhirclient import DOCTOR, json_of, patient, written

RULES = actors.load_actor_rules(project_dir() / "terminologies" / "refused-actors.json")
SHAPES_LOADED = load_claim_shapes(Path(project_dir() / "terminologies"))
INS = "1800175123456"

# Canonical identities, each claim in its plain form; some of them are refused actors (403).
BASES: dict[str, dict[str, Any]] = {
    "medecin": {**DOCTOR, "organization": "1750000042", "purpose_of_use": "BTG", "access_reason": "coma",
                "secret": True},
    "regulation": {"actor": "professional", "sub": "810000000010", "profession": "10", "purpose_of_use": "ETREAT"},
    "occupational": {"actor": "professional", "sub": "810009999999", "profession": "10", "specialty": "SM25"},
    "nurse": {"actor": "professional", "sub": "0751234567", "profession": "60", "specialty": "SI01"},
    "patient": {"actor": "patient", "sub": INS, "patient": INS, "secret": False},
    "representative": {"actor": "representative", "sub": "rep-1", "patient": "2990175123456"},
    "system": {"actor": "system", "sub": "test-suite"},
    "insurer": {"actor": "insurer", "sub": "CPAM-75"},
    "employer": {"actor": "employer", "sub": "ACME"},
    "occupational-physician": {"actor": "occupational-physician", "sub": "810009999998"},
}

# Characters that look like ASCII ones (Cyrillic, Greek, Latin small capitals, Cherokee, ...).
LOOK_ALIKES = {
    "S": "ЅՏ\uff33", "M": "МΜϺ\uff2d", "C": "СϹ", "A": "АΑ", "B": "ВΒ", "E": "ЕΕ", "T": "ТΤ", "P": "РΡ",
    "O": "ОΟ", "I": "ІΙ", "K": "КΚ", "H": "НΗ", "X": "ХΧ", "N": "Ν",
    "a": "а", "c": "сϲ", "e": "е", "o": "оο", "p": "р", "s": "ѕ", "i": "і", "x": "х", "y": "у", "r": "г",
    "l": "ӏ1", "t": "τ", "n": "п", "m": "ｍ", "-": "\u2010\u2011\u2212\u2013",
}
for digit in "0123456789":
    LOOK_ALIKES[digit] = chr(0xFF10 + int(digit)) + chr(0x0660 + int(digit)) + chr(0x1D7CE + int(digit))
LOOK_ALIKES["2"] += "²"
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u0000"]
SPACES = [" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\u0085", "\u000b"]


def read(claims: dict) -> Caller | FhirError:
    try:
        return caller_from_claims(claims, SHAPES_LOADED)
    except FhirError as error:
        return error


def is_401(result: Caller | FhirError) -> bool:
    if not isinstance(result, FhirError):
        return False
    assert result.status == 401 and result.issues[0].code == "login", result
    assert result.headers["WWW-Authenticate"].startswith('Bearer realm="fhir-dmp", error="invalid_token"')
    return True


def refused(caller: Caller) -> bool:
    return actors.refusal(caller, RULES) is not None


@st.composite
def variant(draw: st.DrawFn, value: Any) -> Any:
    """Another spelling of `value`: padded, in a list, another case, a look-alike, an invisible character,
    another JSON type."""
    if isinstance(value, bool):
        return draw(st.sampled_from([int(value), str(value).lower(), str(value), [value], None, {"value": value},
                                     float(value), "yes" if value else "no"]))
    text = str(value)
    kind = draw(st.sampled_from(["pad", "list", "case", "look", "invisible", "type", "mix"]))
    if kind == "pad":
        left, right = draw(st.lists(st.sampled_from(SPACES), max_size=2)), draw(st.lists(st.sampled_from(SPACES),
                                                                                       max_size=2))
        return "".join(left) + text + "".join(right)
    if kind == "list":
        other = draw(st.sampled_from(["SM26", "10", "TREAT", "professional", text, "", text.lower()]))
        return draw(st.sampled_from([[text], [other, text], [text, other], [[text]], [[[text]]], [], {"0": text}]))
    if kind == "case":
        return draw(st.sampled_from([text.upper(), text.lower(), text.swapcase(), text.title(), text.casefold()]))
    if kind == "look":
        positions = [i for i, ch in enumerate(text) if ch in LOOK_ALIKES]
        if not positions:
            return text + "\u200b"
        chosen = draw(st.lists(st.sampled_from(positions), min_size=1, unique=True))
        chars = list(text)
        for i in chosen:
            chars[i] = draw(st.sampled_from(LOOK_ALIKES[text[i]]))
        return "".join(chars)
    if kind == "invisible":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
    if kind == "type":
        options: list[Any] = [None, "", True, False, 0, {"code": text}, text.encode().decode("latin-1")]
        if text.isdigit():
            options += [int(text), float(text), int(text) + 0.0]
        return draw(st.sampled_from(options))
    return unicodedata.normalize(draw(st.sampled_from(["NFD", "NFKD"])), text) + draw(st.sampled_from(["", "\u0301"]))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, dict, dict]:
    """(base name, its canonical claims, the same claims with one to three of them spelled otherwise)."""
    name = draw(st.sampled_from(sorted(BASES)))
    canonical = BASES[name]
    names = draw(st.lists(st.sampled_from(sorted(canonical)), min_size=1, max_size=3, unique=True))
    claims = dict(canonical)
    for claim in names:
        claims[claim] = draw(variant(canonical[claim]))
    return name, canonical, claims


def test_the_canonical_identities_are_read_as_written():
    for name, claims in BASES.items():
        caller = read(claims)
        assert isinstance(caller, Caller), (name, caller)
        for claim, value in claims.items():
            assert getattr(caller, claim) == value, (name, claim)
    assert {n for n, c in BASES.items() if refused(read(c))} == {  # type: ignore[arg-type]
        "occupational", "insurer", "employer", "occupational-physician"}


@hsettings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated())
def test_no_other_spelling_widens_access(case):
    """Every other spelling is a 401, or (when it is in fact the same value: the upper case of digits) the very
    Caller of the plain claims; above all a refused identity is never admitted under another spelling."""
    name, canonical, claims = case
    expected = read(canonical)
    result = read(claims)
    assert isinstance(expected, Caller)
    if is_401(result):
        return
    assert isinstance(result, Caller)
    if result.sub != expected.sub and result.actor not in ("professional", "patient"):
        # a representative's or a system's own id is an identifier, not a code: "acme" is another caller than
        # "ACME" (every comparison of `sub` is exact), never a wider one; nothing else may differ
        assert result.sub.lower() == expected.sub.lower() and result.sub.isascii(), (name, claims)
        result = replace(result, sub=expected.sub)
    if result.access_reason != expected.access_reason:  # free text, shown to the patient: kept exactly as sent
        assert result.access_reason == claims["access_reason"], (name, claims)
        result = replace(result, access_reason=expected.access_reason)
    assert result == expected, (name, claims)
    assert refused(result) == refused(expected), (name, claims)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["SM25", "SM26", "10", "TREAT", "BTG", "professional", "system", INS, "810001234567"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=6,
)


@hsettings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(BASES)), st.sampled_from(sorted({*SHAPES, "sub"})), JSON)
def test_any_json_value_is_kept_verbatim_or_refused(base, claim, value):
    """Whatever JSON a claim holds, the server keeps it exactly as sent (no trimming, folding or picking) or
    answers 401: an admitted Caller's field is the claim itself, of the claim's JSON type."""
    result = read({**BASES[base], claim: value})
    if is_401(result):
        return
    assert isinstance(result, Caller)
    field = "purpose_of_use" if claim == "purpose_of_use" else claim
    assert getattr(result, field) == value and type(getattr(result, field)) is type(value), (claim, value)
    if claim == "specialty":
        assert value != "SM25" or refused(result)


def _folded(value: Any) -> str:
    """What a lax reader could have made of a claim: flattened, stripped, compatibility-folded, case-folded,
    invisible characters dropped."""
    while isinstance(value, list) and value:
        value = value[-1]
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()


@hsettings(max_examples=300, deadline=None)
@given(st.data())
def test_a_refused_actor_under_another_spelling_is_never_admitted(data):
    """Occupational medicine, insurers and employers: any spelling a lax reader would take for theirs is a 401
    or a Caller the refused-actor rule still refuses (403)."""
    base = data.draw(st.sampled_from(["occupational", "insurer", "employer", "occupational-physician"]))
    claim = "specialty" if base == "occupational" else "actor"
    plain = BASES[base][claim]
    value = data.draw(variant(plain))
    result = read({**BASES[base], claim: value})
    if _folded(value) == _folded(plain) and not is_401(result):
        assert refused(result), (claim, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("claim,value", [
    ("actor", "Professional"), ("actor", "system "), ("actor", "hacker"), ("actor", ""), ("actor", None),
    ("sub", " 810001234567"), ("sub", "８10001234567"), ("sub", 810001234567), ("sub", "81000123456"),
    ("profession", "10 "), ("profession", 10), ("profession", "٠1"), ("profession", "99"), ("profession", ["10"]),
    ("specialty", "SM99"), ("specialty", "SМ26"), ("specialty", ""), ("specialty", None),
    ("organization", "1750000042\n"), ("organization", ["1750000042"]),
    ("purpose_of_use", "treat"), ("purpose_of_use", "BTG "), ("purpose_of_use", ["BTG"]), ("purpose_of_use", "HACK"),
    ("access_reason", ["coma"]), ("access_reason", "coma\u202e"), ("access_reason", "x" * 1001), ("access_reason", ""),
    ("secret", "true"), ("secret", 1), ("secret", [True]), ("secret", None),
])
def test_malformed_claims_are_401(claim, value):
    error = read({**BASES["medecin"], claim: value})
    assert is_401(error)
    assert claim in error.issues[0].diagnostics  # type: ignore[union-attr]


@pytest.mark.parametrize("claims", [
    {"actor": "patient", "sub": " " + INS, "patient": INS},
    {"actor": "patient", "sub": INS, "patient": INS + " "},
    {"actor": "patient", "sub": INS, "patient": "１800175123456"},
    {"actor": "patient", "sub": INS, "patient": [INS]},
    {"actor": "patient", "sub": INS, "patient": int(INS)},
    {"actor": "representative", "sub": "rep 1", "patient": INS},
    {"actor": "professional", "sub": "p", "profession": "10"},
], ids=lambda c: repr(c)[:60])
def test_identities_of_another_shape_are_401(claims):
    assert is_401(read(claims))


def test_the_idnatps_the_ins_and_the_organisation_forms_the_contract_gives():
    for sub in ("810001234567", "0751234567", "3750712184/A1"):
        assert isinstance(read({"actor": "professional", "sub": sub}), Caller), sub
    for ins in ("1800175123456", "180017512345678", "18001" "2A" "123456", "18001" "2B" "12345678"):
        assert isinstance(read({"actor": "patient", "sub": ins, "patient": ins}), Caller), ins
    for org in ("750712184", "2A0000001", "1750712184", "312345678901234"):
        assert isinstance(read({**DOCTOR, "organization": org}), Caller), org


# -- the four spellings of the issue, over HTTP -------------------------------------------------------------------

SPELLINGS = ["SM25 ", " SM25", ["SM25"], ["SM26", "SM25"]]


@pytest.mark.parametrize("specialty", SPELLINGS, ids=repr)
def test_occupational_medicine_spelled_otherwise_is_401_and_reads_nothing(client, database, specialty):
    """The issue's tokens read the DMP in break-the-glass mode; plain SM25 was refused. Now every one is a 401."""
    pid = json_of(client.post("Patient", patient()))["id"]
    before = written(database)
    claims = {**DOCTOR, "specialty": specialty, "purpose_of_use": "BTG", "access_reason": "urgence"}
    caller = client.as_(**claims)
    for response in (caller.get(f"Patient/{pid}"), caller.get(f"DocumentReference?patient={pid}"),
                     caller.post("Patient", patient("2990175123459"))):
        assert response.status_code == 401, response.data
        body = json_of(response)
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "login"
        assert "specialty" in body["issue"][0]["diagnostics"]
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="fhir-dmp", error="invalid_token"'
    assert written(database) == before


def test_plain_sm25_is_still_403_and_the_plain_general_practitioner_gets_in(client):
    pid = json_of(client.post("Patient", patient()))["id"]
    emergency = {"purpose_of_use": "BTG", "access_reason": "urgence"}
    refused_response = client.as_(**{**DOCTOR, "specialty": "SM25"}, **emergency).get(f"Patient/{pid}")
    assert refused_response.status_code == 403
    assert "SM25" in json_of(refused_response)["issue"][0]["diagnostics"]
    assert client.as_(**DOCTOR, **emergency).get(f"Patient/{pid}").status_code == 200
