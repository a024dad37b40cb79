"""Shared helpers of the HTTP server tests (the module-scoped `server` fixture itself is in conftest.py)."""
from __future__ import annotations

import time
from typing import Any


def wait_idle(engine: Any, timeout: float = 30.0, *, settle: bool = False) -> None:
    """Wait until the scheduler has neither running nor waiting requests, then check the KV pool invariant.

    settle=True keeps re-checking a failing invariant until the deadline instead of failing at the first
    idle moment (for tests that abort requests or drop connections mid-stream).
    """
    deadline = time.monotonic() + timeout
    while True:
        s = engine.stats()
        if s["running"] == 0 and s["waiting"] == 0:
            try:
                engine.check_invariant()
                return
            except AssertionError:
                if not settle or time.monotonic() > deadline:
                    raise
        elif time.monotonic() > deadline:
            raise AssertionError(f"engine not idle after {timeout}s: {s}")
        time.sleep(0.05)
