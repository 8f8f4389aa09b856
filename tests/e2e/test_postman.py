"""End to end: the Postman collection (examples/postman/) run by newman against the real `fhir-dmp serve`.

The server is test_fhir_client.py's (`server` fixture: SQLite, and PostgreSQL when FHIR_DMP_TEST_POSTGRES_URL is
set); the tokens are minted here with its secret and handed to the collection as variables. newman is found, in
this order: the command in FHIR_DMP_NEWMAN, `node_modules/.bin/newman` of the repository, `newman` on the PATH,
else `npx --yes --prefer-offline newman@6` (downloaded once, then from npm's cache). Without any of them the test
fails, unless FHIR_DMP_SKIP_NEWMAN=1 says to skip it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from fhir_dmp.services.identity import mint_token
from tests.conftest import SECRET
from tests.e2e.test_fhir_client import ROOT, Server, server  # noqa: F401  (the fixture, reused)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.environ.get("FHIR_DMP_SKIP_NEWMAN") == "1",
                                                   reason="FHIR_DMP_SKIP_NEWMAN=1: the Postman collection is not run")]

COLLECTION = ROOT / "examples" / "postman" / "fhir-dmp.postman_collection.json"
NEWMAN = "newman@6"
RUN_SECONDS = 900  # a first `npx` run downloads newman

DOCTOR = "810001234567"
PHARMACIST = "810009876543"
STRANGER = "810007654321"


def tokens(ins: str) -> dict[str, str]:
    """The collection's token variables (README.md, "Postman collection", mints the same by hand)."""
    def token(**claims: str) -> str:
        return mint_token(claims, secret=SECRET)

    return {
        "tokenSystem": token(actor="system", sub="postman-collection"),
        "tokenDoctor": token(actor="professional", sub=DOCTOR, profession="10", specialty="SM26"),
        "tokenPatient": token(actor="patient", sub=ins, patient=ins),
        "tokenPharmacist": token(actor="professional", sub=PHARMACIST, profession="21"),
        "tokenStranger": token(actor="professional", sub=STRANGER, profession="10"),
        "tokenBtg": token(actor="professional", sub=STRANGER, profession="10", purpose_of_use="BTG",
                          access_reason="Patient inconscient admis aux urgences"),
    }


def collection_requests(items: list[dict]) -> list[str]:
    """The names of the collection's requests, folders walked in order."""
    names: list[str] = []
    for item in items:
        if "request" in item:
            names.append(item["name"])
        names.extend(collection_requests(item.get("item", [])))
    return names


@pytest.fixture(scope="module")
def newman() -> list[str]:
    """The command that runs newman."""
    if os.environ.get("FHIR_DMP_NEWMAN"):
        return shlex.split(os.environ["FHIR_DMP_NEWMAN"])
    local = ROOT / "node_modules" / ".bin" / "newman"
    if local.exists():
        return [str(local)]
    if found := shutil.which("newman"):
        return [found]
    if npx := shutil.which("npx"):
        return [npx, "--yes", "--prefer-offline", NEWMAN]
    pytest.fail("The Postman collection is run with newman, and neither newman nor npx (Node.js 18+) is on the "
                "PATH: install Node.js (npx fetches newman), or `npm install --prefix . --no-save newman@6`, or "
                "set FHIR_DMP_NEWMAN to a newman command; FHIR_DMP_SKIP_NEWMAN=1 skips this test.")


def _failures(report: dict) -> list[str]:
    """Each failed assertion or script error, readable."""
    out = []
    for failure in report["run"].get("failures", []):
        error = failure.get("error", {})
        where = failure.get("source", {}).get("name", "?")
        out.append(f"{where}: {error.get('test') or error.get('name')}: {error.get('message')}")
    return out


def test_the_postman_collection_passes(server: Server, newman: list[str], tmp_path: Path):  # noqa: F811
    collection = json.loads(COLLECTION.read_text(encoding="utf-8"))
    expected = collection_requests(collection["item"])
    assert expected, "the collection has no request"
    ins = "2" + str(uuid.uuid4().int)[:12]  # a fresh DMP per run
    variables = {"baseUrl": server.base, "ins": ins, **tokens(ins)}
    report_path = tmp_path / "newman-report.json"
    command = [*newman, "run", str(COLLECTION), "--reporters", "cli,json", "--reporter-json-export", str(report_path),
               "--color", "off", "--disable-unicode", "--timeout-request", "60000"]
    for key, value in variables.items():
        command += ["--env-var", f"{key}={value}"]
    env = {**os.environ, "NO_UPDATE_NOTIFIER": "1", "npm_config_update_notifier": "false"}
    try:
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"newman did not finish in {RUN_SECONDS} s:\n{exc.stdout}\n{exc.stderr}")
    output = f"{run.stdout}\n{run.stderr}"
    assert report_path.exists(), f"newman wrote no report (exit {run.returncode}):\n{output}"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    stats = report["run"]["stats"]
    failures = _failures(report)
    assert not failures, "\n".join(failures) + f"\n\n{output[-20000:]}"
    assert run.returncode == 0, output
    assert stats["assertions"]["failed"] == 0 and stats["assertions"]["total"] > 0, stats
    assert stats["testScripts"]["failed"] == 0 and stats["prerequestScripts"]["failed"] == 0, stats
    executed = [execution["item"]["name"] for execution in report["run"]["executions"]]
    assert executed == expected, f"requests run {len(executed)} != in the collection {len(expected)}"
    assert stats["requests"]["total"] == len(expected) and stats["requests"]["failed"] == 0, stats
    # every request is checked by at least one assertion
    unchecked = [e["item"]["name"] for e in report["run"]["executions"] if not e.get("assertions")]
    assert not unchecked, unchecked
