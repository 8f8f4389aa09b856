"""What every request of one process shares and never changes: the store, the settings, the rules as loaded."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_dmp.config import Settings
from fhir_dmp.policy import actors
from fhir_dmp.policy.habilitation import HabilitationMatrix, load_matrix
from fhir_dmp.storage.db import Database
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.terminology.store import load as load_conformance


@dataclass(frozen=True)
class Runtime:
    """Loaded once at start (several workers each load the same files: no state they could disagree on)."""

    db: Database
    settings: Settings
    matrix: HabilitationMatrix
    actor_rules: actors.ActorRules
    conformance: Conformance  # CodeSystem, ValueSet, StructureDefinition...: files, not the store

    @classmethod
    def load(cls, db: Database, settings: Settings) -> Runtime:
        assert settings.habilitation_matrix is not None
        return cls(db, settings, load_matrix(settings.habilitation_matrix, settings.home / "terminologies"),
                   actors.load_actor_rules(settings.home / "terminologies" / "refused-actors.json"),
                   load_conformance(settings.home))
