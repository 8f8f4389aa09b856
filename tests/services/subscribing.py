"""Helpers of the subscription tests: Subscription bodies, a world with a DMP and its professionals, a worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.policy.consents import authorisation
from fhir_dmp.services.delivery import Worker
from tests.conftest import SECRET
from tests.fhirclient import DOCTOR, FhirTestClient, json_of, patient
from tests.receiver import Receiver

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/DSUBm-SubscriptionTopic-"
DOC_TOPIC = TOPIC + "DocumentReference-PatientDependent"
DOC_TOPIC_MULTI = TOPIC + "DocumentReference-MultiPatient"
SS_TOPIC = TOPIC + "SubmissionSet-PatientDependent"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
KINE = {"actor": "professional", "sub": "810000000171", "profession": "70"}
OTHER_DOCTOR = {"actor": "professional", "sub": "810000000999", "profession": "10"}
INS = "1800175123456"
PATIENT = {"actor": "patient", "sub": INS, "patient": INS}


def subscription(endpoint: str, filter_: str, *, topic: str = DOC_TOPIC, content: str = "id-only",
                 heartbeat: int | None = None, channel_header: list[str] | None = None, **extra: Any) -> dict:
    channel: dict = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                     "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]}}
    if channel_header is not None:
        channel["header"] = channel_header
    if heartbeat is not None:
        channel["extension"] = [{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    return {"resourceType": "Subscription", "status": "requested", "reason": "tests", "criteria": topic,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": filter_}]},
            "channel": channel, **extra}


def masked(**extra: Any) -> dict:
    return {"securityLabel": [{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}], **extra}


def block(pid: str, ps: str) -> dict:
    consent = authorisation(pid, ps)
    consent["provision"]["type"] = "deny"
    consent["policyRule"]["coding"][0]["code"] = "OPTOUT"
    return consent


@dataclass
class World:
    client: FhirTestClient  # the system
    pid: str
    worker: Worker

    def as_(self, claims: dict) -> FhirTestClient:
        return self.client.as_(**claims)

    def subscribe(self, who: dict, endpoint: str, filter_: str | None = None, **kw: Any) -> str:
        response = self.as_(who).post("Subscription", subscription(endpoint, filter_ or
                                                                   f"DocumentReference?patient=Patient/{self.pid}",
                                                                   **kw))
        assert response.status_code == 201, response.data
        return json_of(response)["id"]

    def status(self, sid: str) -> str:
        return json_of(self.client.get(f"Subscription/{sid}"))["status"]

    def deliver(self, rounds: int = 5) -> None:
        """Run the worker until it has nothing due (or `rounds` rounds)."""
        for _ in range(rounds):
            if not self.worker.run_once():
                return

    def deliver_until(self, predicate: Any, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            assert time.monotonic() < deadline, "the worker did not deliver in time"
            self.worker.run_once()
            time.sleep(0.05)


def subscription_settings(database: Any, **overrides: Any) -> Settings:
    return Settings(database_url=database.url, jwt_secret=SECRET, subscription_endpoints="http://127.0.0.1",
                    subscription_retry_base=0.05, subscription_max_failures=3, **overrides)


@pytest.fixture
def world(database: Any) -> World:
    app = create_app(subscription_settings(database), database=database)
    client = FhirTestClient(app.test_client(), SECRET)
    response = client.post("Patient", patient(INS))
    assert response.status_code == 201, response.data
    pid = json_of(response)["id"]
    for who in (DOCTOR, KINE):
        assert client.post("Consent", authorisation(pid, who["sub"])).status_code == 201
    return World(client, pid, Worker(app.extensions["fhir_dmp"]["pipeline"].rt))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r
