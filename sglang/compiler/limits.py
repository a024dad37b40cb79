"""Bounds on the work one program run may do (program endpoints: a 30-byte request must not build a
2.5M-token prompt, a million-wide fork or an endless run).

A program's arguments decide its fork widths, loop counts and prompt lengths at run time, so a small
request can ask for unbounded work. `ProgramLimits` caps each resource per request: the items of a
batch request share one `WorkMeter` (fork width x items is bounded, not each item alone), which counts
what the request used and raises `ProgramLimitError` (naming the limit) the moment a
count would pass its cap, before the memory or the engine work is spent. The checks cost a comparison
per step; `sglang run` (the user's own machine) runs without limits unless asked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from sglang.lang.sgl.errors import SglRuntimeError


class ProgramLimitError(SglRuntimeError):
    """A run passed one of its `ProgramLimits`; `limit` is the limit's name (the caller's 4xx names it)."""

    kind = "limit exceeded"

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message, hint=f"the server's limit {limit!r} bounds this; ask with less work")
        self.limit = limit


@dataclass(frozen=True)
class ProgramLimits:
    """Per-request caps. `max_prompt_chars` bounds one stream's text (the prompt of its next gen): the engine
    refuses a longer prompt anyway, so building it would only waste memory."""

    max_prompt_chars: int = 1 << 20  # one stream's text; lowered to the engine's own bound by for_backend
    max_total_chars: int = 16 << 20  # text appended over all streams of the run (forks copy their parent's)
    max_streams: int = 1024  # every item's main stream plus every fork branch
    max_gens: int = 4096  # engine requests (gens, select scorings, warm-up prefills)
    max_loop_iters: int = 10_000  # iterations of one loop
    max_seconds: float = 600.0  # wall time from admission to the answer

    def for_backend(self, backend: Any) -> "ProgramLimits":
        """These limits with max_prompt_chars no larger than what the backend's engine can tokenize."""
        engine = getattr(backend, "engine", None)
        bound = getattr(engine, "max_prompt_chars", None)
        if not callable(bound):
            return self
        try:
            chars = int(bound())
        except Exception:  # a limit is an optimisation of the engine's own check: never fail on it
            return self
        return ProgramLimits(**{**self.__dict__, "max_prompt_chars": min(self.max_prompt_chars, chars)})


@dataclass
class WorkMeter:
    """What one run has used so far, against its limits (None: unlimited)."""

    limits: Optional[ProgramLimits] = None
    started: float = field(default_factory=time.monotonic)
    chars: int = 0
    streams: int = 1
    gens: int = 0

    @property
    def deadline(self) -> float:
        return self.started + self.limits.max_seconds if self.limits else float("inf")

    def check_time(self, now: Optional[float] = None) -> None:
        if self.limits and (time.monotonic() if now is None else now) > self.deadline:
            raise ProgramLimitError("max_seconds", f"the program ran longer than {self.limits.max_seconds:g} s")

    def add_text(self, current: int, piece: int) -> None:
        """Before a stream whose text has `current` characters grows by `piece`."""
        if self.limits is None:
            return
        lim = self.limits
        if current + piece > lim.max_prompt_chars:
            raise ProgramLimitError("max_prompt_chars", f"a prompt would grow to {current + piece} characters, more "
                                    f"than the {lim.max_prompt_chars} the model's context can take")
        self.chars += piece
        if self.chars > lim.max_total_chars:
            raise ProgramLimitError("max_total_chars", f"the program built more than {lim.max_total_chars} "
                                    "characters of prompt text")

    def start_items(self, n: int) -> None:
        """A request of `n` items: each is a stream of its own from the start."""
        self.streams = 0
        self.add_streams(n)

    def add_streams(self, n: int) -> None:
        if self.limits is None:
            return
        if self.streams + n > self.limits.max_streams:
            raise ProgramLimitError("max_streams", f"{n} more streams (a fork, or the items of a batch) would make "
                                    f"{self.streams + n} in one request, more than {self.limits.max_streams}")
        self.streams += n

    def add_gens(self, n: int) -> None:
        if self.limits is None:
            return
        self.gens += n
        if self.gens > self.limits.max_gens:
            raise ProgramLimitError("max_gens", f"the program sent more than {self.limits.max_gens} requests to "
                                    "the model")
        self.check_time()

    def check_iters(self, n: int) -> None:
        if self.limits is not None and n > self.limits.max_loop_iters:
            raise ProgramLimitError("max_loop_iters", f"a loop of {n} iterations is longer than "
                                    f"{self.limits.max_loop_iters}")
