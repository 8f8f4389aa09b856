"""Alembic migrations: `upgrade()` builds exactly the schema `tables.py` declares, on SQLite and on
PostgreSQL (an empty schema of its own), is idempotent, and `fhir-dmp db upgrade` reports the revision."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from fhir_dmp.cli import main
from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import alembic_config, current_revision, upgrade
from fhir_dmp.storage.tables import metadata
from tests.conftest import PG_URL, SECRET
from tests.fhirclient import FhirTestClient, json_of, patient

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
VERSION_TABLE = "alembic_version"


def _pg_schema_url(schema: str) -> str:
    assert PG_URL
    url = make_url(PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The URL of an empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    if not PG_URL:
        pytest.skip("FHIR_DMP_TEST_POSTGRES_URL is not set")
    schema = f"fhir_dmp_migrations_{uuid.uuid4().hex[:12]}"
    admin = Database(PG_URL)
    with admin.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def empty_db(empty_url: str) -> Iterator[Database]:
    db = Database(empty_url)
    yield db
    db.dispose()


def _differences(db: Database) -> list:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, metadata)


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _schema_shape(db: Database) -> dict[str, dict]:
    """Table -> columns (name, nullable), index names and columns, unique constraints, as reflected."""
    with db.engine.connect() as conn:
        insp = inspect(conn)
        shape = {}
        for table in insp.get_table_names():
            shape[table] = {
                "columns": sorted((c["name"], c["nullable"]) for c in insp.get_columns(table)),
                "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                                  for i in insp.get_indexes(table)),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
                "pk": tuple(insp.get_pk_constraint(table)["constrained_columns"]),
                "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                              for f in insp.get_foreign_keys(table)),
            }
        return shape


def _declared_shape() -> dict[str, dict]:
    shape = {}
    for table in metadata.sorted_tables:
        shape[table.name] = {
            "columns": sorted((c.name, bool(c.nullable)) for c in table.columns),
            "indexes": sorted((i.name, tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes),
            "unique": sorted((u.name, tuple(c.name for c in u.columns)) for u in table.constraints
                             if u.__class__.__name__ == "UniqueConstraint"),
            "pk": tuple(c.name for c in table.primary_key.columns),
            "fks": sorted((tuple(fk.parent.name for fk in con.elements), con.referred_table.name,
                           tuple(fk.column.name for fk in con.elements)) for con in table.foreign_key_constraints),
        }
    return shape


def test_there_is_one_head_revision():
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [HEAD]


def test_upgrade_creates_exactly_the_declared_schema(empty_db):
    assert _tables(empty_db) == set()
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == HEAD
    assert _tables(empty_db) == set(metadata.tables) | {VERSION_TABLE}
    assert _differences(empty_db) == []
    reflected = _schema_shape(empty_db)
    reflected.pop(VERSION_TABLE)
    declared = _declared_shape()
    for name in declared:
        for part in ("columns", "indexes", "unique", "pk", "fks"):
            got = reflected[name][part]
            if part == "indexes":
                # the indexes that back UNIQUE constraints (sqlite_autoindex_*, or the constraint's name)
                unique_names = {u[0] for u in declared[name]["unique"]}
                got = [i for i in got if i[0] not in unique_names and not (i[0] or "").startswith("sqlite_")]
            assert got == declared[name][part], f"{name}.{part}"


def test_upgrade_twice_is_a_no_op_and_keeps_the_data(empty_db):
    upgrade(empty_db)
    settings = Settings(database_url=empty_db.url, jwt_secret=SECRET)
    client = FhirTestClient(create_app(settings, database=empty_db).test_client(), SECRET)
    created = client.post("Patient", patient())
    assert created.status_code == 201, created.data
    pid = json_of(created)["id"]
    before = _schema_shape(empty_db)
    upgrade(empty_db)
    upgrade(empty_db)
    assert current_revision(empty_db) == HEAD
    assert _schema_shape(empty_db) == before
    assert _differences(empty_db) == []
    with empty_db.transaction() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [HEAD]
    read = client.get(f"Patient/{pid}")
    assert read.status_code == 200 and json_of(read)["identifier"] == patient()["identifier"]
    assert json_of(client.get(f"Patient?identifier={patient()['identifier'][0]['value']}"))["total"] == 1


def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(empty_db):
    upgrade(empty_db)
    config = alembic_config()
    with empty_db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert _tables(empty_db) <= {VERSION_TABLE}
    assert current_revision(empty_db) is None
    upgrade(empty_db)
    assert current_revision(empty_db) == HEAD
    assert _differences(empty_db) == []


def test_cli_db_upgrade_migrates_and_prints_the_revision(empty_url):
    runner = CliRunner()
    for _ in range(2):  # the second run finds it done and says so
        result = runner.invoke(main, ["db", "upgrade", "--database-url", empty_url])
        assert result.exit_code == 0, result.output + repr(result.exception)
        report = json.loads(result.output.strip().splitlines()[-1])
        assert report["revision"] == HEAD
        assert "@" not in report["database"]  # no credentials in the output
    db = Database(empty_url)
    try:
        assert current_revision(db) == HEAD
        assert _tables(db) == set(metadata.tables) | {VERSION_TABLE}
        assert _differences(db) == []
    finally:
        db.dispose()


def test_cli_db_upgrade_reads_the_url_from_the_environment(empty_url, monkeypatch):
    monkeypatch.setenv("FHIR_DMP_DATABASE_URL", empty_url)
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads(result.output.strip().splitlines()[-1])["revision"] == HEAD
