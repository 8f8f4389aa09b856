"""A real `fhir-dmp serve` for the end-to-end tests: started in its own process group, waited for until it
answers, stopped (SIGTERM, then SIGKILL of its group) whatever the test did."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def checkout_env(secret: str, **settings: str) -> dict[str, str]:
    """The environment of a server run from this checkout: none of the caller's FHIR_DMP_ settings, the token
    secret, the checkout's data and code, and `settings` (FHIR_DMP_... names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_DMP_")}
    env.update(FHIR_DMP_JWT_SECRET=secret, FHIR_DMP_HOME=str(ROOT), **settings,
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return env


def serve_command(port: int, database_url: str, *options: str, host: str = "127.0.0.1") -> list[str]:
    """`fhir-dmp serve` from this checkout on `host:port`."""
    return [sys.executable, "-m", "fhir_dmp.cli", "serve", "--host", host, "--port", str(port), *options,
            "--database-url", database_url]


@contextmanager
def served(command: list[str], *, cwd: Path, env: dict[str, str], log: Path, ready_url: str,
           seconds: float) -> Iterator[subprocess.Popen]:
    """Run `command` (its output to `log`) until the block ends; fail the test if `ready_url` does not answer
    200 within `seconds`, or if the server exits first."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + seconds
        while True:
            if proc.poll() is not None:
                pytest.fail(f"fhir-dmp serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if requests.get(ready_url, timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still starting (a loaded machine)
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fhir-dmp serve did not answer {ready_url} in {seconds} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server (it stops its workers); SIGKILL to its process group if it is stuck."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
