"""The subscription topics this server offers (IHE DSUBm's basic topics), as data: `capability/subscription-topics/`
holds them as the R4 backport represents a SubscriptionTopic (a `Basic` resource, docs/subscriptions.md), and
`Basic/{id}` and `Basic?code=SubscriptionTopic` serve them as they are shipped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fhir_dmp.errors import FhirError, not_found
from fhir_dmp.services import results
from fhir_dmp.services.requests import FhirRequest, FhirResponse
from fhir_dmp.services.unit import Unit

R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
FHIR_TYPES = "http://hl7.org/fhir/fhir-types"
DSUBM = "https://profiles.ihe.net/ITI/DSUBm/"


@dataclass(frozen=True)
class Topic:
    url: str
    resource_type: str  # what its events are about (DocumentReference, List)
    patient_dependent: bool  # its filter names one patient (`patient` or `patient.identifier`)
    filters: frozenset[str]  # the filter parameters it allows (canFilterBy)
    resource: dict  # the Basic resource as shipped


def _value(extensions: list[dict], name: str) -> list[object]:
    return [next((v for k, v in e.items() if k.startswith("value")), None) for e in extensions if e["url"] == name]


def _topic(basic: dict) -> Topic:
    ext = basic["extension"]
    url = str(_value(ext, R5 + "url")[0])
    trigger = next(e for e in ext if e["url"] == R5 + "resourceTrigger")["extension"]
    rtype = str(_value(trigger, "resource")[0]).rsplit("/", 1)[-1]
    filters = frozenset(str(_value(e["extension"], "filterParameter")[0]) for e in ext
                        if e["url"] == R5 + "canFilterBy")
    return Topic(url, rtype, "patient" in filters, filters, basic)


@lru_cache(maxsize=4)
def load(home: Path) -> dict[str, Topic]:
    """The topics by canonical URL (and by the shorter form DSUBm's text also gives them: without the
    `SubscriptionTopic/` segment), read once per home directory."""
    found: dict[str, Topic] = {}
    for path in sorted((home / "capability" / "subscription-topics").glob("*.json")):
        for basic in json.loads(path.read_text(encoding="utf-8")):
            topic = _topic(basic)
            found[topic.url] = topic
            if topic.url.startswith(DSUBM + "SubscriptionTopic/"):
                found[DSUBM + topic.url.rsplit("/", 1)[-1]] = topic
    return found


def shipped(home: Path) -> list[Topic]:
    """Each topic once."""
    return list({t.url: t for t in load(home).values()}.values())


# -- Basic/{id}, Basic?... --------------------------------------------------------------------------------------
def read(u: Unit, req: FhirRequest) -> FhirResponse:
    for topic in shipped(u.rt.settings.home):
        if topic.resource["id"] == req.id:
            return FhirResponse(200, topic.resource)
    raise not_found(f"Basic/{req.id} does not exist (this server serves its subscription topics as Basic)")


def search(u: Unit, req: FhirRequest) -> FhirResponse:
    """The topics, by `_id`, `url` or `code` (SubscriptionTopic, with or without its system)."""
    topics = shipped(u.rt.settings.home)
    for name, value in req.query:
        wanted = set(value.split(","))
        if name == "_id":
            topics = [t for t in topics if t.resource["id"] in wanted]
        elif name == "url":
            topics = [t for t in topics if t.url in wanted]
        elif name == "code":
            topics = [t for t in topics if wanted & {"SubscriptionTopic", f"{FHIR_TYPES}|SubscriptionTopic"}]
        elif name == "_lastUpdated":
            topics = []  # shipped data: never updated through the API
        elif name not in ("_count", "_format"):
            raise FhirError.of(400, "not-supported", f"The topics are searched by _id, url and code, not {name}",
                               name)
    entries = [{"fullUrl": f"{req.base_url}/Basic/{t.resource['id']}", "resource": t.resource,
                "search": {"mode": "match"}} for t in topics]
    links = results.page_links(req.base_url, "Basic", list(req.query), None)
    return FhirResponse(200, results.bundle("searchset", entries, links, len(entries)))
