"""The route table: which handler answers which interaction, and the one registry of operations.

A handler takes the unit of work and the request and returns the response; it runs inside the unit's
transaction (`pipeline.py`), which traces it. A new interaction, operation or shipped type is one line here;
the CapabilityStatement lists exactly what this table holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fhir_dmp.errors import FhirError
from fhir_dmp.services import (
    conformance,
    history,
    interactions,
    lifecycle,
    notifications,
    operations,
    reads,
    searching,
    subscriptions,
    topics,
    validate_operation,
    vsm,
)
from fhir_dmp.services.registry import RESOURCES
from fhir_dmp.services.requests import FhirRequest, FhirResponse, method_not_allowed
from fhir_dmp.services.unit import Unit
from fhir_dmp.validation.structure import validate_structure

Handler = Callable[[Unit, FhirRequest], FhirResponse]

INTERACTIONS: dict[str, Handler] = {
    "read": reads.read,
    "vread": reads.vread,
    "create": interactions.create,
    "update": interactions.update,
    "patch": interactions.patch,
    "delete": interactions.delete,
    "search-type": searching.search,
    "history-instance": history.history,
    "history-type": history.history,
    "history-system": history.history,
}

# -- subscriptions: the types kept apart from the resource store (registry.SERVED_APART) have their own handlers
APART: dict[tuple[str, str], Handler] = {
    ("Subscription", "read"): subscriptions.read,
    ("Subscription", "create"): subscriptions.create,
    ("Subscription", "update"): subscriptions.update,
    ("Subscription", "delete"): subscriptions.delete,
    ("Subscription", "search-type"): subscriptions.search,
    ("Basic", "read"): topics.read,
    ("Basic", "search-type"): topics.search,
}


@dataclass(frozen=True)
class Operation:
    resource_type: str  # "*": every stored type
    name: str  # with its "$"
    definition: str  # the canonical of its OperationDefinition (R4's, or this server's own)
    handler: Handler


OPERATIONS: tuple[Operation, ...] = (
    Operation("*", "$validate", validate_operation.DEFINITION, validate_operation.validate),
    Operation("Patient", "$close", lifecycle.CLOSE_URL, lifecycle.close),
    Operation("Patient", "$reopen", lifecycle.REOPEN_URL, lifecycle.reopen),
    Operation("Patient", "$everything", lifecycle.EVERYTHING_URL, lifecycle.everything),
    Operation("Patient", "$vsm-status", vsm.STATUS_DEFINITION, vsm.vsm_status),
    Operation("Composition", "$document", vsm.DOCUMENT_DEFINITION, vsm.document),
    Operation("Subscription", "$status", notifications.STATUS_DEFINITION, notifications.status),
    Operation("Subscription", "$events", notifications.EVENTS_DEFINITION, notifications.events),
    # the terminology operations of the shipped types
    *(Operation(rtype, name, op.definition, conformance.handle) for (rtype, name), op in operations.OPERATIONS.items()),
)
_BY_NAME = {(op.resource_type, op.name): op for op in OPERATIONS}


def operations_of(resource_type: str) -> list[dict]:
    """The CapabilityStatement's `operation` entries of a type."""
    generic = [op for op in OPERATIONS if op.resource_type == "*" and not RESOURCES[resource_type].shipped]
    own = sorted((op for op in OPERATIONS if op.resource_type == resource_type), key=lambda op: op.name)
    return [{"name": op.name.lstrip("$"), "definition": op.definition} for op in generic + own]


def route(req: FhirRequest) -> Handler:
    """The handler of a request (405 for an interaction the type does not support)."""
    interaction = req.interaction
    if interaction == "history-system":
        return history.history
    if interaction == "operation":
        _parameters_checked(req)
    definition = RESOURCES.get(req.resource_type or "")
    if definition is not None and definition.shipped:
        return conformance.handle  # read, search and the terminology operations, from the shipped files
    apart = APART.get((req.resource_type or "", interaction))
    if apart is not None:
        return apart
    if interaction == "operation":
        rtype = req.resource_type or ""
        op = _BY_NAME.get((rtype, req.operation or "")) or (_BY_NAME.get(("*", req.operation or ""))
                                                            if definition is not None else None)
        if op is not None:
            return op.handler
        # an operation this server does not have: no method would do (not a 405), as for the shipped types
        offered = ", ".join(f"${o['name']}" for o in operations_of(rtype)) if definition is not None else ""
        raise FhirError.of(400, "not-supported", f"Operation {req.operation} is not supported on "
                           f"{rtype or 'the system'} (supported: {offered or 'none'})")
    if definition is None or not definition.allows(interaction):
        raise method_not_allowed(req)
    return INTERACTIONS[interaction]


def _parameters_checked(req: FhirRequest) -> None:
    """An operation's Parameters body R4 refuses is one 400 listing every structure issue (an unknown key, a
    repeated value, what an XML body carries as JSON would: `http/fhirxml_read.py`), never a problem the operation
    silently skips. `$validate` is left out: the resource it is given is what it reports on."""
    body = req.body
    if req.method == "POST" and req.operation != "$validate" and isinstance(body, dict) and (
            body.get("resourceType") == "Parameters"):
        issues = [i for i in validate_structure(body) if i.severity in ("error", "fatal")]
        if issues:
            raise FhirError(400, issues)
