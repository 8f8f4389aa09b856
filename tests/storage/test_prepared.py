"""The hot statements are prepared on the server for real (psycopg ignores `prepare=True` when automatic
preparation is switched off with a threshold of None: planned afresh at every run, a measured doubling of
PostgreSQL's CPU per read), and nothing else is prepared behind our back."""

from __future__ import annotations

from sqlalchemy import text

from fhir_dmp.storage import dmps, prepared


def test_a_hot_statement_is_prepared_once_and_reused(postgres_database) -> None:  # type: ignore[no-untyped-def]
    with postgres_database.engine.connect() as conn:
        for _ in range(3):
            assert dmps.facts_of(conn, "no-such-dmp") is None
        held = conn.execute(text("SELECT statement FROM pg_prepared_statements "
                                 "WHERE statement LIKE 'SELECT dmp_facts.facts%' AND NOT from_sql")).scalars().all()
        assert len(held) == 1, held


def test_other_statements_are_never_prepared_automatically(postgres_database) -> None:  # type: ignore[no-untyped-def]
    with postgres_database.engine.connect() as conn:
        for _ in range(10):  # psycopg's default threshold is 5 runs
            conn.execute(text("SELECT count(*) FROM resource WHERE patient_key = :k"), {"k": "x"})
        held = conn.execute(text("SELECT statement FROM pg_prepared_statements WHERE statement LIKE "
                                 "'%FROM resource WHERE patient_key%'")).scalars().all()
        assert held == []


def test_sqlite_runs_the_same_statements_unprepared(database) -> None:  # type: ignore[no-untyped-def]
    with database.engine.connect() as conn:
        assert prepared.rows(conn, dmps._FACTS, {"key": "nobody"}) == []
