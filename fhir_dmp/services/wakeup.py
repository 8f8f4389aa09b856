"""The in-process nudge from a committed write to this process's delivery worker: only a hint to look now rather
than at its next poll. Every decision is the database's (the outbox, the leases), so two processes never
disagree; a process without a worker is nudged for nothing."""

from __future__ import annotations

import threading

NUDGE = threading.Event()


def wake() -> None:
    NUDGE.set()
