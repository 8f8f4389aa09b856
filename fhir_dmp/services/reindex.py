"""Rebuilding the search index of stored resources, when the index extraction changes.

Index rows are written with each version; a new release that indexes a parameter differently (or a
new parameter) only affects later writes. `fhir-dmp reindex` walks the current versions in key order,
in short transactions of `batch` resources, so the server can keep serving while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from fhir_dmp import fhirjson
from fhir_dmp.config import project_dir
from fhir_dmp.policy.facts import access_facts, governing_reference
from fhir_dmp.policy.habilitation import load_code_lists
from fhir_dmp.search.extract import index_rows
from fhir_dmp.services.vsm import still_governed
from fhir_dmp.storage import repository as repo
from fhir_dmp.storage.db import Database


def reindex(db: Database, base_url: str, *, resource_type: str | None = None, batch: int = 500) -> Iterator[int]:
    """Yield the running count of reindexed resources after each batch; the access facts are recomputed too
    (the depositor is kept: it is not in the content)."""
    types = load_code_lists(project_dir() / "terminologies").types
    done, after = 0, 0
    while True:
        with db.transaction(write=True) as conn:
            rows = repo.current_batch(conn, after, batch, resource_type)
            for stored in rows:
                resource = fhirjson.loads(stored.content or "{}")
                governing = None
                if stored.resource_type == "Binary" and (ref := governing_reference(resource)):
                    doc = repo.read_current(conn, "DocumentReference", ref.split("/", 1)[1])
                    governing = doc.facts if doc is not None else None
                facts = access_facts(stored.resource_type, resource, stored.facts.owner, stored.last_updated, types,
                                     governing)
                if stored.resource_type != "Binary" and stored.facts.governed_by:  # a VSM part (services/vsm.py)
                    facts = still_governed(conn, facts, stored.facts.governed_by)
                repo.replace_index(conn, stored, index_rows(stored.resource_type, resource, base_url), facts)
                if stored.resource_type == "DocumentReference":
                    repo.update_governed(conn, f"DocumentReference/{stored.id}", facts)
        if not rows:
            return
        done += len(rows)
        after = rows[-1].pk
        yield done
