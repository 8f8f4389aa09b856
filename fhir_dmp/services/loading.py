"""Loading example files through the service (the same validation and storage path as the API)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fhir_dmp import fhirjson
from fhir_dmp.config import Settings
from fhir_dmp.errors import FhirError
from fhir_dmp.policy.caller import Caller
from fhir_dmp.services.pipeline import Pipeline
from fhir_dmp.services.requests import parse_url
from fhir_dmp.storage.db import Database

LOADER = Caller(actor="system", sub="fhir-dmp-load-examples")


def load_directory(db: Database, settings: Settings, directory: Path,
                   base_url: str = "http://localhost:8080/fhir") -> Iterator[str]:
    """Each `*.json` in name order: a Bundle is POSTed to the base, any other resource to its type."""
    pipeline = Pipeline.load(db, settings)
    for path in sorted(directory.glob("*.json")):
        resource = fhirjson.loads(path.read_bytes())
        kind = resource.get("resourceType")
        url = "" if kind == "Bundle" and resource.get("type") in ("transaction", "batch") else kind
        try:
            req = parse_url("POST", url, body=resource, base_url=base_url)
            pipeline.admit(LOADER, req)
            result = pipeline.handle(LOADER, req)
        except FhirError as error:
            raise SystemExit(f"{path.name}: {error.status} {error.outcome()}") from error
        yield f"{path.name}: {result.status}"
