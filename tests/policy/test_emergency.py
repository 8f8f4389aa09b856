"""Break-the-glass needs a reason, whatever is asked; unknown purposes are refused; refusal comes first."""

from __future__ import annotations

import pytest

from fhir_dmp.policy.caller import Caller
from fhir_dmp.policy.emergency import purpose_refusal
from tests.fhirclient import DOCTOR, document, json_of, patient, written
from tests.mhd.helpers import new_ins
from tests.policy.test_access_table import TRE_A07, consent

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


@pytest.mark.parametrize("refused", [{"actor": "insurer", "sub": "x"}, {"actor": "professional", "sub": "810000000025",
                                                                       "profession": "10", "specialty": "SM25"}])
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


# -- 6.5: a personal MASQUE_PS grant follows its professional into an emergency mode ------------------------------

GRANTED = {"actor": "professional", "sub": "810000000105", "profession": "10"}
COLLEAGUE = {"actor": "professional", "sub": "810000000106", "profession": "10"}
EMERGENCIES = {"BTG": {"purpose_of_use": "BTG", "access_reason": "Patient inconscient aux urgences"},
               "ETREAT": {"purpose_of_use": "ETREAT"}}


def _masked_dmp(client, *consents_of):  # type: ignore[no-untyped-def]
    """(pid, id of a MASQUE_PS consultation report, id of a plain one) in a new DMP with `consents_of(pid)`."""
    pid = json_of(client.post("Patient", patient(new_ins())))["id"]
    for make in consents_of:
        assert client.post("Consent", make(pid)).status_code == 201
    masked = json_of(client.post("DocumentReference", document(
        pid, securityLabel=[{"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}])))["id"]
    plain = json_of(client.post("DocumentReference", document(pid)))["id"]
    return pid, masked, plain


def _grant(who: dict):  # type: ignore[no-untyped-def]
    return lambda pid: consent(pid, "permit", actor=who["sub"], label="MASQUE_PS")


def _seen(caller, pid: str) -> set[str]:  # type: ignore[no-untyped-def]
    response = caller.get(f"DocumentReference?patient={pid}")
    assert response.status_code == 200, response.data
    entries = json_of(response).get("entry", [])
    return {e["resource"]["id"] for e in entries if e.get("search", {}).get("mode") != "include"}


@pytest.mark.parametrize("mode", sorted(EMERGENCIES))
def test_a_masked_grant_is_seen_in_an_emergency_mode(client, mode):
    pid, masked, plain = _masked_dmp(client, _grant(GRANTED))
    granted = client.as_(**GRANTED, **EMERGENCIES[mode])
    assert _seen(granted, pid) == {masked, plain}
    assert granted.get(f"DocumentReference/{masked}").status_code == 200
    # a colleague in the same mode, not granted: the masked document is absent (404), the plain one there
    colleague = client.as_(**COLLEAGUE, **EMERGENCIES[mode])
    assert _seen(colleague, pid) == {plain}
    assert colleague.get(f"DocumentReference/{masked}").status_code == 404


def test_the_grant_does_not_open_the_dmp_by_itself(client):
    """6.5: the grant is no authorisation (6.3 still applies): in TREAT without one, 403."""
    pid, masked, _ = _masked_dmp(client, _grant(GRANTED))
    assert client.as_(**GRANTED).get(f"DocumentReference/{masked}").status_code == 403
    assert client.as_(**GRANTED).get(f"DocumentReference?patient={pid}").status_code == 403


@pytest.mark.parametrize("mode", sorted(EMERGENCIES))
def test_the_grant_does_not_lift_an_opposition_to_the_mode(client, mode):
    pid, masked, _ = _masked_dmp(client, _grant(GRANTED), lambda pid: consent(pid, "deny", purpose=mode))
    caller = client.as_(**GRANTED, **EMERGENCIES[mode])
    assert caller.get(f"DocumentReference/{masked}").status_code == 403
    assert caller.get(f"DocumentReference?patient={pid}").status_code == 403


def test_a_grant_in_another_dmp_or_to_another_professional_shows_nothing_masked(client):
    _, _, _ = _masked_dmp(client, _grant(GRANTED))  # granted there, not here
    pid, masked, plain = _masked_dmp(client, _grant(COLLEAGUE))
    granted = client.as_(**GRANTED, **EMERGENCIES["BTG"])
    assert _seen(granted, pid) == {plain}
    assert granted.get(f"DocumentReference/{masked}").status_code == 404


def test_a_blocked_grantee_sees_nothing_even_in_an_emergency(client):
    pid, masked, _ = _masked_dmp(client, _grant(GRANTED), lambda pid: consent(pid, "deny", actor=GRANTED["sub"]))
    caller = client.as_(**GRANTED, **EMERGENCIES["BTG"])
    assert caller.get(f"DocumentReference/{masked}").status_code == 403
