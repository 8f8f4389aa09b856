"""Concurrency tests' one way of running work on threads released together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

THREADS = 8
TIMEOUT = 180  # seconds for a whole concurrent run; a hang fails the test instead of blocking the suite


def in_parallel(work: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """Run work(0..n-1) on n threads released together by a barrier; every result, or the first error."""
    barrier = threading.Barrier(n, timeout=TIMEOUT)

    def run(k: int) -> Any:
        barrier.wait()
        return work(k)

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run, k) for k in range(n)]
        return [f.result(timeout=TIMEOUT) for f in futures]
