"""The criteria tree the search parser builds and `compile.py` turns into one WHERE clause.

Free of SQLAlchemy, so the search parser and the access policy both speak it. Index matches
name the parameter and carry already-normalised values; date and number bounds are half-open
ranges [low, high) computed from the value's precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class AccessFacts:
    """What the access policy needs of a row without reading its content (columns of `resource`)."""

    doc_type: str = ""
    labels: int = 0
    doc_date: datetime | None = None
    owner: str = ""
    governed_by: str = ""


NO_FACTS = AccessFacts()


@dataclass(frozen=True)
class IdIn:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class TypeIs:
    """The resource's own type (used inside chains and `_has`, where several types can be reached)."""

    types: tuple[str, ...]


@dataclass(frozen=True)
class PatientIs:
    patient_key: str


@dataclass(frozen=True)
class PatientMatches:
    """The DMP the row belongs to (its patient key) is a Patient matching `inner` (chains on the patient)."""

    inner: Criterion


@dataclass(frozen=True)
class DocTypeIn:
    """Access facts (policy/facts.py): the row's habilitation document type is one of `codes`."""

    codes: tuple[str, ...]


@dataclass(frozen=True)
class LabelsClear:
    """None of the visibility bits in `mask` is set on the row."""

    mask: int


@dataclass(frozen=True)
class OwnerIs:
    """The row was deposited by (or, for a trace, caused by) `owner`."""

    owner: str


@dataclass(frozen=True)
class DocDateBefore:
    """The row's document date is known and earlier than `instant`."""

    instant: datetime


@dataclass(frozen=True)
class Token:
    """`system=None`: any system; `""`: no system; `code=None`: any code; `text`: words of the display."""

    param: str
    system: str | None
    code: str | None
    text: str | None = None


@dataclass(frozen=True)
class String:
    param: str
    value: str
    mode: str = "start"  # start | exact | contains


@dataclass(frozen=True)
class Uri:
    param: str
    value: str
    mode: str = "exact"  # exact | below | above


@dataclass(frozen=True)
class DateRange:
    """An R4 date comparison of the indexed range against the search range [low, high)."""

    param: str  # "_lastUpdated" compares the resource row itself
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True)
class NumberRange:
    param: str
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    quantity: bool = False
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Reference:
    """A local target (type and/or id) or a non-local `url`. `within`: a local target counts only when its row
    (deleted or not) matches it (the caller's scope: a List's `item` never matches through a hidden document);
    non-local references (a url, no target id) are not judged by it."""

    param: str
    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None
    within: Criterion | None = None


@dataclass(frozen=True)
class Composite:
    param: str
    first: str
    second: str


@dataclass(frozen=True)
class Missing:
    param: str
    kind: str  # index table kind
    missing: bool


@dataclass(frozen=True)
class Chain:
    """`subject:Patient.name=x`: some target of the reference matches `inner`."""

    param: str
    target_types: tuple[str, ...]
    inner: Criterion


@dataclass(frozen=True)
class Has:
    """`_has:Observation:patient:code=x`: some `source_type` referring here through `param` matches `inner`."""

    source_type: str
    param: str
    inner: Criterion


@dataclass(frozen=True)
class Not:
    part: Criterion


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Criterion, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Criterion, ...]


Criterion = (
    IdIn | TypeIs | PatientIs | PatientMatches | DocTypeIn | LabelsClear | OwnerIs | DocDateBefore | Token | String
    | Uri | DateRange | NumberRange | Reference | Composite
    | Missing | Chain | Has | Not | AnyOf | AllOf
)


def conjuncts(node: Criterion) -> list[Criterion]:
    """The terms ANDed at the top of `node`: nested AllOfs flattened, one-term AnyOfs unwrapped (what the
    parser builds for `patient=x`), so that a rule can ask "does every match name this DMP?"."""
    if isinstance(node, AllOf):
        return [term for part in node.parts for term in conjuncts(part)]
    if isinstance(node, AnyOf) and len(node.parts) == 1:
        return conjuncts(node.parts[0])
    return [node]
