"""Conditional operations (create, update, patch, delete, transaction references): the condition is a search
run with the caller's scope inside its SQL (`lookups.for_condition`), so its answer (none, one, several)
never depends on a resource the caller may not see."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from fhir_dmp.errors import bad_request, precondition_failed
from fhir_dmp.search.parse import parse_criteria
from fhir_dmp.services import lookups, trace_index
from fhir_dmp.services.requests import FhirRequest
from fhir_dmp.services.unit import Unit
from fhir_dmp.storage import queries
from fhir_dmp.storage.records import Stored


def match(u: Unit, resource_type: str, condition: str, what: str) -> Stored | None:
    """The one resource the condition names among those the caller may see; None for none, 412 for several.
    Race-safe: writers of one condition queue on it."""
    pairs = parse_qsl(condition.lstrip("?"), keep_blank_values=True)
    if not pairs:
        raise bad_request(f"The {what} condition is empty")
    criteria = parse_criteria(resource_type, pairs)
    u.lock(f"{resource_type}?{sorted(pairs)}")
    trace_index.before_condition(u.tx, resource_type, criteria, u.req.base_url)
    lookup = lookups.for_condition(u, resource_type, criteria)
    found = queries.find(u.tx, resource_type, lookup.criteria, limit=2, scope=lookup.own_scope(resource_type))
    if lookup.key is not None:
        u.touch(lookup.key)
    if len(found) > 1:
        raise precondition_failed(f"The {what} condition '{condition}' matches more than one {resource_type}")
    if found:
        u.touch(found[0].patient_key, f"{resource_type}/{found[0].id}", facts=found[0].facts)
    return found[0] if found else None


def in_url(req: FhirRequest) -> str:
    """The condition a request's URL carries (its search parameters), '' when none."""
    return urlencode([(k, v) for k, v in req.query if k not in ("_format", "_pretty")])


def required(req: FhirRequest) -> str:
    """The condition of a conditional update, patch or delete: required."""
    condition = in_url(req)
    if not condition:
        raise bad_request(f"{req.method} on the type needs search parameters naming one {req.resource_type}")
    return condition
