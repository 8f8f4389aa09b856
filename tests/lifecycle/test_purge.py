"""`fhir-dmp purge` (dmp-reference.md 9): DMPs closed for more than ten years are removed whole, with an
AuditEvent of the purge; open DMPs and recently closed ones are untouched, and the audit chains still verify."""

from __future__ import annotations

import json
from datetime import datetime

from click.testing import CliRunner
from sqlalchemy import func, select

from fhir_dmp.cli import main
from fhir_dmp.policy.lifecycle import CLOSURE_URL, ten_years_before
from fhir_dmp.services import audit
from fhir_dmp.services.lifecycle import purge
from fhir_dmp.storage.tables import INDEX_TABLES, audit_chain, dmp_accessor, resource, resource_version
from tests.fhirclient import attachment, document, json_of
from tests.lifecycle.helpers import close_body, new_dmp


def _rows(database, patient_key: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    tables = {"resource": resource, "resource_version": resource_version, "audit_chain": audit_chain,
              "dmp_accessor": dmp_accessor, **{t.name: t for t in INDEX_TABLES.values()}}
    with database.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t).where(t.c.patient_key == patient_key))
                .scalar_one() for name, t in tables.items()}


def _records(database, patient_key: str) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    """Every version filed in a DMP but its traces."""
    with database.engine.connect() as conn:
        rows = conn.execute(select(resource_version.c.resource_type, resource_version.c.id,
                                   resource_version.c.version_id)
                            .where(resource_version.c.patient_key == patient_key,
                                   resource_version.c.resource_type != "AuditEvent"))
        return sorted(tuple(r) for r in rows)


def _fill(client, dmp) -> dict:  # type: ignore[no-untyped-def]
    """Documents (one with its bytes in a Binary), an update, a professional's first access (a Communication and
    an accessor row), traces: a DMP that has lived."""
    c = dmp.callers
    doc = json_of(c["authorised"].post("DocumentReference", document(dmp.pid)))
    assert c["authorised"].put(f"DocumentReference/{doc['id']}", {**doc, "description": "v2"}).status_code == 200
    binary = json_of(client.post("Binary", {"resourceType": "Binary", "contentType": "text/plain",
                                            "securityContext": {"reference": f"DocumentReference/{doc['id']}"},
                                            "data": attachment(b"x")["data"]}))
    assert c["treating"].get(f"DocumentReference?patient={dmp.pid}").status_code == 200
    assert c["patient"].get(f"Patient/{dmp.pid}").status_code == 200
    return {"doc": doc["id"], "binary": binary["id"]}


def _backdate(client, pid: str, when: str) -> None:  # type: ignore[no-untyped-def]
    """A DMP closed long ago (as a migration would load it): the system back office may write the closure."""
    current = json_of(client.get(f"Patient/{pid}"))
    current["extension"] = [{"url": CLOSURE_URL, "extension": [
        {"url": "date", "valueDateTime": when}, {"url": "reason", "valueString": "Décès"}]}]
    assert client.put(f"Patient/{pid}", {**current, "active": False}).status_code == 200


def test_purge_removes_dmps_closed_before_the_limit_and_nothing_else(client, database):
    old, recent, kept = new_dmp(client), new_dmp(client), new_dmp(client)
    made = {d.pid: _fill(client, d) for d in (old, recent, kept)}
    _backdate(client, old.pid, "2012-03-04T10:00:00Z")
    assert recent.callers["patient"].post(f"Patient/{recent.pid}/$close", close_body()).status_code == 200
    assert _rows(database, old.pid)["resource_version"] > 5 and _rows(database, old.pid)["audit_chain"] == 1
    snapshot = {d.pid: _records(database, d.pid) for d in (recent, kept)}

    done = purge(database, ten_years_before(datetime(2026, 1, 1)), "http://testserver/fhir")
    assert [d["purged"] for d in done] == [f"Patient/{old.pid}"]
    assert done[0]["closed"] == "2012-03-04T10:00:00.000Z"

    assert all(n == 0 for n in _rows(database, old.pid).values()), _rows(database, old.pid)
    # (first: a search naming the purged id is traced under that id, as any search naming an unknown DMP)
    assert "entry" not in json_of(client.get(f"AuditEvent?patient={old.pid}"))
    for rtype, rid in (("Patient", old.pid), ("DocumentReference", made[old.pid]["doc"]),
                       ("Binary", made[old.pid]["binary"])):
        assert client.get(f"{rtype}/{rid}").status_code == 404
        assert client.get(f"{rtype}/{rid}/_history").status_code == 404
    assert "entry" not in json_of(client.get(f"DocumentReference?patient={old.pid}"))
    assert "entry" not in json_of(client.get(f"Patient?identifier={old.ins}"))
    # the others are as they were (reading them adds traces only)
    for d in (recent, kept):
        assert _records(database, d.pid) == snapshot[d.pid]
        assert client.get(f"DocumentReference/{made[d.pid]['doc']}").status_code == 200
    # the purge is recorded, on the server's chain, and every chain still verifies
    events = json_of(client.get(f"AuditEvent?entity=Patient/{old.pid}"))["entry"]
    (purged,) = [e["resource"] for e in events if e["resource"]["agent"][0]["who"]["identifier"]["value"]
                 == "fhir-dmp purge"]
    assert purged["action"] == "D" and purged["outcome"] == "0"
    details = {d["type"]: d["valueString"] for d in purged["entity"][0]["detail"]}
    assert details["closed"] == "2012-03-04T10:00:00.000Z" and details["audit-chain-head"].split()[0] != "0"
    verdicts = list(audit.verify(database))
    assert all(fault is None for _, _, fault in verdicts), verdicts
    # a second run finds nothing
    assert purge(database, ten_years_before(datetime(2026, 1, 1)), "http://testserver/fhir") == []


def test_a_closed_dmp_without_a_closure_date_is_never_purged(client, database):
    dmp = new_dmp(client)
    current = json_of(client.get(f"Patient/{dmp.pid}"))
    assert client.put(f"Patient/{dmp.pid}", {**current, "active": False}).status_code == 200
    assert purge(database, datetime(2100, 1, 1), "http://testserver/fhir") == []
    assert client.get(f"Patient/{dmp.pid}").status_code == 200


def test_the_command(client, database):
    old, recent = new_dmp(client), new_dmp(client)
    _backdate(client, old.pid, "2010-06-01")
    _backdate(client, recent.pid, "2024-06-01T00:00:00Z")

    def run(*args: str) -> list[dict]:
        result = CliRunner().invoke(main, ["purge", "--database-url", database.url, *args],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    assert run("--dry-run") == [{"would_purge": f"Patient/{old.pid}"}, {"purged": 0}]
    assert client.get(f"Patient/{old.pid}").status_code == 200
    lines = run()  # ten years before today
    assert lines[0]["purged"] == f"Patient/{old.pid}" and lines[-1] == {"purged": 1}
    assert client.get(f"Patient/{old.pid}").status_code == 404
    assert client.get(f"Patient/{recent.pid}").status_code == 200
    assert run("--closed-before", "2025-01-01")[-1] == {"purged": 1}
    assert client.get(f"Patient/{recent.pid}").status_code == 404
    bad = CliRunner().invoke(main, ["purge", "--database-url", database.url, "--closed-before", "yesterday"])
    assert bad.exit_code == 2 and "closed-before" in bad.output
