"""Traces and notifications (dmp-reference.md 7; docs/access-policy.md, Traces and Notifications).

Every interaction leaves exactly one AuditEvent per DMP it touched (allowed or refused), the traces cannot be
changed over the API, each reader sees the traces the policy lets them see, the hash chains reveal any change
made behind the server's back (`fhir-dmp audit verify`), concurrent writers keep every chain whole, and a
professional's first access and every emergency access become a Communication (and a webhook call).

The traces are inspected in the database, never over the API: reading them over the API leaves one more.
Every test runs on SQLite and, when FHIR_DMP_TEST_POSTGRES_URL is set, on PostgreSQL too.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update

from fhir_dmp import fhirjson
from fhir_dmp.cli import main
from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.policy import consents
from fhir_dmp.services import audit
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from fhir_dmp.storage.records import GENESIS
from fhir_dmp.storage.tables import INDEX_TABLES, audit_chain, dmp_accessor, resource, resource_version
from tests.conftest import SECRET, _empty
from tests.fhirclient import DOCTOR, SYSTEM, FhirTestClient, document, json_of, patient, written
from tests.parallel import THREADS, TIMEOUT, in_parallel

IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
IDNATPS = "urn:oid:1.2.250.1.71.4.2.1"
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
TRE_A07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
NOTIFICATION = {"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "notification"}

INS_A, INS_B = "1800175123456", "2850275123457"
GP = {"actor": "professional", "sub": "810000000001", "profession": "10", "specialty": "SM26"}  # A's médecin traitant
STRANGER = {"actor": "professional", "sub": "810000000099", "profession": "10", "specialty": "SM26"}  # not authorised
KINE = {"actor": "professional", "sub": "810000000070", "profession": "70"}
NEWCOMER = {"actor": "professional", "sub": "810000000042", "profession": "10", "specialty": "SM26"}
PATIENT_A = {"actor": "patient", "sub": INS_A, "patient": INS_A}
REPRESENTATIVE_A = {"actor": "representative", "sub": "rep-0001", "patient": INS_A}
PATIENT_B = {"actor": "patient", "sub": INS_B, "patient": INS_B}
INSURER = {"actor": "insurer", "sub": "CPAM-75"}
BTG_REASON = "Patient inconscient aux urgences"
PATIENCE = 15.0  # seconds a background webhook call may take to arrive


# -- the world ------------------------------------------------------------------------------------------
def created(response: Any) -> str:
    assert response.status_code == 201, response.data
    return json_of(response)["id"]


def authorisation(pid: str, ps: str) -> dict:
    """The patient's authorisation of professional `ps` (docs/access-policy.md, Consent shapes)."""
    return consents.authorisation(pid, ps)


def transaction(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource_: dict) -> dict:
    return {"resource": resource_, "request": {"method": "POST", "url": resource_["resourceType"]}}


@dataclass(frozen=True)
class World:
    pid: str  # A's DMP: GP is the médecin traitant, DOCTOR is authorised
    qid: str  # B's DMP
    doc: str  # a DocumentReference DOCTOR deposited in A's DMP
    masked: str  # a MASQUE_PS DocumentReference the system deposited there (DOCTOR may not see it)


def build_world(client: FhirTestClient) -> World:
    pid = created(client.post("Patient", patient(INS_A, generalPractitioner=[
        {"identifier": {"system": IDNATPS, "value": GP["sub"]}}])))
    qid = created(client.post("Patient", patient(INS_B, name=[{"family": "DURAND", "given": ["Paul"]}])))
    created(client.post("Consent", authorisation(pid, DOCTOR["sub"])))
    doc = created(client.as_(**DOCTOR).post("DocumentReference", document(pid)))
    masked = created(client.post("DocumentReference", document(pid, securityLabel=[
        {"coding": [{"system": TRE_A07, "code": "MASQUE_PS"}]}])))
    return World(pid, qid, doc, masked)


@pytest.fixture
def world(client: FhirTestClient) -> World:
    return build_world(client)


# -- reading the store directly ---------------------------------------------------------------------------
def stored(database: Database, resource_type: str = "AuditEvent",
           key: str | None = None) -> list[tuple[int, str, dict]]:
    """(version pk, chain/patient key, body) of every stored version of a type, oldest first."""
    query = (select(resource_version.c.pk, resource_version.c.patient_key, resource_version.c.content)
             .where(resource_version.c.resource_type == resource_type).order_by(resource_version.c.pk))
    if key is not None:
        query = query.where(resource_version.c.patient_key == key)
    with database.engine.connect() as conn:
        return [(r.pk, r.patient_key, fhirjson.loads(r.content)) for r in conn.execute(query)]


def events_of(database: Database, key: str | None = None) -> list[dict]:
    return [body for _, _, body in stored(database, "AuditEvent", key)]


def new_events(database: Database, before: int) -> list[tuple[str, dict]]:
    """(chain, AuditEvent) written since `before` (a version pk)."""
    return [(key, body) for pk, key, body in stored(database) if pk > before]


def last_pk(database: Database) -> int:
    rows = stored(database)
    return rows[-1][0] if rows else 0


def communications(database: Database, key: str) -> list[dict]:
    return [body for _, _, body in stored(database, "Communication", key)]


def references(event: dict) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if "what" in e]


def chain_link(event: dict) -> tuple[int, str]:
    ext = next(x for x in event["extension"] if x["url"] == audit.CHAIN_URL)
    link = {e["url"]: e for e in ext["extension"]}
    return link["sequence"]["valueInteger"], link["previous"]["valueString"]


def check_agent(event: dict, caller: dict) -> None:
    (agent,) = event["agent"]
    who = agent["who"]["identifier"]
    assert who["value"] == caller["sub"]
    if caller["actor"] == "professional":
        assert who["system"] == IDNATPS
        assert agent["role"] == [{"coding": [{"system": TRE_G15, "code": caller["profession"]}]}]
    else:
        assert "system" not in who and "role" not in agent
    (purpose,) = agent["purposeOfUse"]
    assert purpose["coding"] == [{"system": ACT_REASON, "code": caller.get("purpose_of_use", "TREAT")}]
    assert purpose.get("text") == caller.get("access_reason")


def check_event(event: dict, *, caller: dict, subtype: str, action: str, outcome: str, patient_id: str,
                touched: list[str]) -> None:
    """The shape of one trace (docs/access-policy.md, Traces)."""
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "rest"
    assert event["subtype"] == [{"system": RESTFUL, "code": subtype}]
    assert event["action"] == action
    assert event["outcome"] == outcome
    assert ("outcomeDesc" in event) == (outcome != "0")
    if outcome != "0":
        assert event["outcomeDesc"].strip()
    assert event["recorded"].endswith("Z")
    assert event["source"]["observer"]["display"] == "fhir-dmp"
    check_agent(event, caller)
    expected = ([f"Patient/{patient_id}"] if patient_id else []) + touched
    assert references(event) == expected
    if patient_id:
        assert event["entity"][0]["type"]["code"] == "1"  # the patient, as a person


# -- 1. one AuditEvent per interaction -----------------------------------------------------------------------
def _located(response: Any) -> str:
    """`Type/id/_history/n` of what a create or update wrote (its Location)."""
    return response.headers["Location"].split("/fhir/", 1)[1]


def _in_bundle(response: Any) -> str:
    (entry,) = json_of(response)["entry"]
    return entry["response"]["location"].split("/fhir/", 1)[-1]


Call = Callable[[FhirTestClient, World], Any]
Touched = Callable[[World, Any], list[str]]

# interaction -> (caller, request, status, action, what it touched besides the Patient)
INTERACTIONS: dict[str, tuple[dict, Call, int, str, Touched]] = {
    "read": (DOCTOR, lambda c, w: c.get(f"DocumentReference/{w.doc}"), 200, "R",
             lambda w, r: [f"DocumentReference/{w.doc}"]),
    "vread": (DOCTOR, lambda c, w: c.get(f"DocumentReference/{w.doc}/_history/1"), 200, "R",
              lambda w, r: [f"DocumentReference/{w.doc}"]),
    "create": (DOCTOR, lambda c, w: c.post("DocumentReference", document(w.pid)), 201, "C",
               lambda w, r: [_located(r)]),
    "update": (DOCTOR, lambda c, w: c.put(f"DocumentReference/{w.doc}",
                                          {**document(w.pid), "id": w.doc, "description": "compte rendu revu"}),
               200, "U", lambda w, r: [f"DocumentReference/{w.doc}", f"DocumentReference/{w.doc}/_history/2"]),
    "patch": (DOCTOR, lambda c, w: c.patch(f"DocumentReference/{w.doc}",
                                           [{"op": "replace", "path": "/status", "value": "entered-in-error"}]),
              200, "U", lambda w, r: [f"DocumentReference/{w.doc}", f"DocumentReference/{w.doc}/_history/2"]),
    "delete": (DOCTOR, lambda c, w: c.delete(f"DocumentReference/{w.doc}"), 204, "D",
               lambda w, r: [f"DocumentReference/{w.doc}", f"DocumentReference/{w.doc}/_history/2"]),
    "search-type": (DOCTOR, lambda c, w: c.get(f"DocumentReference?patient={w.pid}"), 200, "E", lambda w, r: []),
    "history-instance": (DOCTOR, lambda c, w: c.get(f"DocumentReference/{w.doc}/_history"), 200, "R",
                         lambda w, r: [f"DocumentReference/{w.doc}"]),
    "history-type": (PATIENT_A, lambda c, w: c.get("DocumentReference/_history"), 200, "R", lambda w, r: []),
    "transaction": (DOCTOR, lambda c, w: c.post("/fhir", transaction(post_entry(document(w.pid)))), 200, "E",
                    lambda w, r: [_in_bundle(r)]),
}


@pytest.mark.parametrize("interaction", list(INTERACTIONS))
def test_every_interaction_leaves_exactly_one_audit_event(client, database, world, interaction):
    caller, call, status, action, touched = INTERACTIONS[interaction]
    before = last_pk(database)
    response = call(client.as_(**caller), world)
    assert response.status_code == status, response.data
    new = new_events(database, before)
    assert len(new) == 1, [e["subtype"] for _, e in new]
    (key, event) = new[0]
    assert key == world.pid
    check_event(event, caller=caller, subtype=interaction, action=action, outcome="0", patient_id=world.pid,
                touched=touched(world, response))
    queries = [e for e in event.get("entity", []) if "query" in e]
    if interaction == "search-type":
        (query,) = queries
        assert query["type"]["code"] == "2"
        assert base64.b64decode(query["query"]).decode() == f"DocumentReference?patient={world.pid}"
    else:
        assert queries == []


@pytest.mark.parametrize("caller", [
    DOCTOR,
    {**STRANGER, "purpose_of_use": "ETREAT"},
    {**STRANGER, "purpose_of_use": "BTG", "access_reason": BTG_REASON},
    {**KINE, "purpose_of_use": "BTG", "access_reason": BTG_REASON},
], ids=["treat", "etreat", "btg-medecin", "btg-kine"])
def test_the_agent_carries_the_purpose_of_use_and_the_reason(client, database, world, caller):
    before = last_pk(database)
    assert client.as_(**caller).get(f"Patient/{world.pid}").status_code == 200
    ((key, event),) = new_events(database, before)
    assert key == world.pid
    check_event(event, caller=caller, subtype="read", action="R", outcome="0", patient_id=world.pid, touched=[])


# refused interaction -> (caller, request, status, the chain it lands on ('' = the server's), touched)
REFUSALS: dict[str, tuple[dict, Call, int, Callable[[World], str], Callable[[World], list[str]]]] = {
    "insurer": (INSURER, lambda c, w: c.get(f"Patient/{w.pid}"), 403, lambda w: "", lambda w: []),
    "occupational-physician": ({**STRANGER, "specialty": "SM25"}, lambda c, w: c.get(f"Patient/{w.pid}"), 403,
                               lambda w: "", lambda w: []),
    "btg-without-reason": ({**STRANGER, "purpose_of_use": "BTG"}, lambda c, w: c.get(f"Patient/{w.pid}"), 400,
                           lambda w: "", lambda w: []),
    "unauthorised-professional": (STRANGER, lambda c, w: c.get(f"Patient/{w.pid}"), 403, lambda w: w.pid,
                                  lambda w: []),
    "masked-document": (DOCTOR, lambda c, w: c.get(f"DocumentReference/{w.masked}"), 404, lambda w: w.pid,
                        lambda w: [f"DocumentReference/{w.masked}"]),
    "another-patient": (PATIENT_B, lambda c, w: c.get(f"Patient/{w.pid}"), 403, lambda w: w.pid, lambda w: []),
    "etreat-non-medecin": ({**KINE, "purpose_of_use": "ETREAT"}, lambda c, w: c.get(f"Patient/{w.pid}"), 403,
                           lambda w: w.pid, lambda w: []),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refusal_leaves_exactly_one_audit_event_with_outcome_4(client, database, world, refusal):
    caller, call, status, chain, touched = REFUSALS[refusal]
    before, versions = last_pk(database), written(database)
    response = call(client.as_(**caller), world)
    assert response.status_code == status, response.data
    assert written(database) == versions  # no notification, nothing else
    ((key, event),) = new_events(database, before)
    assert key == chain(world)
    check_event(event, caller=caller, subtype="read", action="R", outcome="4", patient_id=chain(world),
                touched=touched(world))
    assert event["outcomeDesc"] == json_of(response)["issue"][0]["diagnostics"]


def test_a_batch_leaves_one_audit_event_per_entry(client, database, world):
    before = last_pk(database)
    response = client.as_(**DOCTOR).post("/fhir", transaction(
        {"request": {"method": "GET", "url": f"DocumentReference/{world.doc}"}},
        {"request": {"method": "GET", "url": f"DocumentReference/{world.masked}"}},
        {"request": {"method": "GET", "url": f"Patient/{world.qid}"}}, kind="batch"))
    assert response.status_code == 200, response.data
    assert [e["response"]["status"][:3] for e in json_of(response)["entry"]] == ["200", "404", "403"]
    new = new_events(database, before)
    assert [(key, e["subtype"][0]["code"], e["outcome"]) for key, e in new] == [
        (world.pid, "read", "0"), (world.pid, "read", "4"), (world.qid, "read", "4")]


def test_a_transaction_touching_two_dmps_leaves_one_event_in_each(client, database, world):
    before = last_pk(database)
    response = client.post("/fhir", transaction(post_entry(document(world.pid)), post_entry(document(world.qid))))
    assert response.status_code == 200, response.data
    new = new_events(database, before)
    assert sorted(key for key, _ in new) == sorted([world.pid, world.qid])
    for key, event in new:
        assert event["subtype"][0]["code"] == "transaction" and event["outcome"] == "0"
        (doc,) = [r for r in references(event) if r.startswith("DocumentReference/")]
        assert doc.endswith("/_history/1")
        assert references(event)[0] == f"Patient/{key}"


def test_a_rolled_back_transaction_leaves_only_its_refusal(client, database, world):
    """An emergency caller's transaction whose second entry fails: neither the create, nor the notification,
    nor an 'allowed' trace survives; one refusal is traced after the rollback."""
    caller = {**STRANGER, "purpose_of_use": "BTG", "access_reason": BTG_REASON}
    before, versions = last_pk(database), written(database)
    response = client.as_(**caller).post("/fhir", transaction(
        post_entry(document(world.pid)),
        {"resource": {**document(world.pid), "id": world.masked},
         "request": {"method": "PUT", "url": f"DocumentReference/{world.masked}"}}))
    assert response.status_code == 405, response.data  # a hidden id answers as an absent one (issue 14)
    assert written(database) == versions
    ((key, event),) = new_events(database, before)
    assert key == world.pid
    assert event["subtype"][0]["code"] == "transaction" and event["outcome"] == "4" and event["outcomeDesc"]
    check_agent(event, caller)
    with database.engine.connect() as conn:  # their access was not noted: the next one is still their first
        assert conn.execute(select(dmp_accessor).where(dmp_accessor.c.accessor == f"professional|{STRANGER['sub']}")
                            ).all() == []


@pytest.mark.parametrize("interaction", ["create", "read"])
def test_no_interaction_without_its_trace(client, database, world, monkeypatch, interaction):
    """A write's AuditEvent is in the write's own transaction: when the trace cannot be written the write is
    rolled back; a read whose trace cannot be written is not answered."""
    caller, call, *_ = INTERACTIONS[interaction]
    before, versions = last_pk(database), written(database)

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the trace store is unavailable")

    monkeypatch.setattr(audit, "append", unavailable)
    response = call(client.as_(**caller), world)
    assert response.status_code == 500
    assert b"compte" not in response.data and b"Q29tcHRlIHJlbmR1" not in response.data  # nothing shown
    assert written(database) == versions
    assert new_events(database, before) == []


# -- 2. traces are immutable ----------------------------------------------------------------------------------
@pytest.mark.parametrize("who", [SYSTEM, DOCTOR, PATIENT_A], ids=["system", "professional", "patient"])
def test_audit_events_cannot_be_written_over_the_api(client, database, world, who):
    rows = stored(database, key=world.pid)
    _, _, target = rows[len(rows) // 2]
    copy = {k: v for k, v in target.items() if k not in ("id", "meta")}
    caller = client.as_(**who)
    attempts = [
        caller.post("AuditEvent", copy),
        caller.put(f"AuditEvent/{target['id']}", {**target, "outcome": "4"}),
        caller.patch(f"AuditEvent/{target['id']}", [{"op": "replace", "path": "/outcome", "value": "4"}]),
        caller.delete(f"AuditEvent/{target['id']}"),
        caller.delete(f"AuditEvent?patient=Patient/{world.pid}"),
        caller.put(f"AuditEvent?patient=Patient/{world.pid}", copy),
    ]
    assert [a.status_code for a in attempts] == [405] * len(attempts), [a.data for a in attempts]
    batch = caller.post("/fhir", transaction(
        {"request": {"method": "DELETE", "url": f"AuditEvent/{target['id']}"}}, kind="batch"))
    assert json_of(batch)["entry"][0]["response"]["status"].startswith("405")
    refused = caller.post("/fhir", transaction({"request": {"method": "DELETE", "url": f"AuditEvent/{target['id']}"}}))
    assert refused.status_code == 405
    after = {body["id"]: body for _, _, body in stored(database)}
    assert after[target["id"]] == target  # untouched, and still one version
    assert [b["id"] for _, _, b in stored(database)].count(target["id"]) == 1
    assert all(fault is None for _, _, fault in audit.verify(database))


# -- 3. who reads which traces ------------------------------------------------------------------------------
def _search_ids(client: FhirTestClient, query: str) -> set[str]:
    response = client.get(query)
    assert response.status_code == 200, response.data
    body = json_of(response)
    assert "next" not in {link["relation"] for link in body.get("link", [])}
    return {e["resource"]["id"] for e in body.get("entry", []) if e["resource"]["resourceType"] == "AuditEvent"}


def _traffic(client: FhirTestClient, w: World) -> None:
    """Traces by many hands in A's DMP (allowed and refused)."""
    for who, path, status in [
        (DOCTOR, f"Patient/{w.pid}", 200), (DOCTOR, f"DocumentReference/{w.masked}", 404),
        (GP, f"DocumentReference/{w.masked}", 200), (PATIENT_A, f"Patient/{w.pid}", 200),
        (REPRESENTATIVE_A, f"DocumentReference/{w.doc}", 200), (STRANGER, f"Patient/{w.pid}", 403),
        ({**KINE, "purpose_of_use": "BTG", "access_reason": BTG_REASON}, f"Patient/{w.pid}", 200),
        (PATIENT_B, f"Patient/{w.pid}", 403), (DOCTOR, f"Patient/{w.qid}", 403), (PATIENT_B, f"Patient/{w.qid}", 200),
    ]:
        assert client.as_(**who).get(path).status_code == status, (who, path)


@pytest.mark.parametrize("reader", [PATIENT_A, REPRESENTATIVE_A, GP], ids=["patient", "representative", "gp"])
def test_the_patient_representative_and_medecin_traitant_see_every_trace_of_the_dmp(client, database, world, reader):
    _traffic(client, world)
    agents = {e["agent"][0]["who"]["identifier"]["value"] for e in events_of(database, world.pid)}
    assert {DOCTOR["sub"], GP["sub"], INS_A, STRANGER["sub"], KINE["sub"], INS_B, "rep-0001", SYSTEM["sub"]} <= agents
    for query in (f"AuditEvent?patient=Patient/{world.pid}&_count=1000", f"AuditEvent?patient={world.pid}&_count=1000"):
        everything = {e["id"] for e in events_of(database, world.pid)}  # the search's own trace comes after it
        assert _search_ids(client.as_(**reader), query) == everything
    # the traces of the other DMP stay out, and one trace is read like any resource
    assert not everything & {e["id"] for e in events_of(database, world.qid)}
    some = events_of(database, world.pid)[3]["id"]
    assert client.as_(**reader).get(f"AuditEvent/{some}").status_code == 200


@pytest.mark.parametrize("reader", [DOCTOR, {**KINE, "purpose_of_use": "BTG", "access_reason": BTG_REASON}],
                         ids=["authorised", "emergency"])
def test_another_professional_sees_only_their_own_traces(client, database, world, reader):
    _traffic(client, world)
    theirs = {e["id"] for e in events_of(database, world.pid)
              if e["agent"][0]["who"]["identifier"]["value"] == reader["sub"]}
    assert theirs and len(theirs) < len(events_of(database, world.pid))
    caller = client.as_(**reader)
    assert _search_ids(caller, f"AuditEvent?patient=Patient/{world.pid}&_count=1000") == theirs
    # without a patient: their own traces, in every DMP and on the server's chain
    everywhere = {e["id"] for e in events_of(database) if e["agent"][0]["who"]["identifier"]["value"] == reader["sub"]
                  and e["agent"][0]["type"]["text"] == "professional"}
    assert _search_ids(caller, "AuditEvent?_count=1000") == everywhere
    others = next(e["id"] for e in events_of(database, world.pid) if e["id"] not in theirs)
    assert caller.get(f"AuditEvent/{others}").status_code == 404


@pytest.mark.parametrize("reader", [PATIENT_B, STRANGER, INSURER], ids=["another-patient", "stranger", "insurer"])
def test_others_may_not_read_the_dmp_traces(client, database, world, reader):
    _traffic(client, world)
    response = client.as_(**reader).get(f"AuditEvent?patient=Patient/{world.pid}")
    assert response.status_code == 403, response.data
    some = events_of(database, world.pid)[0]["id"]
    assert client.as_(**reader).get(f"AuditEvent/{some}").status_code in (403, 404)


# -- 4. tamper evidence -----------------------------------------------------------------------------------
def run_verify(database: Database) -> tuple[int, list[dict]]:
    """`fhir-dmp audit verify` on the test store: (exit code, its JSON lines)."""
    result = CliRunner().invoke(main, ["audit", "verify", "--database-url", database.url],
                                env={"FHIR_DMP_DATABASE_URL": None}, catch_exceptions=False)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines


def _chain_line(lines: list[dict], key: str) -> dict:
    (line,) = [x for x in lines if x["chain"] == (key or "(server)")]
    return line


def _tampered_world(client: FhirTestClient, database: Database) -> tuple[World, list[tuple[int, str, dict]]]:
    w = build_world(client)
    _traffic(client, w)
    assert client.get("Practitioner").status_code == 200  # an event on the server's chain
    rows = stored(database, key=w.pid)
    assert len(rows) >= 10
    return w, rows


def test_verify_passes_on_an_untouched_store(client, database):
    w, rows = _tampered_world(client, database)
    code, lines = run_verify(database)
    assert code == 0, lines
    assert all(line["ok"] for line in lines)
    assert _chain_line(lines, w.pid)["events"] == len(rows)
    assert _chain_line(lines, w.qid)["events"] == len(stored(database, key=w.qid))
    assert _chain_line(lines, "")["events"] == len(stored(database, key="")) >= 1
    results = {key: (count, fault) for key, count, fault in audit.verify(database)}
    assert results[w.pid] == (len(rows), None)
    # sequence numbers 1..n, each linked to the previous event's stored JSON
    with database.engine.connect() as conn:
        texts = [t for _, t in conn.execute(select(resource_version.c.id, resource_version.c.content).where(
            resource_version.c.resource_type == "AuditEvent", resource_version.c.patient_key == w.pid)
            .order_by(resource_version.c.pk))]
    assert [chain_link(body)[0] for _, _, body in rows] == list(range(1, len(rows) + 1))
    assert [chain_link(fhirjson.loads(t))[1] for t in texts] == [GENESIS] + [audit.digest(t) for t in texts[:-1]]


def _set_content(database: Database, pk: int, body: dict) -> None:
    with database.engine.begin() as conn:
        conn.execute(update(resource_version).where(resource_version.c.pk == pk).values(content=fhirjson.dumps(body)))


def _remove_event(database: Database, event_id: str) -> None:
    with database.engine.begin() as conn:
        pk = conn.execute(select(resource.c.pk).where(resource.c.resource_type == "AuditEvent",
                                                      resource.c.id == event_id)).scalar_one()
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.resource_pk == pk))
        conn.execute(delete(resource).where(resource.c.pk == pk))
        conn.execute(delete(resource_version).where(resource_version.c.resource_type == "AuditEvent",
                                                    resource_version.c.id == event_id))


def _hide_the_reader(body: dict) -> dict:
    """What a forger would do: make someone else the reader."""
    agent = {**body["agent"][0], "who": {"identifier": {"system": IDNATPS, "value": GP["sub"]}}}
    return {**body, "agent": [agent]}


def test_verify_detects_an_altered_event_in_the_middle(client, database):
    w, rows = _tampered_world(client, database)
    middle = len(rows) // 2
    pk, _, body = rows[middle]
    _set_content(database, pk, _hide_the_reader(body))
    code, lines = run_verify(database)
    assert code == 1
    line = _chain_line(lines, w.pid)
    assert not line["ok"]
    # the break shows on the link from the altered event to the next one; both are named
    assert line["broken_at"] == rows[middle + 1][2]["id"]
    assert body["id"] in line["reason"]
    assert all(x["ok"] for x in lines if x["chain"] != w.pid)


def test_verify_detects_a_removed_event(client, database):
    w, rows = _tampered_world(client, database)
    middle = len(rows) // 2
    _remove_event(database, rows[middle][2]["id"])
    code, lines = run_verify(database)
    assert code == 1
    line = _chain_line(lines, w.pid)
    assert not line["ok"] and line["broken_at"] == rows[middle + 1][2]["id"]
    assert "removed" in line["reason"]
    assert line["events"] == len(rows) - 1
    assert all(x["ok"] for x in lines if x["chain"] != w.pid)


@pytest.mark.parametrize("how", ["altered", "removed"])
def test_verify_detects_a_change_to_the_last_event(client, database, how):
    w, rows = _tampered_world(client, database)
    pk, _, body = rows[-1]
    if how == "altered":
        _set_content(database, pk, _hide_the_reader(body))
    else:
        _remove_event(database, body["id"])
    code, lines = run_verify(database)
    assert code == 1
    line = _chain_line(lines, w.pid)
    assert not line["ok"] and line["broken_at"] == "(head)"
    assert "head" in line["reason"]
    assert all(x["ok"] for x in lines if x["chain"] != w.pid)


def test_verify_detects_a_removed_chain_head(client, database):
    """Deleting a chain's head row must not take its events out of the verification."""
    w, rows = _tampered_world(client, database)
    with database.engine.begin() as conn:
        conn.execute(delete(audit_chain).where(audit_chain.c.patient_key == w.pid))
    code, lines = run_verify(database)
    assert code == 1
    line = _chain_line(lines, w.pid)
    assert not line["ok"] and line["events"] == len(rows)


def test_verify_detects_a_forged_sequence(client, database):
    """Rewriting an event's own link (to hide a removal) breaks the link from it to the next one."""
    w, rows = _tampered_world(client, database)
    middle = len(rows) // 2
    _remove_event(database, rows[middle][2]["id"])
    pk, _, body = rows[middle + 1]
    seq, _ = chain_link(body)
    forged = {**body, "extension": [{"url": audit.CHAIN_URL, "extension": [
        {"url": "sequence", "valueInteger": seq - 1}, {"url": "previous", "valueString": chain_link(body)[1]}]}]}
    _set_content(database, pk, forged)
    code, lines = run_verify(database)
    assert code == 1
    line = _chain_line(lines, w.pid)
    assert not line["ok"] and line["broken_at"] == body["id"]


# -- 5. concurrency ----------------------------------------------------------------------------------------
ROUNDS = 4


@pytest.fixture(params=["postgres", "sqlite"])
def concurrent_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_database")  # skips when FHIR_DMP_TEST_POSTGRES_URL is unset
        _empty(db)
        yield db
        return
    db = Database(f"sqlite:///{tmp_path / 'traces.db'}")
    upgrade(db)
    yield db
    db.dispose()


def _professional(t: int) -> dict:
    return {"actor": "professional", "sub": f"8100000010{t:02d}", "profession": "10", "specialty": "SM26"}


def _sequences(database: Database, key: str) -> list[int]:
    return [chain_link(body)[0] for body in events_of(database, key)]


def _app(db: Database):  # type: ignore[no-untyped-def]
    return create_app(Settings(database_url=db.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024), database=db)


def test_concurrent_traffic_keeps_every_chain_whole(concurrent_db):
    """8 threads, each a professional, on one shared DMP and on a DMP of their own: reads, searches, creates,
    patches and transactions touching both (two chains locked in one unit of work)."""
    db = concurrent_db
    app = _app(db)
    system = FhirTestClient(app.test_client(), SECRET)
    shared = created(system.post("Patient", patient("1700175000001")))
    own = [created(system.post("Patient", patient(f"16001750001{t:02d}"))) for t in range(THREADS)]
    for t in range(THREADS):
        created(system.post("Consent", authorisation(shared, _professional(t)["sub"])))
        created(system.post("Consent", authorisation(own[t], _professional(t)["sub"])))
    keys = [shared, *own]
    before = {key: len(events_of(db, key)) for key in keys}

    def work(t: int) -> list[int]:
        me = FhirTestClient(app.test_client(), SECRET).as_(**_professional(t))
        statuses = []
        for k in range(ROUNDS):
            response = me.post("DocumentReference", document(shared, description=f"t{t}-r{k}"))
            statuses.append(response.status_code)
            doc = json_of(response)["id"]
            statuses.append(me.get(f"DocumentReference/{doc}").status_code)
            statuses.append(me.get(f"DocumentReference?patient={shared}&_count=5").status_code)
            statuses.append(me.post("/fhir", transaction(post_entry(document(shared)),
                                                         post_entry(document(own[t])))).status_code)
            statuses.append(me.get(f"Patient/{own[t]}").status_code)
            statuses.append(me.patch(f"DocumentReference/{doc}",  # a metadata update (PDSm flux 03)
                                     [{"op": "add", "path": "/extension", "value": [
                                         {"url": IS_ARCHIVED, "valueBoolean": True}]}]).status_code)
        return statuses

    statuses = [s for per_thread in in_parallel(work) for s in per_thread]
    assert Counter(statuses) == Counter({200: THREADS * 5 * ROUNDS, 201: THREADS * ROUNDS})

    # one event per interaction and DMP: none lost, none doubled
    assert len(events_of(db, shared)) - before[shared] == THREADS * ROUNDS * 5
    for key in own:
        assert len(events_of(db, key)) - before[key] == ROUNDS * 2
    # sequence numbers 1..n in writing order, no gap, no duplicate; the head is the last one
    with db.engine.connect() as conn:
        heads = {r.patient_key: r.seq for r in conn.execute(select(audit_chain))}
    assert set(keys) <= set(heads)
    for key in heads:
        sequences = _sequences(db, key)
        assert sequences == list(range(1, len(sequences) + 1)), key
        assert heads[key] == len(sequences)
    results = list(audit.verify(db))
    assert [(key, fault) for key, _, fault in results if fault is not None] == []
    assert {key for key, _, _ in results} == set(heads)


def test_concurrent_first_accesses_are_notified_once(concurrent_db):
    """The same professional opening a DMP from 8 threads at once: one first-access notice; 8 professionals
    opening another DMP at once: one each."""
    db = concurrent_db
    app = _app(db)
    system = FhirTestClient(app.test_client(), SECRET)
    one, many = (created(system.post("Patient", patient(ins))) for ins in ("1700175000002", "1700175000003"))
    same = _professional(99)
    created(system.post("Consent", authorisation(one, same["sub"])))
    for t in range(THREADS):
        created(system.post("Consent", authorisation(many, _professional(t)["sub"])))

    def work(t: int) -> list[int]:
        http = FhirTestClient(app.test_client(), SECRET)
        return [http.as_(**same).get(f"Patient/{one}").status_code,
                http.as_(**_professional(t)).get(f"Patient/{many}").status_code]

    assert {s for per_thread in in_parallel(work) for s in per_thread} == {200}
    assert len(communications(db, one)) == 1
    notices = communications(db, many)
    assert len(notices) == THREADS
    assert {n["payload"][0]["contentString"].split()[2] for n in notices} == {
        _professional(t)["sub"] for t in range(THREADS)}
    assert all(fault is None for _, _, fault in audit.verify(db))


def test_verify_during_concurrent_writes_reports_no_false_break(concurrent_db):
    """`fhir-dmp audit verify` may run on a live server: writers appending meanwhile are not tampering."""
    db = concurrent_db
    app = _app(db)
    system = FhirTestClient(app.test_client(), SECRET)
    pids = [created(system.post("Patient", patient(f"15001750002{t:02d}"))) for t in range(2)]
    done = threading.Event()
    faults: list[audit.Broken] = []
    runs = [0]

    def verifier() -> None:
        while not done.is_set():
            faults.extend(fault for _, _, fault in audit.verify(db) if fault is not None)
            runs[0] += 1

    watcher = threading.Thread(target=verifier)
    watcher.start()
    try:
        def work(t: int) -> list[int]:
            http = FhirTestClient(app.test_client(), SECRET)
            return [http.get(f"Patient/{pids[(t + k) % 2]}").status_code for k in range(15)]

        statuses = [s for per_thread in in_parallel(work, 6) for s in per_thread]
    finally:
        done.set()
        watcher.join(TIMEOUT)
    assert set(statuses) == {200}
    assert runs[0] >= 1
    assert faults == []
    assert all(fault is None for _, _, fault in audit.verify(db))


# -- 6. notifications ------------------------------------------------------------------------------------------
def test_a_first_access_notifies_the_patient_once(client, database, world):
    created(client.post("Consent", authorisation(world.pid, NEWCOMER["sub"])))
    before = communications(database, world.pid)
    newcomer = client.as_(**NEWCOMER)
    assert newcomer.get(f"Patient/{world.pid}").status_code == 200
    after = communications(database, world.pid)
    assert len(after) == len(before) + 1
    notice = after[-1]
    assert notice["status"] == "completed"
    assert notice["category"] == [{"coding": [NOTIFICATION]}]
    assert notice["subject"] == {"reference": f"Patient/{world.pid}"}
    assert notice["recipient"] == [{"reference": f"Patient/{world.pid}"}]  # not an emergency: the patient only
    assert NEWCOMER["sub"] in notice["payload"][0]["contentString"]
    # later accesses by the same professional, of any kind, notify nothing
    assert newcomer.get(f"DocumentReference?patient={world.pid}").status_code == 200
    assert newcomer.get(f"DocumentReference/{world.doc}").status_code == 200
    assert newcomer.post("DocumentReference", document(world.pid)).status_code == 201
    assert len(communications(database, world.pid)) == len(after)
    # the patient (and their representative) read it
    for reader in (PATIENT_A, REPRESENTATIVE_A):
        response = client.as_(**reader).get(f"Communication?recipient=Patient/{world.pid}")
        assert response.status_code == 200, response.data
        assert notice["id"] in {e["resource"]["id"] for e in json_of(response).get("entry", [])}
    # a refused access notifies nothing
    assert client.as_(**STRANGER).get(f"Patient/{world.pid}").status_code == 403
    assert len(communications(database, world.pid)) == len(after)
    assert communications(database, world.qid) == []


EMERGENCIES = {
    "btg-medecin": {**STRANGER, "purpose_of_use": "BTG", "access_reason": BTG_REASON},
    "btg-kine": {**KINE, "purpose_of_use": "BTG", "access_reason": BTG_REASON},
    "etreat-medecin": {**STRANGER, "purpose_of_use": "ETREAT"},
}


@pytest.mark.parametrize("mode", list(EMERGENCIES))
def test_every_emergency_access_notifies_the_patient_and_the_medecin_traitant(client, database, world, mode):
    caller = client.as_(**EMERGENCIES[mode])
    before = communications(database, world.pid)
    assert caller.get(f"Patient/{world.pid}").status_code == 200
    assert caller.get(f"DocumentReference?patient={world.pid}").status_code == 200
    notices = communications(database, world.pid)[len(before):]
    assert len(notices) == 2  # one per access; the first is also the first access, still one notice
    for notice in notices:
        assert notice["status"] == "completed" and notice["category"] == [{"coding": [NOTIFICATION]}]
        assert notice["subject"] == {"reference": f"Patient/{world.pid}"}
        assert {"reference": f"Patient/{world.pid}"} in notice["recipient"]
        assert {"identifier": {"system": IDNATPS, "value": GP["sub"]}} in notice["recipient"]
        text = notice["payload"][0]["contentString"]
        assert EMERGENCIES[mode]["sub"] in text
        if "access_reason" in EMERGENCIES[mode]:
            assert BTG_REASON in text
    ids = {n["id"] for n in notices}
    seen_by_gp = client.as_(**GP).get(f"Communication?subject=Patient/{world.pid}")
    assert seen_by_gp.status_code == 200, seen_by_gp.data
    assert ids <= {e["resource"]["id"] for e in json_of(seen_by_gp).get("entry", [])}
    seen_by_patient = client.as_(**PATIENT_A).get(f"Communication?recipient=Patient/{world.pid}")
    assert ids <= {e["resource"]["id"] for e in json_of(seen_by_patient).get("entry", [])}
    # the emergency caller and another professional do not read them
    for other in (EMERGENCIES[mode], DOCTOR):
        response = client.as_(**other).get(f"Communication?subject=Patient/{world.pid}")
        assert response.status_code == 200, response.data
        assert not ids & {e["resource"]["id"] for e in json_of(response).get("entry", [])}


def test_an_emergency_access_the_patient_opposed_notifies_nothing(client, database, world):
    opposition = {**authorisation(world.pid, "x"), "provision": {
        "type": "deny", "purpose": [{"system": ACT_REASON, "code": "BTG"}]}}
    created(client.as_(**PATIENT_A).post("Consent", opposition))
    before = communications(database, world.pid)
    assert client.as_(**EMERGENCIES["btg-medecin"]).get(f"Patient/{world.pid}").status_code == 403
    assert communications(database, world.pid) == before


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: Any = self.server
        server.received.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(500 if len(server.received) <= server.failures else 204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        return


@pytest.fixture
def webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received = []  # type: ignore[attr-defined]
    server.failures = 0  # type: ignore[attr-defined]  # how many first calls answer 500
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _client_with_hook(settings: Settings, database: Database, url: str) -> FhirTestClient:
    return FhirTestClient(create_app(replace(settings, notify_url=url), database=database).test_client(), SECRET)


def test_each_notification_is_posted_to_the_webhook(settings, database, webhook):
    client = _client_with_hook(settings, database, f"http://127.0.0.1:{webhook.server_port}/dmp-notify")
    w = build_world(client)
    caller = client.as_(**EMERGENCIES["btg-medecin"])
    assert caller.get(f"Patient/{w.pid}").status_code == 200
    expected = {n["id"]: n for n in communications(database, w.pid)}  # this one, and DOCTOR's first access
    assert any(GP["sub"] in str(n["recipient"]) for n in expected.values())
    deadline = time.monotonic() + PATIENCE
    while len(webhook.received) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(webhook.received) == len(expected)
    posted = {}
    for path, content_type, body in webhook.received:
        assert path == "/dmp-notify" and content_type == "application/fhir+json"
        communication = json.loads(body)
        posted[communication["id"]] = communication
    assert posted == expected
    time.sleep(0.3)
    assert len(webhook.received) == len(expected)  # delivered once (a 2xx is not retried)
    # accesses that notify nothing call nothing
    assert client.as_(**DOCTOR).get(f"Patient/{w.pid}").status_code == 200
    time.sleep(0.3)
    assert len(webhook.received) == len(expected)


def _wait_for(webhook: ThreadingHTTPServer, count: int) -> list:
    received: list = webhook.received  # type: ignore[attr-defined]
    deadline = time.monotonic() + PATIENCE
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return received


@pytest.mark.parametrize("failures,calls", [(1, 2), (5, 3)], ids=["retried", "given-up"])
def test_a_failing_webhook_is_retried_three_times_at_most(settings, database, webhook, failures, calls):
    webhook.failures = failures  # type: ignore[attr-defined]
    client = _client_with_hook(settings, database, f"http://127.0.0.1:{webhook.server_port}/dmp-notify")
    pid = created(client.post("Patient", patient(INS_A)))
    assert client.as_(**EMERGENCIES["btg-kine"]).get(f"Patient/{pid}").status_code == 200
    (notice,) = communications(database, pid)
    received = _wait_for(webhook, calls)
    time.sleep(2.0)  # longer than the back-off before a 4th attempt would be
    assert len(received) == calls
    assert {json.loads(body)["id"] for _, _, body in received} == {notice["id"]}


def test_a_webhook_that_is_down_neither_fails_nor_loses_the_notification(settings, database):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = _client_with_hook(settings, database, f"http://127.0.0.1:{port}/dmp-notify")
    w = build_world(client)
    before = communications(database, w.pid)
    started = time.monotonic()
    response = client.as_(**EMERGENCIES["btg-medecin"]).get(f"Patient/{w.pid}")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.data
    assert elapsed < PATIENCE
    assert len(communications(database, w.pid)) == len(before) + 1
