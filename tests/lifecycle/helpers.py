"""A DMP with every kind of caller around it, for the lifecycle tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fhir_dmp.policy.consents import IDNATPS, authorisation
from tests.fhirclient import FhirTestClient, json_of, patient

TREATING, AUTHORISED, OTHER = "810000000201", "810000000202", "810000000203"


def new_ins() -> str:
    return str(uuid.uuid4().int)[:13]


def close_body(reason: str = "Demande du patient") -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]}


@dataclass
class Dmp:
    pid: str
    ins: str
    callers: dict[str, FhirTestClient]


def callers(client: FhirTestClient, ins: str) -> dict[str, FhirTestClient]:
    """Every kind of caller, by name: those with a standing in the DMP of `ins` and those without."""
    def pro(sub: str, **extra: Any) -> FhirTestClient:
        return client.as_(actor="professional", sub=sub, profession="10", specialty="SM26", **extra)
    other_ins = new_ins()
    return {
        "system": client,
        "patient": client.as_(actor="patient", sub=ins, patient=ins),
        "representative": client.as_(actor="representative", sub="rep-" + ins, patient=ins),
        "treating": pro(TREATING),
        "authorised": pro(AUTHORISED),
        "other": pro(OTHER),
        "emergency": pro(OTHER, purpose_of_use="BTG", access_reason="patient inconscient"),
        "regulation": pro(OTHER, purpose_of_use="ETREAT"),
        "other-patient": client.as_(actor="patient", sub=other_ins, patient=other_ins),
        "insurer": client.as_(actor="insurer", sub="cpam-75"),
        "occupational": client.as_(actor="professional", sub="810000000299", profession="10", specialty="SM25"),
    }


def new_dmp(client: FhirTestClient, **extra: Any) -> Dmp:
    """An open DMP whose médecin traitant is TREATING and where AUTHORISED has the patient's authorisation."""
    ins = new_ins()
    body = patient(ins, generalPractitioner=[{"identifier": {"system": IDNATPS, "value": TREATING}}], **extra)
    created = client.post("Patient", body)
    assert created.status_code == 201, created.data
    pid = json_of(created)["id"]
    assert client.post("Consent", authorisation(pid, AUTHORISED)).status_code == 201
    return Dmp(pid, ins, callers(client, ins))


def outcome(response: Any, status: int) -> dict:
    """The response is `status` with an OperationOutcome; returns it."""
    assert response.status_code == status, (response.status_code, response.data)
    body = json_of(response)
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body
