"""Signed checkpoints of the trace chains (docs/audit.md): `fhir-dmp audit seal`, `audit verify`, `audit keygen`.

A database writer can rewrite a hash chain whole (delete it with its head, or alter an event and recompute the later
links and the head with plain SHA-256): the chains alone then verify. Against a checkpoint signed with a key held
outside the database, each of those fails `audit verify`, as does a checkpoint altered, removed, or signed by a key
not listed. Every test runs on SQLite and, when FHIR_DMP_TEST_POSTGRES_URL is set, on PostgreSQL too.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, insert, select, update

from fhir_dmp import fhirjson
from fhir_dmp.cli import main
from fhir_dmp.services import audit, signing
from fhir_dmp.services.lifecycle import purge
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.records import GENESIS
from fhir_dmp.storage.tables import INDEX_TABLES, audit_chain, audit_checkpoint, resource, resource_version
from tests.fhirclient import FhirTestClient
from tests.lifecycle.helpers import new_dmp
from tests.lifecycle.test_purge import _backdate
from tests.policy.test_traces import (
    DOCTOR,
    GP,
    PATIENT_A,
    World,
    _hide_the_reader,
    _remove_event,
    _set_content,
    _traffic,
    build_world,
    stored,
)


# -- keys and the command line -------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("old", "new", "rogue"):
        signing.generate(tmp_path / f"{name}.pem", tmp_path / f"{name}.pub")
        made[name], made[f"{name}.pub"] = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub"
    return made


def run(database: Database, *args: str, **env: object) -> tuple[int, list[dict], str]:
    """A `fhir-dmp audit` command on the test store: (exit code, its JSON lines, its stderr)."""
    base = {"FHIR_DMP_DATABASE_URL": None, "FHIR_DMP_AUDIT_SIGNING_KEY": None, "FHIR_DMP_AUDIT_VERIFY_KEYS": None,
            "FHIR_DMP_AUDIT_VERIFY_KEY": None, "FHIR_DMP_AUDIT_CHECKPOINT_DIR": None}
    result = CliRunner().invoke(main, ["audit", *args, "--database-url", database.url],
                                env={**base, **{k: str(v) for k, v in env.items()}}, catch_exceptions=False)
    return result.exit_code, [json.loads(x) for x in result.stdout.splitlines() if x.strip()], result.stderr


def seal(database: Database, key: Path, **env: object) -> dict:
    code, lines, err = run(database, "seal", FHIR_DMP_AUDIT_SIGNING_KEY=key, **env)
    assert code == 0, (lines, err)
    (line,) = lines
    return line


def verify(database: Database, public: Path, **env: object) -> tuple[int, list[dict]]:
    code, lines, _ = run(database, "verify", FHIR_DMP_AUDIT_VERIFY_KEYS=public, **env)
    return code, lines


def problems(lines: list[dict]) -> list[dict]:
    return [x for x in lines if not x["ok"]]


def line_of(lines: list[dict], key: str) -> dict:
    (line,) = [x for x in lines if x.get("chain") == (key or "(server)")]
    return line


# -- a sealed world ------------------------------------------------------------------------------------------
def sealed_world(client: FhirTestClient, database: Database, keys: dict[str, Path]) -> tuple[World, list]:
    w = build_world(client)
    _traffic(client, w)
    done = seal(database, keys["old"])
    assert done["sealed"] and done["checkpoint"] == 1
    assert client.as_(**PATIENT_A).get(f"Patient/{w.pid}").status_code == 200  # events after the seal
    rows = stored(database, key=w.pid)
    code, lines = verify(database, keys["old.pub"])
    assert code == 0 and not problems(lines), lines
    assert line_of(lines, w.pid) == {"chain": w.pid, "events": len(rows), "ok": True}  # today's format
    return w, rows


def assert_only(lines: list[dict], key: str) -> dict:
    """Exactly one problem: on chain `key`."""
    (problem,) = problems(lines)
    assert problem["chain"] == key, lines
    return problem


def _chain_rows(database: Database, key: str) -> list[dict]:
    query = (select(resource_version).where(resource_version.c.resource_type == "AuditEvent",
                                            resource_version.c.patient_key == key).order_by(resource_version.c.pk))
    with database.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def rewrite(database: Database, key: str, bodies: list[dict]) -> None:
    """What a forger with write access does: store the chain's events anew as `bodies`, with every link and the
    head recomputed with plain SHA-256, so that the hash chain alone verifies."""
    template = _chain_rows(database, key)[0]
    previous, texts = GENESIS, []
    for seq, body in enumerate(bodies, 1):
        body = {**body, "extension": [{"url": audit.CHAIN_URL, "extension": [
            {"url": "sequence", "valueInteger": seq}, {"url": "previous", "valueString": previous}]}]}
        texts.append((body["id"], fhirjson.dumps(body)))
        previous = audit.digest(texts[-1][1])
    with database.engine.begin() as conn:
        conn.execute(delete(resource_version).where(resource_version.c.resource_type == "AuditEvent",
                                                    resource_version.c.patient_key == key))
        for rid, text in texts:
            conn.execute(insert(resource_version).values(
                {**{k: v for k, v in template.items() if k != "pk"}, "id": rid, "content": text}))
        conn.execute(update(audit_chain).where(audit_chain.c.patient_key == key)
                     .values(seq=len(texts), head=previous))
    assert all(fault is None for _, _, fault in audit.verify(database))  # the chains alone see nothing


def _bodies(database: Database, key: str) -> list[dict]:
    return [body for _, _, body in stored(database, key=key)]


# -- each forgery fails verify ---------------------------------------------------------------------------------
def test_an_altered_event_fails_verify(client, database, keys):
    w, rows = sealed_world(client, database, keys)
    pk, _, body = rows[2]
    _set_content(database, pk, _hide_the_reader(body))
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    problem = assert_only(lines, w.pid)
    assert problem["broken_at"] == rows[3][2]["id"]  # the link from it breaks (the sealed event is untouched)


def test_a_deleted_event_fails_verify(client, database, keys):
    w, rows = sealed_world(client, database, keys)
    _remove_event(database, rows[2][2]["id"])
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    assert "removed" in assert_only(lines, w.pid)["reason"]


def test_an_inserted_event_fails_verify(client, database, keys):
    w, rows = sealed_world(client, database, keys)
    forged = {**_hide_the_reader(rows[2][2]), "id": "forged-event"}
    bodies = _bodies(database, w.pid)
    with database.engine.begin() as conn:  # a forged event slipped in, the links around it left alone
        template = _chain_rows(database, w.pid)
        conn.execute(delete(resource_version).where(resource_version.c.resource_type == "AuditEvent",
                                                    resource_version.c.patient_key == w.pid))
        for n, row in enumerate(template):
            if n == 3:
                conn.execute(insert(resource_version).values({**{k: v for k, v in row.items() if k != "pk"},
                                                              "id": forged["id"], "content": fhirjson.dumps(forged)}))
            conn.execute(insert(resource_version).values({k: v for k, v in row.items() if k != "pk"}))
    assert len(_bodies(database, w.pid)) == len(bodies) + 1
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    assert assert_only(lines, w.pid)["broken_at"] == "forged-event"


@pytest.mark.parametrize("forgery", ["altered", "inserted", "deleted"])
def test_a_rehashed_chain_fails_verify(client, database, keys, forgery):
    """Altered, inserted or deleted, then every later link and the head recomputed with plain SHA-256: the chain
    alone verifies; the sealed head no longer matches the event stored at its number."""
    w, rows = sealed_world(client, database, keys)
    bodies = _bodies(database, w.pid)
    if forgery == "altered":
        bodies[2] = _hide_the_reader(bodies[2])
    elif forgery == "inserted":
        bodies.insert(3, {**_hide_the_reader(bodies[2]), "id": "forged-event"})
    else:
        del bodies[2]
    rewrite(database, w.pid, bodies)
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    problem = assert_only(lines, w.pid)
    assert "does not hash to the head checkpoint 1 sealed" in problem["reason"], problem


def test_a_chain_deleted_with_its_head_fails_verify(client, database, keys):
    w, _ = sealed_world(client, database, keys)
    with database.engine.begin() as conn:
        pks = select(resource.c.pk).where(resource.c.patient_key == w.qid, resource.c.resource_type == "AuditEvent")
        for table in INDEX_TABLES.values():
            conn.execute(delete(table).where(table.c.resource_pk.in_(pks)))
        conn.execute(delete(resource).where(resource.c.patient_key == w.qid, resource.c.resource_type == "AuditEvent"))
        conn.execute(delete(resource_version).where(resource_version.c.patient_key == w.qid,
                                                    resource_version.c.resource_type == "AuditEvent"))
        conn.execute(delete(audit_chain).where(audit_chain.c.patient_key == w.qid))
    assert all(fault is None for _, _, fault in audit.verify(database))  # the chains alone see nothing
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    problem = assert_only(lines, w.qid)
    assert problem["broken_at"] == "(chain)" and "gone with its head" in problem["reason"]


# -- the checkpoints themselves -------------------------------------------------------------------------------
def _checkpoints(database: Database) -> list[tuple[int, str, str]]:
    with database.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(audit_checkpoint).order_by(audit_checkpoint.c.number))]


def _three_checkpoints(client: FhirTestClient, database: Database, keys: dict[str, Path]) -> World:
    w, _ = sealed_world(client, database, keys)
    for number in (2, 3):
        assert client.as_(**DOCTOR).get(f"Patient/{w.pid}").status_code == 200
        assert seal(database, keys["old"])["checkpoint"] == number
    assert seal(database, keys["old"]) == {"sealed": False, "checkpoint": 3,
                                           "reason": "nothing changed since checkpoint 3"}
    assert verify(database, keys["old.pub"])[0] == 0
    return w


def test_an_altered_checkpoint_fails_verify(client, database, keys):
    _three_checkpoints(client, database, keys)
    number, body, _ = _checkpoints(database)[1]
    altered = json.loads(body)
    altered["chains"] = [[key, seq - 1, head, count] for key, seq, head, count in altered["chains"]]
    with database.engine.begin() as conn:
        conn.execute(update(audit_checkpoint).where(audit_checkpoint.c.number == number)
                     .values(body=signing.canonical(altered)))
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    assert {"checkpoint": 2, "ok": False,
            "reason": "its signature does not verify (the checkpoint was altered)"} in problems(lines)


def test_a_checkpoint_deleted_from_the_middle_fails_verify(client, database, keys):
    _three_checkpoints(client, database, keys)
    with database.engine.begin() as conn:
        conn.execute(delete(audit_checkpoint).where(audit_checkpoint.c.number == 2))
    code, lines = verify(database, keys["old.pub"])
    assert code == 1
    assert any(x.get("checkpoint") == 2 and "missing" in x["reason"] for x in problems(lines)), lines


def test_a_checkpoint_signed_with_another_key_is_refused(client, database, keys):
    w = build_world(client)
    seal(database, keys["rogue"])  # a forger's own key: the database holds nothing that stops the seal...
    code, lines = verify(database, keys["old.pub"])  # ...but the verifier does not know that key
    assert code == 1
    (problem,) = problems(lines)
    assert problem["checkpoint"] == 1 and "not among the verification keys" in problem["reason"]
    assert line_of(lines, w.pid)["ok"]


def test_a_seal_refuses_a_broken_trail(client, database, keys):
    w, rows = sealed_world(client, database, keys)
    bodies = _bodies(database, w.pid)
    bodies[1] = _hide_the_reader(bodies[1])
    rewrite(database, w.pid, bodies)
    code, lines, err = run(database, "seal", FHIR_DMP_AUDIT_SIGNING_KEY=keys["old"])
    assert code == 1 and "not sealed" in err
    assert [x["chain"] for x in lines] == [w.pid]
    assert len(_checkpoints(database)) == 1  # nothing signed


def test_key_rotation(client, database, keys):
    """Seal once more with the old key, then with the new one: verify accepts both keys listed."""
    w, _ = sealed_world(client, database, keys)
    assert client.as_(**GP).get(f"Patient/{w.pid}").status_code == 200
    assert seal(database, keys["new"], FHIR_DMP_AUDIT_VERIFY_KEYS=keys["old.pub"])["checkpoint"] == 2
    both = f"{keys['old.pub']},{keys['new.pub']}"
    assert verify(database, both)[0] == 0
    code, lines = verify(database, keys["new.pub"])  # the old key dropped: its checkpoints no longer check
    assert code == 1 and {x["checkpoint"] for x in problems(lines)} == {1}


def test_a_purged_chain_is_accounted_for(client, database, keys):
    dmp = new_dmp(client)
    _backdate(client, dmp.pid, "2012-03-04T10:00:00Z")
    seal(database, keys["old"])
    assert [d["purged"] for d in purge(database, datetime(2020, 1, 1),
                                       "http://testserver/fhir")] == [f"Patient/{dmp.pid}"]
    code, lines = verify(database, keys["old.pub"])
    assert code == 0, lines
    assert line_of(lines, dmp.pid)["purged_by"]
    done = seal(database, keys["old"])
    assert done["sealed"] and done["chains_removed"] == 1
    assert verify(database, keys["old.pub"])[0] == 0


def test_the_checkpoint_directory_keeps_what_the_database_lost(client, database, keys, tmp_path):
    directory = tmp_path / "checkpoints"
    w = build_world(client)
    assert seal(database, keys["old"], FHIR_DMP_AUDIT_CHECKPOINT_DIR=directory)["file"]
    assert client.get(f"Patient/{w.pid}").status_code == 200
    seal(database, keys["old"], FHIR_DMP_AUDIT_CHECKPOINT_DIR=directory)
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint-000000000001.json",
                                                           "checkpoint-000000000002.json"]
    assert verify(database, keys["old.pub"], FHIR_DMP_AUDIT_CHECKPOINT_DIR=directory)[0] == 0
    with database.engine.begin() as conn:  # the latest checkpoint removed: the chain of checkpoints looks whole
        conn.execute(delete(audit_checkpoint).where(audit_checkpoint.c.number == 2))
    assert verify(database, keys["old.pub"])[0] == 0
    code, lines = verify(database, keys["old.pub"], FHIR_DMP_AUDIT_CHECKPOINT_DIR=directory)
    assert code == 1 and [x["checkpoint"] for x in problems(lines)] == [2]


# -- through the command line, end to end ------------------------------------------------------------------------
def test_keygen_seal_and_verify_through_the_command_line(client, database, tmp_path):
    private = tmp_path / "keys" / "audit.pem"
    private.parent.mkdir()
    result = CliRunner().invoke(main, ["audit", "keygen", str(private)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    public = Path(made["public_key"])
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600 and public.exists() and len(made["key_id"]) == 64
    again = CliRunner().invoke(main, ["audit", "keygen", str(private)])
    assert again.exit_code != 0 and "never overwritten" in again.output

    w = build_world(client)
    _traffic(client, w)
    assert client.get("Practitioner").status_code == 200  # an event on the server's chain
    code, lines, err = run(database, "verify", FHIR_DMP_AUDIT_VERIFY_KEY=public)
    assert code == 0 and "no checkpoint" in err
    done = seal(database, private)
    assert done["key_id"] == made["key_id"] and done["sealed_chains"] == 3  # A's DMP, B's, the server's
    assert client.as_(**DOCTOR).get(f"Patient/{w.pid}").status_code == 200
    code, lines, err = run(database, "verify", FHIR_DMP_AUDIT_VERIFY_KEY=public)
    assert code == 0 and "checked against checkpoint 1" in err and "hash links only" in err
    # the signing key alone is enough to verify (its public half is derived from it)
    assert run(database, "verify", FHIR_DMP_AUDIT_SIGNING_KEY=private)[0] == 0
    # without any key, checkpoints that exist cannot be trusted
    code, lines, _ = run(database, "verify")
    assert code == 1 and "no verification key" in problems(lines)[0]["reason"]

    rows = stored(database, key=w.pid)
    bodies = [body for _, _, body in rows][:-2]  # the last two events dropped, one of them sealed
    rewrite(database, w.pid, bodies)
    code, lines, _ = run(database, "verify", FHIR_DMP_AUDIT_VERIFY_KEY=public)
    assert code == 1 and assert_only(lines, w.pid)["broken_at"] == "(sealed)"
