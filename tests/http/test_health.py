"""/healthz and /readyz in the app (the front's own tests reach them over a socket: test_front.py)."""

from __future__ import annotations

from fhir_dmp.http import health
from fhir_dmp.services.admin import Database, ping
from tests.http.helpers import outcome


def test_healthz_answers_without_a_token(app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["issue"][0]["diagnostics"] == "alive"


def test_readyz_is_200_when_the_database_answers(app):
    response = app.test_client().get("/readyz")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"


def test_readyz_is_503_with_retry_after_when_the_database_does_not_answer(app, monkeypatch):
    monkeypatch.setattr(health, "ping", lambda db: "the database did not answer within 3 s")
    response = app.test_client().get("/readyz")
    body = outcome(response, 503, "transient")
    assert response.headers["Retry-After"] == "5"
    assert "did not answer" in body["issue"][0]["diagnostics"]
    xml = app.test_client().get("/readyz", headers={"Accept": "application/fhir+xml"})
    assert xml.status_code == 503 and xml.headers["Content-Type"].startswith("application/fhir+xml")


def test_ping_says_why_a_database_does_not_answer():
    closed = Database("postgresql+psycopg://nobody@127.0.0.1:1/nothing")  # nothing listens on port 1
    try:
        why = ping(closed, timeout=10)
    finally:
        closed.dispose()
    assert why is not None and "OperationalError" in why


def test_ping_is_none_when_the_database_answers(database):
    assert ping(database) is None
