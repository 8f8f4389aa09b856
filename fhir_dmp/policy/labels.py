"""Visibility labels (TRE_A07, dmp-reference.md 3 and 6) as the bits stored on each row."""

from __future__ import annotations

from collections.abc import Iterable

TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
MASQUE_PS = 1  # hidden from professionals but its depositor, the médecin traitant and those granted it
INVISIBLE_PATIENT = 2  # hidden from the patient until explained (or one month after the document's date)
INVISIBLE_REPRESENTANTS_LEGAUX = 4  # hidden from legal representatives (a minor's secret connection)
BITS = {"MASQUE_PS": MASQUE_PS, "INVISIBLE_PATIENT": INVISIBLE_PATIENT,
        "INVISIBLE_REPRESENTANTS_LEGAUX": INVISIBLE_REPRESENTANTS_LEGAUX}


def codings(resource_type: str, resource: dict) -> list[dict]:
    """The security codings of a resource: DocumentReference.securityLabel, and meta.security of any type."""
    found: list[dict] = []
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("security"), list):
        found += [c for c in meta["security"] if isinstance(c, dict)]
    if resource_type == "DocumentReference" and isinstance(resource.get("securityLabel"), list):
        for concept in resource["securityLabel"]:
            if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
                found += [c for c in concept["coding"] if isinstance(c, dict)]
    return found


def bits_of(items: Iterable[dict]) -> int:
    """TRE_A07 codes -> bits; a known code under another system counts too (clients mix up systems,
    and a label read too strictly would show a document the patient meant to hide)."""
    bits = 0
    for coding in items:
        code = coding.get("code")
        if isinstance(code, str) and code in BITS:
            bits |= BITS[code]
    return bits


def add_label(resource_type: str, resource: dict, code: str) -> dict:
    """The resource with the TRE_A07 `code` among its labels (a minor's secret connection adds one)."""
    coding = {"system": TRE_A07, "code": code}
    if bits_of(codings(resource_type, resource)) & BITS[code]:
        return resource
    if resource_type == "DocumentReference":
        return {**resource, "securityLabel": [*resource.get("securityLabel", []), {"coding": [coding]}]}
    meta = dict(resource.get("meta") or {})
    meta["security"] = [*meta.get("security", []), coding]
    return {**resource, "meta": meta}
