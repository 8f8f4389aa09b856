"""`GET /metadata?mode=terminology`: the TerminologyCapabilities (R4) of what the server ships, generated from
the conformance store so that it names exactly the code systems `$lookup` answers for and the value sets
`$expand` and `$validate-code` take."""

from __future__ import annotations

from fhir_dmp.services import operations
from fhir_dmp.terminology.store import Conformance
from fhir_dmp.version import __version__


def terminology_capabilities(conf: Conformance, base_url: str, date: str) -> dict:
    systems = []
    for cs in conf.all("CodeSystem"):
        version = {"code": cs["version"], "isDefault": True} if isinstance(cs.get("version"), str) else None
        systems.append({"uri": cs["url"], **({"version": [version]} if version else {}), "subsumption": True})
    value_sets = sorted(f"{vs['url']}|{vs['version']}" if vs.get("version") else vs["url"]
                        for vs in conf.all("ValueSet"))
    expand = operations.OPERATIONS[("ValueSet", "$expand")]
    return {
        "resourceType": "TerminologyCapabilities",
        "status": "active",
        "date": date,
        "kind": "instance",
        "name": "FhirDmpTerminology",
        "title": "fhir-dmp terminology capabilities",
        "description": "The code systems and value sets this server ships, read-only (GET CodeSystem, ValueSet, "
                       "ConceptMap), with CodeSystem/$lookup, ValueSet/$expand and ValueSet/$validate-code over "
                       "them. Value sets: " + ", ".join(value_sets) + ".",
        "software": {"name": "fhir-dmp", "version": __version__},
        "implementation": {"description": "fhir-dmp", "url": base_url},
        "codeSystem": systems,
        "expansion": {"hierarchical": False, "paging": True, "incomplete": False,
                      "parameter": [{"name": name} for name in expand.accepts],
                      "textFilter": "filter: each word starts the code or is in the display, case and "
                                    "accents ignored"},
        "codeSearch": "all",
        "validateCode": {"translations": False},
    }
