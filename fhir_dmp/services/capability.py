"""The CapabilityStatement, generated from the registry and the search parameter table so that it
never advertises what the server does not do; `capability/capability-base.json` holds the fixed parts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from fhir_dmp.errors import bad_request
from fhir_dmp.search.dates import instant, now_utc
from fhir_dmp.search.extract import indexed_params
from fhir_dmp.search.includes import includes, revincludes
from fhir_dmp.services.conformance import capability_entry, supported_profiles
from fhir_dmp.services.oidc import Issuer
from fhir_dmp.services.patching import PATCH_FORMATS
from fhir_dmp.services.registry import RESOURCES, SYSTEM_INTERACTIONS, ResourceDef
from fhir_dmp.services.routes import operations_of
from fhir_dmp.services.smart import security
from fhir_dmp.services.terminology_capabilities import terminology_capabilities
from fhir_dmp.services.topics import shipped as shipped_topics
from fhir_dmp.terminology.store import load as load_conformance
from fhir_dmp.version import __version__

_RESULT_PARAMS_DOC = "Also: _count, _total (none, estimate, accurate), _cursor (paging)."


class CapabilityBuilder:
    def __init__(self, home: Path, issuer: Issuer | None = None) -> None:
        self.issuer = issuer  # the SMART authorization server the security part names (services/smart.py)
        self.base = json.loads((home / "capability" / "capability-base.json").read_text(encoding="utf-8"))
        self.conformance = load_conformance(home)
        self.profiles = supported_profiles(self.conformance)
        self.topics = sorted(t.url for t in shipped_topics(home))

    def build(self, base_url: str, mode: str | None = None) -> dict:
        """`mode` (R4 capabilitystatement.html#mode): full (the default) or normative, the same statement here;
        terminology, the TerminologyCapabilities; anything else a 400."""
        if mode == "terminology":
            return terminology_capabilities(self.conformance, base_url, instant(now_utc()))
        if mode not in (None, "full", "normative"):
            raise bad_request(f"mode={mode!r}: /metadata takes full, normative or terminology", "mode")
        statement = copy.deepcopy(self.base)
        statement["date"] = instant(now_utc())
        statement["software"] = {**statement.get("software", {}), "version": __version__}
        statement["patchFormat"] = list(PATCH_FORMATS)  # what services/patching.py applies
        statement["implementation"] = {"description": "fhir-dmp", "url": base_url}
        statement["rest"] = [{
            "mode": "server",
            "documentation": "FHIR R4 RESTful API. " + _RESULT_PARAMS_DOC,
            "security": security(statement.pop("security"), self.issuer),
            "resource": [capability_entry(d) if d.shipped else _resource(d, self.profiles.get(d.name, []))
                         for d in RESOURCES.values()],
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        }]
        for entry in statement["rest"][0]["resource"]:
            if entry["type"] == "Subscription":
                _subscription(entry, self.topics)
            elif entry["type"] == "Basic":
                _topics(entry)
        return statement


# -- subscriptions: the topics offered, and what the Subscription table does (services/subscriptions.py) ----------
_TOPIC_EXTENSION = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                    "capabilitystatement-subscriptiontopic-canonical")


def _subscription(entry: dict, topics: list[str]) -> None:
    entry["extension"] = [{"url": _TOPIC_EXTENSION, "valueCanonical": url} for url in topics]
    # `patient` (the DMP a patient-dependent subscription is on) is this server's own parameter, said here: R4
    # defines none for Subscription
    entry["documentation"] += ". Also searched by patient=Patient/{id}"
    entry["supportedProfile"] = ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                 "backport-subscription"]
    entry.update(versioning="versioned", readHistory=False, conditionalRead="not-supported")
    for key in ("conditionalCreate", "conditionalUpdate", "conditionalDelete", "searchInclude", "searchRevInclude"):
        entry.pop(key, None)  # kept apart from the resource store: no conditional write, no include
    entry["searchParam"] = [
        {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
        {"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"},
        {"name": "status", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status"},
    ]


def _topics(entry: dict) -> None:
    """Basic serves the subscription topics (services/topics.py), searched by these only."""
    entry.update(versioning="no-version", readHistory=False, updateCreate=False, conditionalRead="not-supported")
    entry.pop("searchInclude", None)
    entry.pop("searchRevInclude", None)
    entry["searchParam"] = [
        {"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
        {"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"},
        {"name": "code", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Basic-code"},
        {"name": "url", "type": "uri", "definition": "http://hl7.org/fhir/SearchParameter/SubscriptionTopic-url"},
    ]


def _resource(definition: ResourceDef, profiles: list[str]) -> dict:
    writes = definition.allows("update")
    out: dict = {
        "type": definition.name,
        **({"supportedProfile": profiles} if profiles else {}),
        "documentation": definition.documentation,
        "interaction": [{"code": code} for code in definition.interactions],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": False,
    }
    if definition.allows("create"):
        out["conditionalCreate"] = True
    if writes:
        out["conditionalUpdate"] = True
        out["conditionalDelete"] = "single"
    out["conditionalRead"] = "not-match"
    out["searchParam"] = [
        {"name": p.code, "definition": p.url, "type": p.type, "documentation": p.description}
        for p in indexed_params(definition.name).values()
    ]
    # what `_include` / `_revinclude` take (search/parse.py), from the same parameter table
    if includes(definition.name):
        out["searchInclude"] = list(includes(definition.name))
    if revincludes(definition.name):
        out["searchRevInclude"] = list(revincludes(definition.name))
    out["operation"] = operations_of(definition.name)
    return out
