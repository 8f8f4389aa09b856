"""Break-the-glass needs a reason, whatever is asked; unknown purposes are refused; refusal comes first."""

from __future__ import annotations

import pytest

from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.emergency import purpose_refusal
from tests.fhirclient import DOCTOR, json_of, patient, written

KINE = {"actor": "professional", "sub": "810009876543", "profession": "70"}


def _versions(database) -> int:  # type: ignore[no-untyped-def]
    return written(database)


def _requests(client, pid: str):  # type: ignore[no-untyped-def]
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": patient("2990175123456"), "request": {"method": "POST", "url": "Patient"}}]}
    return [
        lambda c: c.get(f"Patient/{pid}"),
        lambda c: c.get("DocumentReference?patient=" + pid),
        lambda c: c.post("Patient", patient("2990175123457")),
        lambda c: c.post("", bundle),
        lambda c: c.get(f"Patient/{pid}/_history"),
    ]


@pytest.mark.parametrize("who", [DOCTOR, KINE], ids=["medecin", "kine"])
@pytest.mark.parametrize("reason", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_break_the_glass_without_a_reason_is_400_and_writes_nothing(client, database, who, reason):
    pid = json_of(client.post("Patient", patient()))["id"]
    before = _versions(database)
    caller = client.as_(**who, purpose_of_use="BTG", **({"access_reason": reason} if reason is not None else {}))
    for call in _requests(client, pid):
        response = call(caller)
        assert response.status_code == 400, response.data
        issue = json_of(response)["issue"][0]
        assert issue["code"] == "required" and "access_reason" in issue["diagnostics"]
    assert _versions(database) == before


@pytest.mark.parametrize("who", [DOCTOR, KINE], ids=["medecin", "kine"])
def test_break_the_glass_with_a_reason_goes_through(client, who):
    pid = json_of(client.post("Patient", patient()))["id"]
    caller = client.as_(**who, purpose_of_use="BTG", access_reason="Patient inconscient aux urgences")
    assert caller.get(f"Patient/{pid}").status_code == 200
    assert caller.post("Patient", patient("2990175123458")).status_code == 201


@pytest.mark.parametrize("refused", [{"actor": "insurer", "sub": "x"},
                                     {"actor": "professional", "sub": "y", "profession": "10", "specialty": "SM25"}])
def test_a_refused_actor_gets_403_before_the_missing_reason(client, refused):
    response = client.as_(**refused, purpose_of_use="BTG").get("Patient")
    assert response.status_code == 403
    assert json_of(response)["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize("purpose,reason,expected", [
    ("TREAT", None, None), ("ETREAT", None, None), ("BTG", "urgence vitale", None),
    ("BTG", None, "required"), ("BTG", " ", "required"), ("HACK", None, "value"), ("btg", "x", "value"),
])
def test_purpose_refusal_rules(purpose, reason, expected):
    refusal = purpose_refusal(Caller("professional", "1", "10", purpose_of_use=purpose, access_reason=reason))
    assert (refusal.issues[0].code if refusal else None) == expected
    if refusal:
        assert refusal.status == 400
