"""`fhir-dmp import --workers N`: Patients first, then the other resources over N processes, then the Bundles;
the same resources, refusals (by line number) and idempotence as a serial import."""

from __future__ import annotations

import json

from fhir_dmp.config import Settings
from fhir_dmp.services import parallel_import
from fhir_dmp.services.importing import Line
from tests.conftest import SECRET
from tests.fhirclient import patient
from tests.services.test_importing import INS, _count, _doc, _ins


def _run(database, path, workers: int = 2):  # type: ignore[no-untyped-def]
    settings = Settings(database_url=database.url, jwt_secret=SECRET)
    return parallel_import.run(database, settings, "http://test/fhir", 5, [path], workers).as_json()


def test_phases_read_from_the_start_of_a_line() -> None:
    assert parallel_import.phase_of(Line("f", 1, b'{"resourceType": "Patient", "id": "1"}')) == 0
    assert parallel_import.phase_of(Line("f", 1, b' { "resourceType":"DocumentReference"}')) == 1
    assert parallel_import.phase_of(Line("f", 1, b'{"resourceType":"Bundle","type":"transaction"}')) == 2
    # written otherwise: judged serially, last, as a serial import judges it
    assert parallel_import.phase_of(Line("f", 1, b'{"id":"1","resourceType":"Patient"}')) == 2
    assert parallel_import.phase_of(Line("f", 1, b"{not json")) == 2


def test_a_parallel_import_loads_and_refuses_as_a_serial_one(database, tmp_path):
    # documents before their Patients in the file: the Patients are stored first all the same
    lines = [json.dumps(_doc(i)) for i in range(12)] + [json.dumps(patient(_ins(i))) for i in range(12)]
    lines.insert(3, "{not json")  # line 4
    lines.insert(6, json.dumps({**_doc(50), "subject": {"identifier": {"system": INS, "value": _ins(99)}}}))  # 7
    lines.insert(9, json.dumps({"resourceType": "Account"}))  # line 10: a type not served
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": patient(_ins(70)), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**_doc(70), "subject": {"reference": "urn:uuid:p"}},
         "request": {"method": "POST", "url": "DocumentReference"}}]}
    lines.append(json.dumps(bundle))  # line 28
    path = tmp_path / "mixed.ndjson"
    path.write_text("\n".join(lines) + "\n")
    report = _run(database, path)
    assert [(r["line"], r["status"]) for r in report["refusals"]] == [(4, 400), (7, 422), (10, 404)]
    assert (report["read"], report["created"], report["refused"]) == (28, 26, 3), report
    assert _count(database, "Patient") == 13 and _count(database, "DocumentReference") == 13
    again = _run(database, path)
    assert (again["created"], again["skipped"], again["refused"]) == (0, 26, 3)
    assert _count(database, "Patient") == 13 and _count(database, "DocumentReference") == 13


def test_the_command_with_workers(database, tmp_path):
    from click.testing import CliRunner

    from fhir_dmp.cli import main
    from tests.services.test_importing import ROOT, _lines

    path = tmp_path / "cli.ndjson"
    path.write_text("\n".join(_lines(4)) + "\n")
    result = CliRunner().invoke(main, ["import", str(path), "--database-url", database.url, "--batch", "2",
                                       "--workers", "2"],
                                env={"FHIR_DMP_JWT_SECRET": SECRET, "FHIR_DMP_HOME": str(ROOT)})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["created"], report["refused"]) == (8, 0)
    assert _count(database, "Patient") == 4 and _count(database, "DocumentReference") == 4
