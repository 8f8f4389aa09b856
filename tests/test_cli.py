"""The `fhir-dmp` command line: development tokens, loading the examples, schema upgrades."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from fhir_dmp.cli import main
from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import alembic_config
from tests.conftest import PG_URL, SECRET
from tests.fhirclient import FhirTestClient, json_of

ROOT = Path(__file__).resolve().parents[1]
CLAIRE_INS = "urn:oid:1.2.250.1.213.1.4.10|280017512345678"
CLEAN_ENV = {"FHIR_DMP_JWT_SECRET": SECRET, "FHIR_DMP_JWT_PRIVATE_KEY": None, "FHIR_DMP_DATABASE_URL": None,
             "FHIR_DMP_JWT_PUBLIC_KEY": None, "FHIR_DMP_BASE_URL": None, "FHIR_DMP_HOME": str(ROOT)}


def run(*args: str, **env: str | None):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **env}, catch_exceptions=False)
    return result


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()  # type: ignore[return-value]


# -- token ------------------------------------------------------------------------------------


def test_token_carries_the_claims_and_an_expiry():
    before = int(time.time())
    result = run("token", "--actor", "professional", "--sub", "810001234567", "--profession", "10",
                 "--specialty", "SM26")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.count(".") == 2 and "\n" not in token
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    assert claims["actor"] == "professional"
    assert claims["sub"] == "810001234567"
    assert claims["profession"] == "10"
    assert claims["specialty"] == "SM26"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 3600
    # options not given are not in the token
    assert not {"organization", "patient", "purpose_of_use", "access_reason", "secret"} & set(claims)


@pytest.mark.parametrize("args", [
    ["--actor", "professional", "--sub", "810001234567", "--specialty", " SM25"],
    ["--actor", "professional", "--sub", "x", "--profession", "10"],
    ["--actor", "patient", "--sub", "1800175123456", "--patient", "1800175123456 "],
])
def test_token_refuses_claims_the_server_would_refuse(args):
    result = run("token", *args)
    assert result.exit_code != 0 and "claim" in result.output


def test_token_signature_depends_on_the_secret():
    token = run("token", "--actor", "system", "--sub", "x").output.strip()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-of-at-least-thirty-two-bytes", algorithms=["HS256"])


def test_token_options(tmp_path):
    result = run("token", "--actor", "patient", "--sub", "280017512345678", "--patient", "280017512345678",
                 "--purpose-of-use", "BTG", "--access-reason", "urgence vitale", "--secret", "--ttl", "60")
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert claims["patient"] == "280017512345678" and claims["purpose_of_use"] == "BTG"
    assert claims["access_reason"] == "urgence vitale" and claims["secret"] is True
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.parametrize("args", [
    ["token", "--actor", "doctor", "--sub", "x"],
    ["token", "--actor", "professional"],
    ["token", "--actor", "professional", "--sub", "x", "--purpose-of-use", "HACK"],
])
def test_token_rejects_bad_options(args):
    result = run(*args)
    assert result.exit_code == 2, result.output


def test_token_rs256_with_a_private_key_file(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "private.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    result = run("token", "--actor", "system", "--sub", "batch", FHIR_DMP_JWT_PRIVATE_KEY=str(pem))
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, key.public_key(), algorithms=["RS256"])
    assert claims["sub"] == "batch"


def test_cli_tokens_are_what_the_server_accepts_and_refuses(app):
    client = FhirTestClient(app.test_client(), SECRET)
    doctor = run("token", "--actor", "professional", "--sub", "810001234567", "--profession", "10",
                 "--specialty", "SM26").output.strip()
    insurer = run("token", "--actor", "insurer", "--sub", "CPAM-75").output.strip()
    assert client.get("Practitioner", auth=False, headers={"Authorization": f"Bearer {doctor}"}).status_code == 200
    refused = client.get("Patient", auth=False, headers={"Authorization": f"Bearer {insurer}"})
    assert refused.status_code == 403 and json_of(refused)["issue"][0]["code"] == "forbidden"


def test_token_through_the_real_entry_point():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_DMP_")}
    env["FHIR_DMP_JWT_SECRET"] = SECRET
    out = subprocess.run([sys.executable, "-m", "fhir_dmp.cli", "token", "--actor", "professional", "--sub",
                          "810001234567", "--profession", "10", "--specialty", "SM26"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    claims = jwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["specialty"] == "SM26" and claims["exp"] > time.time()


# -- load-examples ----------------------------------------------------------------------------


def _client_on(url: str) -> tuple[FhirTestClient, Database]:
    db = Database(url)
    app = create_app(Settings(database_url=url, jwt_secret=SECRET), database=db)
    return FhirTestClient(app.test_client(), SECRET), db


def _total(client: FhirTestClient, query: str) -> int:
    response = client.get(query)
    assert response.status_code == 200, response.data
    return json_of(response)["total"]


def test_load_examples_on_a_fresh_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'examples.db'}"
    result = run("load-examples", FHIR_DMP_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert "01-dmp-claire-martin.json: 200" in result.output

    client, db = _client_on(url)
    try:
        found = json_of(client.get(f"Patient?identifier={CLAIRE_INS}"))
        assert found["total"] == 1
        claire = found["entry"][0]["resource"]
        assert claire["name"][0]["family"] == "MARTIN" and "Claire" in claire["name"][0]["given"]
        pid = claire["id"]

        docs = json_of(client.get(f"DocumentReference?patient={pid}"))
        assert docs["total"] == 1
        doc = docs["entry"][0]["resource"]
        assert doc["subject"]["reference"] == f"Patient/{pid}"
        # every urn:uuid of the Bundle was replaced by the id it stands for
        assert "urn:uuid:0b6f3c2e" not in json.dumps(doc)
        author = doc["author"][0]["reference"]
        assert author.startswith("Practitioner/") and client.get(author).status_code == 200
        attachment = doc["content"][0]["attachment"]
        assert base64.b64decode(attachment["data"]).startswith(b"Compte rendu de consultation")
        assert attachment["size"] == len(base64.b64decode(attachment["data"]))
    finally:
        db.dispose()


def test_load_examples_twice_does_not_duplicate_the_patient(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    kinds = ("Patient", "Practitioner", "Organization", "DocumentReference", "Binary", "List", "Consent",
             "Composition")
    assert run("load-examples", FHIR_DMP_DATABASE_URL=url).exit_code == 0
    client, db = _client_on(url)
    try:
        first = {kind: _total(client, kind) for kind in kinds}
    finally:
        db.dispose()
    second = run("load-examples", FHIR_DMP_DATABASE_URL=url)
    assert second.exit_code == 0, second.output
    client, db = _client_on(url)
    try:
        assert _total(client, f"Patient?identifier={CLAIRE_INS}") == 1
        assert first["Patient"] >= 1 and first["DocumentReference"] >= 1
        # ifNoneExist on INS, idNatPs, FINESS and masterIdentifier: a second load adds nothing
        assert {kind: _total(client, kind) for kind in kinds} == first
        pid = json_of(client.get(f"Patient?identifier={CLAIRE_INS}"))["entry"][0]["resource"]["id"]
        history = json_of(client.get(f"Patient/{pid}/_history"))
        assert history["total"] == 1  # ifNoneExist matched: the Patient was not even updated
    finally:
        db.dispose()


def test_load_examples_reports_a_bad_file_without_a_traceback(tmp_path):
    bad = tmp_path / "examples"
    bad.mkdir()
    (bad / "01-bad.json").write_text(json.dumps({"resourceType": "Patient", "gender": "robot"}))
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    result = CliRunner().invoke(main, ["load-examples", "--directory", str(bad)],
                                env={**CLEAN_ENV, "FHIR_DMP_DATABASE_URL": url})
    assert result.exit_code != 0
    assert "01-bad.json: 422" in str(result.exception) or "01-bad.json: 422" in result.output
    assert "Traceback" not in result.output
    client, db = _client_on(url)
    try:
        assert _total(client, "Patient") == 0
    finally:
        db.dispose()


# -- db upgrade -------------------------------------------------------------------------------


def test_db_upgrade_on_a_fresh_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run("db", "upgrade", "--database-url", url)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["revision"] == head_revision()
    assert "fresh.db" in report["database"]
    db = Database(url)
    try:
        tables = set(inspect(db.engine).get_table_names())
        assert {"resource", "resource_version", "alembic_version"} <= tables
    finally:
        db.dispose()
    again = run("db", "upgrade", "--database-url", url)  # idempotent
    assert again.exit_code == 0 and json.loads(again.output)["revision"] == head_revision()


def test_db_upgrade_reads_the_url_from_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = run("db", "upgrade", FHIR_DMP_DATABASE_URL=url)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


@pytest.mark.postgres
def test_db_upgrade_on_postgresql():
    if not PG_URL:
        pytest.skip("FHIR_DMP_TEST_POSTGRES_URL is not set")
    schema = "cli_schema"
    bootstrap = Database(PG_URL)
    try:
        with bootstrap.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = make_url(bootstrap.url).update_query_dict({"options": f"-csearch_path={schema}"})
        result = run("db", "upgrade", "--database-url", url.render_as_string(hide_password=False))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["revision"] == head_revision()
        with bootstrap.engine.connect() as conn:
            names = set(conn.execute(text("SELECT table_name FROM information_schema.tables "
                                          "WHERE table_schema = :s"), {"s": schema}).scalars())
        assert {"resource", "resource_version", "alembic_version"} <= names
    finally:
        with bootstrap.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        bootstrap.dispose()


# -- --version, serve's refusals, doctor, progress --------------------------------------------


def test_version():
    from fhir_dmp.version import __version__

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"fhir-dmp {__version__}"


def test_serve_refuses_to_start_without_a_key(tmp_path):
    result = run("serve", "--database-url", f"sqlite:///{tmp_path / 'nokey.db'}", FHIR_DMP_JWT_SECRET=None)
    assert result.exit_code == 78, result.output
    assert "FHIR_DMP_JWT_PUBLIC_KEY" in result.output and "--dev-secret" in result.output
    assert not (tmp_path / "nokey.db").exists()  # refused before anything was done


def test_serve_says_when_the_port_is_taken(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run("serve", "--port", str(port), "--dev-secret", "--database-url",
                     f"sqlite:///{tmp_path / 'taken.db'}", FHIR_DMP_JWT_SECRET=None)
    assert result.exit_code == 69, result.output
    assert f"127.0.0.1:{port}" in result.output and "another program listens there" in result.output
    assert "serving" not in result.output and time.monotonic() - started < 5


def test_doctor_on_a_working_set_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'doctor.db'}"
    assert run("db", "upgrade", "--database-url", url).exit_code == 0
    result = run("doctor", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert "FHIR_DMP_JWT_SECRET (HS256" in result.output and SECRET not in result.output
    assert f"(this release: {head_revision()}): up to date" in result.output
    assert "database answers       yes" in result.output


def test_doctor_finds_what_is_wrong(tmp_path):
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    result = run("doctor", "--database-url", url, FHIR_DMP_JWT_SECRET=None)
    assert result.exit_code == 1
    assert "problem: no token key" in result.output and "does not exist" in result.output
    assert not (tmp_path / "absent.db").exists()
    # a database that does not answer; its password is not printed
    down = run("doctor", "--database-url", "postgresql+psycopg://fhir:s3cret@127.0.0.1:1/dmp")
    assert down.exit_code == 1 and "problem: the database does not answer" in down.output
    assert "s3cret" not in down.output and "fhir:***@127.0.0.1:1/dmp" in down.output
    # a database behind this release's schema
    behind = tmp_path / "behind.db"
    Database(f"sqlite:///{behind}").engine.connect().close()  # an empty file: no revision
    stale = run("doctor", "--database-url", f"sqlite:///{behind}")
    assert stale.exit_code == 1 and "this release needs" in stale.output


def test_load_examples_takes_a_database_url_and_shows_progress(tmp_path):
    url = f"sqlite:///{tmp_path / 'option.db'}"
    result = CliRunner().invoke(main, ["load-examples", "--database-url", url], env={**CLEAN_ENV},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "01-dmp-claire-martin.json: 200" in result.stdout
    assert "loading" in result.stderr and "loading" not in result.stdout  # the progress bar is on stderr
    assert (tmp_path / "option.db").exists()
