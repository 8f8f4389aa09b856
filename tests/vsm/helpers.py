"""VSM shapes for the tests: a Composition conforming to dmp-vsm and section entries of the patient summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_dmp.policy.consents import IDNATPS
from fhir_dmp.terminology.classes import TRE_A03

LOINC = "http://loinc.org"
REQUIRED = (("11450-4", "Problèmes"), ("48765-2", "Allergies"), ("10160-0", "Traitements"),
            ("47519-4", "Actes"), ("46264-8", "Dispositifs médicaux"))
EMPTY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "unavailable"}]}


def vsm(patient_id: str, entries: dict[str, list[str]] | None = None, **extra: Any) -> dict:
    """A VSM of `patient_id`; `entries`: section LOINC code -> references (a section without any gets an
    emptyReason)."""
    entries = entries or {}
    sections = []
    for code, title in REQUIRED:
        section: dict = {"title": title, "code": {"coding": [{"system": LOINC, "code": code}]},
                         "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{title}</div>'}}
        if entries.get(code):
            section["entry"] = [{"reference": r} for r in entries[code]]
        else:
            section["emptyReason"] = EMPTY
        sections.append(section)
    return {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [{"system": LOINC, "code": "60591-5"}]},
        "category": [{"coding": [{"system": TRE_A03, "code": "11"}]}],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "author": [{"type": "Practitioner", "identifier": {"system": IDNATPS, "value": "810001234567"}}],
        "title": "Volet de synthèse médicale",
        "confidentiality": "N",
        "custodian": {"type": "Organization", "identifier": {"system": "urn:oid:1.2.250.1.71.4.2.2",
                                                             "value": "1750000000"}},
        "section": sections,
        **extra,
    }


def condition(patient_id: str, text: str = "Hypertension artérielle", **extra: Any) -> dict:
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient_id}"},
            "code": {"text": text}, **extra}


def allergy(patient_id: str, text: str = "Pénicilline") -> dict:
    return {"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{patient_id}"},
            "code": {"text": text}}
