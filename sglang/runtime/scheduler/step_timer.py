"""Host and device time per decode step, for benchmarks (off unless asked for: `Scheduler.set_step_timing`).

Host time of a step = its wall time minus the time the scheduler sat blocked on the device (waiting
for the sampled ids to reach the host). Device time = the span between two CUDA events recorded on
the stream around the step's forward and sampling (on CPU there is no separate device: it reads 0).
When host time per step exceeds device time, the GPU waits for Python: the loop is host bound.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch


def record_event(device: torch.device) -> Optional[Any]:
    """A timing CUDA event recorded now on the current stream, or None off CUDA (no separate device).
    The one place that starts a device-time span (StepTimer, scheduler/timeline.py)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def elapsed_ms(start: Any, end: Any) -> float:
    """Device milliseconds between two recorded events; waits for `end` (read lazily, off the hot loop)."""
    end.synchronize()
    return float(start.elapsed_time(end))


class StepTimer:
    def __init__(self) -> None:
        self.enabled = False
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.wall_s = 0.0
        self.blocked_s = 0.0
        self._events: list[tuple[Any, Any]] = []  # (start, end) CUDA events per step, read at report time
        self._open: Optional[Any] = None
        self._t0: Optional[float] = None

    def set_enabled(self, on: bool) -> None:
        self.enabled = bool(on)
        self.reset()

    # -- one decode step ------------------------------------------------------------------------
    def begin_step(self) -> None:
        if self.enabled:
            self._t0 = time.perf_counter()

    def end_step(self) -> None:
        if self.enabled and self._t0 is not None:
            self.wall_s += time.perf_counter() - self._t0
            self.steps += 1
            self._t0 = None

    @contextmanager
    def blocked(self) -> Iterator[None]:
        """Wrap a wait for the device (a device->host copy of sampled ids): not host work."""
        if not self.enabled or self._t0 is None:  # only waits inside a timed decode step count
            yield
            return
        t = time.perf_counter()
        try:
            yield
        finally:
            self.blocked_s += time.perf_counter() - t

    def device_begin(self, device: torch.device) -> None:
        if self.enabled:
            self._open = record_event(device)

    def device_end(self) -> None:
        if self._open is not None:
            self._events.append((self._open, record_event(torch.device("cuda"))))
            self._open = None

    # -- report ---------------------------------------------------------------------------------
    def report(self) -> dict[str, float]:
        """Means over the decode steps since timing was switched on (or last reset)."""
        gpu_ms = sum(elapsed_ms(start, end) for start, end in self._events)
        n = max(self.steps, 1)
        return {
            "decode_steps_timed": self.steps,
            "host_ms_per_decode_step": (self.wall_s - self.blocked_s) * 1e3 / n,
            "blocked_ms_per_decode_step": self.blocked_s * 1e3 / n,
            "gpu_ms_per_decode_step": gpu_ms / max(len(self._events), 1),
        }
