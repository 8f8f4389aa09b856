"""The DMP's own operations on stored resources, by (resource type, `$name`): each module of an operation
registers its handler here, and `FhirService.dispatch` looks it up. A handler runs inside the request's unit of
work like any interaction (`run` decides read or write from the HTTP method)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fhir_dmp.services.guard import Guard
from fhir_dmp.services.requests import FhirRequest, FhirResponse

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fhir_dmp.services.interactions import FhirService

Handler = Callable[["FhirService", "Connection", Guard, FhirRequest], FhirResponse]
OPERATIONS: dict[tuple[str, str], Handler] = {}
DEFINITIONS: dict[tuple[str, str], str] = {}  # (type, $name) -> OperationDefinition canonical, for the capability


def operation(resource_type: str, name: str, definition: str) -> Callable[[Handler], Handler]:
    """Registers `handler` for `[resource_type]/$name` and `[resource_type]/[id]/$name`; `definition`: the
    canonical of its OperationDefinition (R4's, or this server's own)."""
    def register(handler: Handler) -> Handler:
        OPERATIONS[(resource_type, name)] = handler
        DEFINITIONS[(resource_type, name)] = definition
        return handler
    return register


def listed(resource_type: str) -> list[dict]:
    """The CapabilityStatement's `operation` entries of a type."""
    return [{"name": name.lstrip("$"), "definition": url}
            for (rtype, name), url in sorted(DEFINITIONS.items()) if rtype == resource_type]
