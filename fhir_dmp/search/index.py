"""Index values of a resource, computed at write time in the same transaction."""

from __future__ import annotations

from fhir_dmp.storage.repository import TokenValue

# Element names holding business identifiers, per type (R4 `identifier` search parameter paths).
_IDENTIFIER_PATHS: dict[str, tuple[str, ...]] = {
    "DocumentReference": ("masterIdentifier", "identifier"),
}


def token_values(resource_type: str, resource: dict) -> list[TokenValue]:
    values: list[TokenValue] = []
    for path in _IDENTIFIER_PATHS.get(resource_type, ("identifier",)):
        found = resource.get(path)
        for ident in found if isinstance(found, list) else [found]:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                system = ident.get("system") if isinstance(ident.get("system"), str) else ""
                values.append(TokenValue("identifier", system, ident["value"]))
    return values
