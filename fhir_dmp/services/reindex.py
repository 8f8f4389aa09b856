"""Rebuilding the search index of stored resources, when the index extraction changes.

Index rows are written with each version; a new release that indexes a parameter differently (or a
new parameter) only affects later writes. `fhir-dmp reindex` walks the current versions in key order,
in short transactions of `batch` resources, so the server can keep serving while it runs. Each DMP's access
facts row (`dmp_facts`) is recomputed as its Patient goes by.
"""

from __future__ import annotations

from collections.abc import Iterator

from fhir_dmp import fhirjson
from fhir_dmp.config import project_dir
from fhir_dmp.policy.consents import facts_of
from fhir_dmp.policy.facts import access_facts, governed, governing_reference
from fhir_dmp.policy.habilitation import load_code_lists
from fhir_dmp.search.extract import index_rows
from fhir_dmp.storage import dmps, resources
from fhir_dmp.storage.db import Database, Tx
from fhir_dmp.storage.records import Stored


def reindex(db: Database, base_url: str, *, resource_type: str | None = None, batch: int = 500) -> Iterator[int]:
    """Yield the running count of reindexed resources after each batch; the access facts are recomputed too
    (the depositor is kept: it is not in the content)."""
    types = load_code_lists(project_dir() / "terminologies").types
    done, after = 0, 0
    while True:
        with db.transaction(write=True) as conn:
            rows = resources.current_batch(conn, after, batch, resource_type)
            for stored in rows:
                resource = fhirjson.loads(stored.content or "{}")
                governing = None
                if stored.resource_type == "Binary" and (ref := governing_reference(resource)):
                    doc = resources.read_current(conn, "DocumentReference", ref.split("/", 1)[1])
                    governing = doc.facts if doc is not None else None
                facts = access_facts(stored.resource_type, resource, stored.facts.owner, stored.last_updated, types,
                                     governing)
                if stored.resource_type != "Binary" and stored.facts.governed_by:  # a VSM part (services/vsm.py)
                    facts = _still_governed(conn, facts, stored.facts.governed_by)
                resources.replace_index(conn, stored, index_rows(stored.resource_type, resource, base_url), facts)
                if stored.resource_type == "DocumentReference":
                    resources.update_governed(conn, f"DocumentReference/{stored.id}", facts)
                if stored.resource_type == "Patient":
                    _store_facts(conn, stored)
        if not rows:
            return
        done += len(rows)
        after = rows[-1].pk
        yield done


def _still_governed(tx: Tx, facts: object, governed_by: str) -> object:
    doc = resources.read_current(tx, "DocumentReference", governed_by.split("/", 1)[1])
    return facts if doc is None else governed(facts, doc.facts, governed_by)  # type: ignore[arg-type]


def _store_facts(tx: Tx, patient: Stored) -> None:
    rows = resources.current_of_patient(tx, patient.id, ("Patient", "Consent"))
    consents = [fhirjson.loads(r.content or "{}") for r in rows if r.resource_type == "Consent"]
    dmps.save_facts(tx, patient.id, facts_of(fhirjson.loads(patient.content or "{}"), consents))
