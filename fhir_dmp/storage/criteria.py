"""A small criteria tree the search layer builds and `compile.py` turns into SQL.

Kept free of SQLAlchemy so that the search parser and the access policy can both speak it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class IdIn:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Token:
    """A token index match; `system=None` means any system, `""` means no system; `code=None` any code."""

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True)
class UpdatedCompare:
    """`_lastUpdated` against a half-open range [low, high)."""

    low: datetime | None
    high: datetime | None


@dataclass(frozen=True)
class PatientIs:
    patient_key: str


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Criterion, ...]


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Criterion, ...]


Criterion = IdIn | Token | UpdatedCompare | PatientIs | AnyOf | AllOf
