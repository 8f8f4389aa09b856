"""`fhir-dmp import`: NDJSON through the API's validation and policy, in batches, reporting bad lines by number,
and resumable after a crash without duplicates."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select, text

from fhir_dmp.cli import main
from fhir_dmp.config import Settings
from fhir_dmp.services.importing import Importer
from fhir_dmp.storage.tables import resource, resource_version, token_index
from tests.conftest import SECRET
from tests.fhirclient import document, patient

INS = "urn:oid:1.2.250.1.213.1.4.10"
ROOT = Path(__file__).resolve().parents[2]


def _ins(i: int) -> str:
    return f"2{i:012d}"


def _doc(i: int) -> dict:
    body = document("unused", text=f"compte rendu {i}".encode())
    body["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.1.{i}"}
    body["identifier"] = [{"use": "official", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.UUID(int=i)}"}]
    body["subject"] = {"identifier": {"system": INS, "value": _ins(i)}}  # the DMP named by INS
    return body


def _lines(n: int) -> list[str]:
    """n DMPs, each a Patient line then its document line."""
    return [json.dumps(r) for i in range(n) for r in (patient(_ins(i)), _doc(i))]


def _count(database, rtype: str) -> int:  # type: ignore[no-untyped-def]
    with database.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(resource).where(
            resource.c.resource_type == rtype, resource.c.deleted.is_(False))).scalar_one()


def _run(database, *paths: Path, batch: int = 200):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database.url, jwt_secret=SECRET)
    return Importer(database, settings, "http://test/fhir", batch).run(list(paths)).as_json()


def test_good_lines_are_loaded_bad_ones_reported_by_number(database, tmp_path):
    lines = _lines(3)
    lines.insert(2, "{not json")  # line 3
    lines.insert(4, json.dumps(patient(_ins(99), gender="bogus")))  # line 5: structure
    bad_doc = _doc(98)  # line 7: its DMP does not exist (422)
    lines.insert(6, json.dumps(bad_doc))
    lines.insert(7, json.dumps({"resourceType": "Account"}))  # line 8: a type not served
    lines.insert(8, "")  # blank: not a line to import
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join(lines) + "\n")
    report = _run(database, path, batch=4)  # bad lines in several batches: the rest of each is stored
    assert [r["line"] for r in report["refusals"]] == [3, 5, 7, 8]
    assert [r["status"] for r in report["refusals"]] == [400, 422, 422, 404]
    assert "JSON" in report["refusals"][0]["issue"]
    assert report["read"] == 10 and report["created"] == 6 and report["skipped"] == 0 and report["refused"] == 4
    assert _count(database, "Patient") == 3 and _count(database, "DocumentReference") == 3
    with database.engine.connect() as conn:  # each batch was traced, as the import's system identity
        events = conn.execute(select(resource_version.c.content).where(
            resource_version.c.resource_type == "AuditEvent")).scalars().all()
    assert events and all("fhir-dmp import" in e for e in events)


def test_gzip_and_a_second_run_skips_everything(database, tmp_path):
    path = tmp_path / "dmps.ndjson.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(_lines(5)) + "\n")
    first = _run(database, path, batch=3)
    assert (first["created"], first["skipped"], first["refused"]) == (10, 0, 0)
    again = _run(database, path, batch=7)
    assert (again["created"], again["skipped"], again["refused"]) == (0, 10, 0)
    assert _count(database, "Patient") == 5 and _count(database, "DocumentReference") == 5


def test_what_the_api_stored_is_skipped_by_its_identifier(database, tmp_path):
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps(patient(_ins(1))) + "\n")
    _run(database, path)
    # The same INS in another Patient (another name): already there, skipped (not a 409)
    other = tmp_path / "other.ndjson"
    other.write_text(json.dumps(patient(_ins(1), name=[{"family": "AUTRE"}])) + "\n")
    report = _run(database, other)
    assert (report["created"], report["skipped"], report["refused"]) == (0, 1, 0)


def test_a_transaction_bundle_line(database, tmp_path):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": patient(_ins(7)), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**_doc(7), "subject": {"reference": "urn:uuid:p"}},
         "request": {"method": "POST", "url": "DocumentReference"}}]}
    batch_bundle = {**bundle, "type": "batch"}
    path = tmp_path / "bundles.ndjson"
    path.write_text(json.dumps(bundle) + "\n" + json.dumps(batch_bundle) + "\n")
    report = _run(database, path)
    assert (report["created"], report["refused"]) == (2, 1) and report["refusals"][0]["line"] == 2
    again = _run(database, path)
    assert (again["created"], again["skipped"]) == (0, 2)
    assert _count(database, "Patient") == 1 and _count(database, "DocumentReference") == 1


def test_killed_mid_file_then_resumed_holds_every_resource_once(database, tmp_path):
    n = 400
    path = tmp_path / "big.ndjson"
    path.write_text("\n".join(_lines(n)) + "\n")
    env = {**os.environ, "FHIR_DMP_JWT_SECRET": SECRET, "FHIR_DMP_HOME": str(ROOT)}
    command = [sys.executable, "-m", "fhir_dmp.cli", "import", str(path), "--database-url", database.url,
               "--batch", "20"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _count(database, "Patient") < 60 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the import ended before it could be killed: make the file larger"
    partial = _count(database, "Patient") + _count(database, "DocumentReference")
    assert 0 < partial < 2 * n
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert report["refused"] == 0 and report["created"] + report["skipped"] == 2 * n
    assert report["skipped"] >= partial  # what the killed run committed was found there, not stored twice
    assert _count(database, "Patient") == n and _count(database, "DocumentReference") == n
    with database.engine.connect() as conn:  # each identifier once, none missing
        values = conn.execute(select(token_index.c.code).where(
            token_index.c.param == "identifier", token_index.c.system == INS,
            token_index.c.resource_type == "Patient")).scalars().all()
    assert sorted(values) == sorted(_ins(i) for i in range(n))


def test_the_command(database, tmp_path):
    path = tmp_path / "cli.ndjson"
    path.write_text("\n".join(_lines(2)) + "\n[]\n")
    out = tmp_path / "report.json"
    started = _database_now(database)
    result = CliRunner().invoke(main, ["import", str(path), "--database-url", database.url, "--batch", "3",
                                       "--report", str(out)],
                                env={"FHIR_DMP_JWT_SECRET": SECRET, "FHIR_DMP_HOME": str(ROOT)})
    assert result.exit_code == 1, result.output  # a line was refused
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["created"], report["refused"]) == (4, 1) and report["refusals"][0]["line"] == 5
    assert json.loads(out.read_text()) == report
    assert report["analyzed"] is True  # a load that stored something refreshes the planner's statistics
    if started is not None:
        with database.engine.connect() as conn:
            analysed = conn.execute(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'resource' "
                                         "AND schemaname = current_schema()")).scalar()
        assert analysed is not None and analysed >= started
    again = CliRunner().invoke(main, ["import", str(path), "--database-url", database.url],
                               env={"FHIR_DMP_JWT_SECRET": SECRET, "FHIR_DMP_HOME": str(ROOT)})
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["skipped"] == 4 and "analyzed" not in second  # nothing stored: nothing to analyse


def _database_now(database):  # type: ignore[no-untyped-def]
    """PostgreSQL's clock (what `last_analyze` is written with); None on SQLite."""
    if database.is_sqlite:
        return None
    with database.engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar()


def test_a_batch_names_its_dmps_by_ins_in_one_statement(database, tmp_path):
    """The DMPs a batch's documents name by INS, and their facts, come in one statement for the batch: the count
    of statements does not grow with the documents (it did by two a document)."""
    from fhir_dmp.storage.statements import counting, watch

    patients, documents = tmp_path / "patients.ndjson", tmp_path / "documents.ndjson"
    patients.write_text("\n".join(json.dumps(patient(_ins(i))) for i in range(3)) + "\n")
    _run(database, patients)
    watch(database.engine)
    costs = []
    for n in (3, 12):
        lines = [json.dumps({**_doc(i + 100 * n), "subject": {"identifier": {"system": INS, "value": _ins(i % 3)}}})
                 for i in range(n)]  # three DMPs each time (one trace each)
        documents.write_text("\n".join(lines) + "\n")
        with counting() as counts:
            report = _run(database, documents)
        assert (report["created"], report["refused"]) == (n, 0), report
        looked_up = sum("dmp_facts" in t or "idx_token" in t and "FROM resource" in t for t in counts.texts)
        costs.append((looked_up, counts.statements))
    assert costs[0][0] == costs[1][0], costs  # the DMPs' lookups
    if not database.is_sqlite:  # a round trip each (SQLite's in-process inserts are per table and row kind)
        assert costs[0][1] == costs[1][1], costs


def test_a_document_naming_a_stored_binary_is_checked_against_its_bytes(database, tmp_path):
    """Conformity is judged before the unit of work, except an attachment naming a Binary of the store: in the
    unit, where it is read; a wrong hash is refused there all the same, by line number."""
    import base64

    from tests.fhirclient import linked

    text = b"Resultats de biologie"
    first = tmp_path / "first.ndjson"
    first.write_text(json.dumps(patient(_ins(1))) + "\n" + json.dumps(
        {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(text).decode()}) + "\n")
    assert _run(database, first)["created"] == 2
    with database.engine.connect() as conn:
        bid = conn.execute(select(resource.c.id).where(resource.c.resource_type == "Binary")).scalar_one()
    good, bad = _doc(1), _doc(2)
    good["content"] = [{"attachment": linked(text, f"Binary/{bid}")}]
    bad["content"] = [{"attachment": linked(b"something else", f"Binary/{bid}")}]
    bad["subject"] = good["subject"]
    second = tmp_path / "second.ndjson"
    second.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    report = _run(database, second)
    assert (report["created"], report["refused"]) == (1, 1) and report["refusals"][0]["line"] == 1
    assert report["refusals"][0]["status"] == 422 and "size" in report["refusals"][0]["issue"]
