"""A real HTTP receiver for subscription notifications, started by a test: it records every Bundle POSTed to it,
answers 200 (or what the test tells it), and can be taken down and brought back up on the same port."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.serving import free_port


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[dict] = []
        self.headers: list[dict[str, str]] = []  # of each request, in order
        self.status = 200
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._lock:
                    owner.received.append(json.loads(body))
                    owner.headers.append(dict(self.headers.items()))
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *_exc: object) -> None:
        self.down()

    # -- what arrived ------------------------------------------------------------------------------------------------
    def of_type(self, kind: str) -> list[dict]:
        with self._lock:
            return [b for b in self.received if status_of(b)["type"] == kind]

    def events(self) -> list[tuple[int, str | None]]:
        """(event number, focus reference or None) of every event notified, in arrival order."""
        out = []
        for bundle in self.of_type("event-notification"):
            for param in status_of(bundle)["events"]:
                out.append(param)
        return out

    def wait_for(self, predicate: Any, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not get what was expected in {seconds} s: {self.received}")
            time.sleep(0.05)


def status_of(bundle: dict) -> dict:
    """The SubscriptionStatus of a notification Bundle (its first entry), as plain values."""
    params = bundle["entry"][0]["resource"]["parameter"]
    out: dict = {"events": []}
    for p in params:
        if p["name"] == "notification-event":
            parts = {q["name"]: q for q in p["part"]}
            focus = parts.get("focus", {}).get("valueReference", {}).get("reference")
            out["events"].append((int(parts["event-number"]["valueString"]), focus))
        else:
            out[p["name"]] = next(v for k, v in p.items() if k.startswith("value"))
    return out
