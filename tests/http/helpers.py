"""Assertions and small walks shared by the HTTP tests."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from tests.fhirclient import json_of, patient


def outcome(resp, status: int, code: str | None = None) -> dict:
    """The response is `status` with a JSON OperationOutcome whose issues all have a code and diagnostics."""
    assert resp.status_code == status, resp.data
    assert resp.headers["Content-Type"].startswith("application/fhir+json"), resp.headers["Content-Type"]
    body = json_of(resp)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(i.get("code") and i.get("diagnostics") for i in body["issue"])
    if code is not None:
        assert code in [i["code"] for i in body["issue"]], body
    return body


def create(client, resource: dict) -> dict:
    resp = client.post(resource["resourceType"], resource)
    assert resp.status_code == 201, resp.data
    return json_of(resp)


def new_patient(client, ins: str = "1800175123456", **extra) -> str:
    return create(client, patient(ins, **extra))["id"]


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def bundle(client, path: str, **kw) -> dict:
    resp = client.get(path, **kw)
    assert resp.status_code == 200, resp.data
    body = json_of(resp)
    assert body["resourceType"] == "Bundle"
    return body


def link(body: dict, relation: str) -> str | None:
    return next((lk["url"] for lk in body.get("link", []) if lk["relation"] == relation), None)


def walk(client, path: str) -> tuple[list[dict], int]:
    """Every entry of every page, following `next` links; and the number of pages."""
    entries, pages, url = [], 0, path
    while url:
        page = bundle(client, url)
        pages += 1
        entries += page.get("entry", [])
        nxt = link(page, "next")
        url = relative(nxt) if nxt else None
        assert pages < 50
    return entries, pages


def ids(body: dict) -> list[str]:
    entries = body.get("entry", [])
    return [e["resource"]["id"] for e in entries if e.get("search", {}).get("mode") != "outcome"]


def history_total(client) -> int:
    """Versions written by clients (whatever traces the server may keep as AuditEvents aside)."""
    entries, _ = walk(client, "_history?_count=1000")
    return len([e for e in entries if "/AuditEvent/" not in e["fullUrl"]])


def pause() -> None:
    """Keep successive writes on distinct milliseconds (lastUpdated precision)."""
    time.sleep(0.005)
