"""Work budgets of constraint compiles: bounded memory and time while an automaton is being built.

A state-count cap checked at the end does not bound a compile: `((a{0,50}){0,50}){0,50}` spends gigabytes
on epsilon closures before any DFA state exists. So the builders (regex_fsm, token_fsm via cache) charge
an estimate of the bytes they are about to hold, and check the clock, as they go; past either limit the
compile stops with a CompileBudgetError naming the pattern and the budget.

The active budget is per thread (`budget_scope`), so everything a compile calls below it (JSON schema →
regex → DFA → token table) is covered without threading a parameter through every builder. With no scope
active, `DEFAULT_MEM_BYTES` applies and there is no time limit: the default is deterministic, and callers
that need a deadline (the server's admission pool) use `api.compile_with_budget`.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator, Optional

from sglang.runtime.constrained.errors import CompileBudgetError

DEFAULT_MEM_BYTES = 512 << 20  # estimated bytes one compile may hold; the largest real-world schemas stay far below
# time budget of the admission-time compiles (api.build_constraint_from_sampling_params and friends): under
# the server's 30 s PreparePool timeout, so the worker thread stops and the client gets this clear error
ADMISSION_TIME_S = 20.0
_CLOCK_EVERY = 4096  # read the clock once per this many charges (charges are in tight loops)


class CompileBudget:
    """Limits of one compile: `mem_bytes` (estimated bytes held by the builders) and `time_s` (wall time
    from creation; None = no deadline). Not thread-safe: one budget belongs to one compiling thread."""

    def __init__(self, mem_bytes: int = DEFAULT_MEM_BYTES, time_s: Optional[float] = None) -> None:
        self.mem_bytes = int(mem_bytes)
        self.time_s = time_s
        self.deadline = None if time_s is None else time.monotonic() + time_s
        self.used = 0
        self._calls = 0

    def charge(self, nbytes: int, pattern: str) -> None:
        """Account `nbytes` more; raise CompileBudgetError past the memory budget or the deadline."""
        self.used += nbytes
        if self.used > self.mem_bytes:
            raise CompileBudgetError(pattern, f"needs more than its memory budget of {_mib(self.mem_bytes)} "
                                     "to compile (e.g. nested counted repetitions); simplify it")
        self._calls += 1
        if self.deadline is not None and self._calls % _CLOCK_EVERY == 0:
            self.check_time(pattern)

    def check_time(self, pattern: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CompileBudgetError(pattern, f"took longer than its time budget of {self.time_s:g} s to compile; "
                                     "simplify it")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


_local = threading.local()


def active_budget() -> CompileBudget:
    """The budget of the compile running on this thread, or a fresh default one (memory only)."""
    budget = getattr(_local, "budget", None)
    return budget if budget is not None else CompileBudget()


@contextlib.contextmanager
def budget_scope(budget: CompileBudget) -> Iterator[CompileBudget]:
    """Make `budget` the active one on this thread for the compiles inside the block."""
    old = getattr(_local, "budget", None)
    _local.budget = budget
    try:
        yield budget
    finally:
        _local.budget = old


@contextlib.contextmanager
def ensure_budget(mem_bytes: int = DEFAULT_MEM_BYTES, time_s: Optional[float] = None) -> Iterator[CompileBudget]:
    """The active budget if a compile already runs under one, else a new one for the block: nested entry
    points (a schema compiling its terminals) share their caller's limits instead of resetting them."""
    current = getattr(_local, "budget", None)
    if current is not None:
        yield current
        return
    with budget_scope(CompileBudget(mem_bytes, time_s)) as budget:
        yield budget
