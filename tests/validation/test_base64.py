"""The fast base64 paths give the verdicts of the slow ones they replaced: `documents.decoded` (pybase64 first) those
of `base64.b64decode(validate=True)`, and the structural shortcut's base64Binary check those of its regular
expression, on every string of a small alphabet holding each kind of character that matters, and on random
longer ones."""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import os
import random
import re

from fhir_dmp.validation.documents import decoded
from fhir_dmp.validation.primitives import plain

ALPHABET = "AQg+/=\n é"  # letters with non-zero low bits, the two symbols, padding, whitespace, non-ASCII
PADDED = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _standard(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@functools.cache
def _strings() -> list[str]:
    short = ["".join(chars) for n in range(7) for chars in itertools.product(ALPHABET, repeat=n)]
    rng = random.Random(65)
    longer = ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(7, 40))) for _ in range(20_000)]
    real = [base64.b64encode(os.urandom(n)).decode() for n in range(0, 300, 7)]
    return short + longer + real + [r[:-1] + "=" for r in real if r] + [r + "=" for r in real]


def test_decoded_agrees_with_the_standard_library() -> None:
    strings = _strings()
    assert len(strings) > 500_000
    differing = [s for s in strings if decoded(s) != _standard(s)]
    assert differing == []


def test_the_base64_shortcut_agrees_with_its_expression() -> None:
    differing = [s for s in _strings()
                 if plain(s, "base64Binary") != (len(s) % 4 == 0 and PADDED.fullmatch(s) is not None)]
    assert differing == []
