"""Fixtures: every test that takes `database` runs on SQLite, and on PostgreSQL too when
FHIR_DMP_TEST_POSTGRES_URL is set (in its own schema, emptied between tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fhir_dmp.config import Settings
from fhir_dmp.http.app import create_app
from fhir_dmp.storage.db import Database
from fhir_dmp.storage.migrate import upgrade
from fhir_dmp.storage.tables import metadata
from tests.fhirclient import FhirTestClient

# CI is a gate: there the property tests replay a fixed sequence of examples (a rare input found for the first
# time must not decide a landing); everywhere else they explore new ones on every run.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

SECRET = "test-secret-at-least-thirty-two-bytes-long"
PG_URL = os.environ.get("FHIR_DMP_TEST_POSTGRES_URL")
PG_SCHEMA = f"fhir_dmp_test_{os.getpid()}"  # one schema per pytest session: concurrent runs never collide
BACKENDS = ["sqlite"] + (["postgres"] if PG_URL else [])


def postgres_url() -> str:
    """The test URL pinned to our own schema, so the tests never touch anything else in that database."""
    assert PG_URL
    url = make_url(PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={PG_SCHEMA}"}).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Database]:
    if not PG_URL:
        pytest.skip("FHIR_DMP_TEST_POSTGRES_URL is not set")
    bootstrap = Database(PG_URL)
    try:
        with bootstrap.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    except Exception as exc:  # noqa: BLE001 - an unreachable PostgreSQL must fail the run, not skip it
        pytest.fail(f"FHIR_DMP_TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {exc}", pytrace=False)
    finally:
        bootstrap.dispose()
    db = Database(postgres_url())
    upgrade(db)
    yield db
    db.dispose()
    cleanup = Database(PG_URL)
    with cleanup.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
    cleanup.dispose()


def _empty(db: Database) -> None:
    names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    """A migrated, empty database: a fresh SQLite file, or the PostgreSQL test schema emptied."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'fhir-dmp.db'}")
        upgrade(db)
        yield db
        db.dispose()
    else:
        db = request.getfixturevalue("postgres_database")
        _empty(db)
        yield db


@pytest.fixture
def settings(database: Database) -> Settings:
    return Settings(database_url=database.url, jwt_secret=SECRET, max_body_bytes=1024 * 1024)


@pytest.fixture
def app(settings: Settings, database: Database):  # type: ignore[no-untyped-def]
    return create_app(settings, database=database)


@pytest.fixture
def client(app) -> FhirTestClient:  # type: ignore[no-untyped-def]
    """A FHIR client on the app, authenticated as a system caller unless told otherwise."""
    return FhirTestClient(app.test_client(), SECRET)
