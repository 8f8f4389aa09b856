"""SMART discovery without an issuer: the development server has no authorization server to name."""

from __future__ import annotations

from tests.fhirclient import json_of


def test_without_an_issuer_smart_configuration_is_404_and_metadata_names_no_smart(client):  # type: ignore[no-untyped-def]
    answer = client.get("/fhir/.well-known/smart-configuration", auth=False)
    assert answer.status_code == 404
    assert json_of(answer)["resourceType"] == "OperationOutcome"
    security = json_of(client.get("/fhir/metadata", auth=False))["rest"][0]["security"]
    assert "SMART-on-FHIR" not in [c["code"] for s in security["service"] for c in s["coding"]]
    assert "extension" not in security
