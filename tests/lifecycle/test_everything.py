"""`Patient/[id]/$everything` (R4 Patient-everything): the whole DMP as the caller may see it, paged by cursors,
the access scope in the statement (dmp-reference.md 6: the rules apply to operations as to searches)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fhirclient import FhirTestClient, attachment, document, json_of
from tests.lifecycle.helpers import close_body, new_dmp, outcome

TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"


def _labelled(pid: str, label: str | None, days_ago: int = 0) -> dict:
    date = (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = [{"coding": [{"system": TRE_A07, "code": label}]}] if label else None
    return document(pid, date=date, **({"securityLabel": labels} if labels else {}))


def _world(client: FhirTestClient) -> tuple[Any, dict[str, str]]:
    """A DMP holding one document of each visibility, filed by the system back office, and a Binary of the masked
    one; its resources by name ('Type/id')."""
    dmp = new_dmp(client)
    names: dict[str, str] = {"patient": f"Patient/{dmp.pid}"}
    for name, label, age in (("plain", None, 0), ("inv_patient", "INVISIBLE_PATIENT", 0),
                             ("inv_patient_old", "INVISIBLE_PATIENT", 40),
                             ("inv_rep", "INVISIBLE_REPRESENTANTS_LEGAUX", 0), ("masked", "MASQUE_PS", 0)):
        response = client.post("DocumentReference", _labelled(dmp.pid, label, age))
        assert response.status_code == 201, response.data
        names[name] = f"DocumentReference/{json_of(response)['id']}"
    binary = client.post("Binary", {"resourceType": "Binary", "contentType": "text/plain",
                                    "securityContext": {"reference": names["masked"]},
                                    "data": attachment(b"masque")["data"]})
    names["masked_bytes"] = f"Binary/{json_of(binary)['id']}"
    return dmp, names


def _everything(caller: FhirTestClient, pid: str, query: str = "") -> tuple[list[str], dict]:
    response = caller.get(f"Patient/{pid}/$everything{query}")
    assert response.status_code == 200, response.data
    bundle = json_of(response)
    assert bundle["type"] == "searchset"
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"], bundle


def _walk(caller: FhirTestClient, pid: str, count: int) -> list[str]:
    """Every page, by the `next` links."""
    seen, bundle = _everything(caller, pid, f"?_count={count}")
    pages = 1
    while (nxt := next((lnk["url"] for lnk in bundle["link"] if lnk["relation"] == "next"), None)) is not None:
        response = caller.get(nxt.split("/fhir/", 1)[1])
        assert response.status_code == 200, response.data
        bundle = json_of(response)
        assert len(bundle.get("entry", [])) <= count
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])]
        pages += 1
    assert pages >= len(seen) // count
    return seen


def test_each_caller_gets_what_they_may_see(client):
    dmp, names = _world(client)
    everything, bundle = _everything(client, dmp.pid, "?_count=100")
    assert bundle["total"] == len(everything)
    assert set(names.values()) <= set(everything)
    assert not [r for r in everything if r.startswith("AuditEvent/")]  # the traces: AuditEvent?patient=
    assert everything[0] == names["patient"]
    hidden = {
        "patient": {"inv_patient"},
        "representative": {"inv_patient", "inv_rep"},
    }
    for who, unseen in hidden.items():
        seen, bundle = _everything(dmp.callers[who], dmp.pid, "?_count=100")
        assert set(seen) == set(everything) - {names[n] for n in unseen}, who
        assert bundle["total"] == len(seen)
    # a professional: their habilitated view (no masked document, nor its bytes; no Consent filed by others)
    seen, _ = _everything(dmp.callers["authorised"], dmp.pid, "?_count=100")
    assert set(seen) == {names[n] for n in ("patient", "plain", "inv_patient", "inv_patient_old", "inv_rep")}
    seen, _ = _everything(dmp.callers["treating"], dmp.pid, "?_count=100")
    assert {names["masked"], names["masked_bytes"]} <= set(seen)
    seen, _ = _everything(dmp.callers["emergency"], dmp.pid, "?_count=100")
    assert names["plain"] in seen and names["masked"] not in seen


@pytest.mark.parametrize(("who", "status"), [("other", 403), ("other-patient", 403), ("insurer", 403),
                                             ("occupational", 403)])
def test_callers_without_standing_are_refused(client, who, status):
    dmp = new_dmp(client)
    outcome(dmp.callers[who].get(f"Patient/{dmp.pid}/$everything"), status)


def test_a_closed_dmp_is_the_patients_only(client):
    dmp, names = _world(client)
    assert dmp.callers["patient"].post(f"Patient/{dmp.pid}/$close", close_body()).status_code == 200
    outcome(dmp.callers["treating"].get(f"Patient/{dmp.pid}/$everything"), 403)
    seen, _ = _everything(dmp.callers["patient"], dmp.pid)
    assert names["plain"] in seen


@pytest.mark.parametrize("who", ["system", "patient", "representative"])
def test_paging_walks_every_resource_once(client, who):
    dmp, _ = _world(client)
    whole, bundle = _everything(dmp.callers[who], dmp.pid, "?_count=1000")
    walked = _walk(dmp.callers[who], dmp.pid, 2)
    assert walked == whole and len(set(walked)) == len(walked)
    # a document filed meanwhile shows up at the end of the walk, nothing repeats
    first, page = _everything(dmp.callers[who], dmp.pid, "?_count=3")
    assert client.post("DocumentReference", _labelled(dmp.pid, None)).status_code == 201
    nxt = next(lnk["url"] for lnk in page["link"] if lnk["relation"] == "next")
    rest = []
    while nxt:
        got = json_of(dmp.callers[who].get(nxt.split("/fhir/", 1)[1]))
        rest += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in got.get("entry", [])]
        nxt = next((lnk["url"] for lnk in got["link"] if lnk["relation"] == "next"), None)
    assert first + rest[:len(whole) - 3] == whole and len(rest) == len(whole) - 3 + 1


def test_type_since_and_count(client):
    dmp, names = _world(client)
    patient = dmp.callers["patient"]
    docs, bundle = _everything(patient, dmp.pid, "?_type=DocumentReference,Binary&_count=100")
    assert set(docs) == {names[n] for n in ("plain", "inv_patient_old", "inv_rep", "masked", "masked_bytes")}
    assert bundle["total"] == 5
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    none, bundle = _everything(patient, dmp.pid, f"?_since={future}")
    assert none == [] and bundle["total"] == 0
    counted, bundle = _everything(patient, dmp.pid, "?_count=0")
    assert counted == [] and bundle["total"] > 0
    posted = patient.post(f"Patient/{dmp.pid}/$everything", {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"}]})
    assert posted.status_code == 200, posted.data
    assert [e["resource"]["id"] for e in json_of(posted)["entry"]] == [dmp.pid]


@pytest.mark.parametrize("query", ["_type=AuditEvent", "_type=Nothing", "_since=2020-01-01", "_since=yesterday",
                                   "_count=-1", "_cursor=garbage", "start=2020-01-01", "end=2020-01-01"])
def test_bad_parameters(client, query):
    dmp = new_dmp(client)
    outcome(dmp.callers["patient"].get(f"Patient/{dmp.pid}/$everything?{query}"), 400)


def test_unknown_parameters_follow_the_handling_preference(client):
    dmp = new_dmp(client)
    patient = dmp.callers["patient"]
    _, bundle = _everything(patient, dmp.pid, "?foo=bar")
    warnings = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert warnings and "foo" in warnings[0]["issue"][0]["diagnostics"]
    outcome(patient.get(f"Patient/{dmp.pid}/$everything?foo=bar", headers={"Prefer": "handling=strict"}), 400)
    outcome(patient.get("Patient/$everything"), 400)
    outcome(client.get("Patient/nobody/$everything"), 404)
    outcome(patient.delete(f"Patient/{dmp.pid}/$everything"), 405)
