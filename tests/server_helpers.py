"""Shared helpers of the HTTP server tests (the module-scoped `server` fixture itself is in conftest.py)."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_until(cond: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.02) -> Any:
    """The truthy value of `cond()` once it has one; AssertionError naming `what` past `timeout` s.

    For state of a server in another thread or process that offers no notification: the outcome never
    depends on the timing, `timeout` is only a bound that turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (not within {timeout:g} s)")
        time.sleep(poll_s)


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


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first, ppid second); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def child_pids(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc; the tests need no psutil)."""
    import os

    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] == str(pid) and st[0] != "Z":
                out.append(int(name))
    return out


def process_gone(pid: int) -> bool:
    """The process exited (a zombie not reaped yet counts as gone)."""
    st = _stat(pid)
    return st is None or st[0] in ("Z", "X")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid is gone; returns those still alive at the deadline."""
    try:
        wait_until(lambda: all(process_gone(p) for p in pids), timeout, "processes still alive", poll_s=0.1)
    except AssertionError:
        pass
    return [p for p in pids if not process_gone(p)]


def read_until_ready(proc: Any, timeout: float) -> list[str]:
    """A launched server's output lines up to its "The server is ready" line (asserted to be the last)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "The server is ready" in line:
            break
    assert lines and "The server is ready" in lines[-1], "".join(lines)[-3000:]
    return lines
