"""Reading codes out of a resource's CodeableConcepts, and the document class (TRE_A03) a document declares:
one reader for the access facts (policy) and the type/class rule (validation), which sit side by side above
this layer."""

from __future__ import annotations

TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"


def codings(concept: object) -> list[dict]:
    """The codings of a CodeableConcept, whatever shape the JSON has (anything else: none)."""
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        return []
    return [c for c in concept["coding"] if isinstance(c, dict)]


def declared_classes(document: dict) -> set[str]:
    """The TRE_A03 class codes a DocumentReference declares in `category`."""
    categories = document.get("category") if isinstance(document.get("category"), list) else []
    return {c["code"] for concept in categories for c in codings(concept)
            if c.get("system") == TRE_A03 and isinstance(c.get("code"), str)}
