"""A real `fhir-dmp serve` for the end-to-end tests: started in its own process group, waited for until it
answers, stopped (SIGTERM, then SIGKILL of its group) whatever the test did."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests


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
