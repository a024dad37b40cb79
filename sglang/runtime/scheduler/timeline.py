"""Forward timeline: one JSON line per scheduler step that ran a forward, to see where serving time goes.

Off by default and free when off (the scheduler holds None). On with the environment variable
SGLANG_TIMELINE=PATH (read when a Scheduler is built; "{pid}" in PATH becomes the process id, so that
replicas in several processes write apart), or at run time with `Scheduler.set_timeline(path)`.
Summarize a file with benchmarks/timeline_summary.py.

Lines (JSON objects), by "kind":
  meta  first line: pid, device, the admission settings (chunk size, token budgets, policy, ...)
  mark  a named moment ("flush_cache": benchmark runs on one server flush the cache between them)
  step  one scheduler step with a forward:
        t0, t1        wall clock (epoch seconds) at the step's start and end (host view)
        t_fwd         when the forward was called (t_fwd - t0: admission and batch building)
        fwd_s         host seconds inside runner.forward (kernel launches; waits, if the runner blocks)
        mode          extend | decode | mixed (an extend that carries running requests' decode tokens)
        rows, extend_tokens (tokens computed), prefix_tokens (cached tokens under the extend rows),
        kv_tokens     (sum of sequence lengths: the KV the attention reads)
        graph         the forward replayed a CUDA graph
        attn          (extend) the attention kernels it ran on: "flashinfer" or the backend's class name
        device_ms     device time from before the forward to the step's end (forward + sampling), read
                      from CUDA events lazily; null off CUDA
        arrived       requests that reached the scheduler since the previous step
        admitted      requests scheduled for the first time; first_tokens: requests whose first output
                      token this step sampled (a re-prefill after a retraction counts in neither);
                      mixed_rows: decode rows riding in an extend
        running, waiting  after the step

Memory stays bounded: steps are written out in batches (FLUSH_EVERY) once their CUDA events have
completed (event.query(), never a wait on the hot loop), and everything when the scheduler goes idle,
on a flush_cache, when it stops, and at interpreter exit.
"""
from __future__ import annotations

import atexit
import json
import os
import threading
import time
from typing import Any, Optional

import torch

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.scheduler.step_timer import elapsed_ms, record_event

ENV = "SGLANG_TIMELINE"
FLUSH_EVERY = 1024  # steps kept before a write is tried
MAX_PENDING = 16 * FLUSH_EVERY  # past this, a write waits for the device instead of keeping more
_paths_lock = threading.Lock()
_paths_taken: set[str] = set()  # several schedulers in one process (tests, in-process dp) write apart


def timeline_path(pattern: str) -> str:
    """The file for this scheduler: "{pid}" filled in; a second scheduler of this process gets ".1", ..."""
    path = os.path.abspath(pattern.replace("{pid}", str(os.getpid())))
    with _paths_lock:
        n, candidate = 0, path
        while candidate in _paths_taken:
            n += 1
            candidate = f"{path}.{n}"
        _paths_taken.add(candidate)
    return candidate


class Timeline:
    """Step records of one scheduler, appended to `path` (truncated when the timeline starts)."""

    def __init__(self, path: str, device: torch.device, meta: Optional[dict[str, Any]] = None) -> None:
        self.path = path
        self.device = torch.device(device)
        self._records: list[dict[str, Any]] = []  # written-out steps leave; their events go with them
        self._cur: Optional[dict[str, Any]] = None
        self._arrived = 0
        # perf_counter for precision, shifted to the epoch so the lines line up with client-side timings
        self._epoch = time.time() - time.perf_counter()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(json.dumps({"kind": "meta", "pid": os.getpid(), "device": str(self.device),
                                "t": self.now(), **(meta or {})}) + "\n")
        atexit.register(self._flush_at_exit)

    @classmethod
    def from_env(cls, device: torch.device, meta: Optional[dict[str, Any]] = None) -> Optional["Timeline"]:
        pattern = os.environ.get(ENV)
        return cls(timeline_path(pattern), device, meta) if pattern else None

    def now(self) -> float:
        return round(self._epoch + time.perf_counter(), 6)

    # -- one step (scheduler thread) ----------------------------------------------------------------
    def arrived(self, n: int = 1) -> None:
        self._arrived += n

    def begin_step(self) -> None:
        self._cur = {"kind": "step", "t0": self.now()}

    def forward(self, runner: Any, batch: ForwardBatch) -> Any:
        """runner.forward(batch), recording what the batch is and how long the host spent launching it."""
        cur = self._cur if self._cur is not None else {"kind": "step", "t0": self.now()}
        self._cur = cur
        cur.update(batch_facts(batch), graph=replays_graph(runner, batch), t_fwd=self.now())
        cur["_ev0"] = record_event(self.device)
        t = time.perf_counter()
        out = runner.forward(batch)
        cur["fwd_s"] = round(time.perf_counter() - t, 6)
        if batch.mode.is_extend():
            cur["attn"] = attention_path(runner, batch)
        return out

    def note(self, **counts: int) -> None:
        """Per-step counts the scheduler knows (admitted, first_tokens, mixed_rows)."""
        if self._cur is not None:
            self._cur.update(counts)

    def end_step(self, running: int, waiting: int) -> None:
        cur, self._cur = self._cur, None
        if cur is None or "mode" not in cur:  # no forward this step (e.g. only a pending decode processed)
            return
        if cur.get("mixed_rows"):
            cur["mode"] = "mixed"
        cur.update(t1=self.now(), running=running, waiting=waiting, arrived=self._arrived)
        cur["_ev1"] = record_event(self.device)
        self._arrived = 0
        self._records.append(cur)
        if len(self._records) >= FLUSH_EVERY:
            self.flush(wait=len(self._records) >= MAX_PENDING)

    # -- output ---------------------------------------------------------------------------------------
    def mark(self, name: str) -> None:
        self.flush()
        self._write([{"kind": "mark", "name": name, "t": self.now()}])

    def flush(self, wait: bool = True) -> None:
        """Write out finished steps: all of them (wait=True: reads every CUDA event), or only those whose
        device work has completed (wait=False: the hot loop never blocks on the device)."""
        n = len(self._records) if wait else self._completed_prefix()
        if n:
            done, self._records = self._records[:n], self._records[n:]
            self._write([_finish(r) for r in done])

    def _flush_at_exit(self) -> None:
        try:
            self.flush()
        except Exception:  # the device may already be gone: the steps written so far stay
            pass

    def _completed_prefix(self) -> int:
        for i, r in enumerate(self._records):
            ev = r.get("_ev1")
            if ev is not None and not ev.query():
                return i
        return len(self._records)

    def _write(self, lines: list[dict[str, Any]]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))


def batch_facts(batch: ForwardBatch) -> dict[str, Any]:
    """mode, rows and token counts of a batch, from its host-side lists (no device reads)."""
    seq = list(batch.seq_lens_cpu or [])
    if batch.mode.is_decode():
        return {"mode": "decode", "rows": batch.batch_size, "extend_tokens": batch.batch_size,
                "prefix_tokens": 0, "kv_tokens": sum(seq)}
    return {"mode": "extend", "rows": batch.batch_size, "extend_tokens": sum(batch.extend_seq_lens_cpu or []),
            "prefix_tokens": sum(batch.extend_prefix_lens_cpu or []), "kv_tokens": sum(seq)}


def replays_graph(runner: Any, batch: ForwardBatch) -> bool:
    """Whether runner.forward(batch) will replay a captured CUDA graph (the runner's own test)."""
    graphs = getattr(runner, "cuda_graph_runner", None)
    return bool(graphs is not None and graphs.can_run(batch))


def attention_path(runner: Any, batch: ForwardBatch) -> Optional[str]:
    """Which attention kernels an extend ran on: "flashinfer" where the backend handed it to FlashInfer's
    prefill (the triton backend does so for large prefix-free extends once that kernel is compiled), else
    the backend's name."""
    if getattr(getattr(batch, "attn_metadata", None), "flashinfer", None) is not None:
        return "flashinfer"
    backend = getattr(runner, "attn_backend", None)
    return type(backend).__name__ if backend is not None else None


def _finish(record: dict[str, Any]) -> dict[str, Any]:
    ev0, ev1 = record.pop("_ev0", None), record.pop("_ev1", None)
    record["device_ms"] = round(elapsed_ms(ev0, ev1), 4) if ev0 is not None and ev1 is not None else None
    return record


class TimelineRunner:
    """The model runner as the prefill and decode parts see it while a timeline records: every forward
    goes through Timeline.forward; anything else is the runner's own."""

    def __init__(self, runner: Any, timeline: Timeline) -> None:
        self.runner = runner
        self.timeline = timeline

    def forward(self, batch: ForwardBatch) -> Any:
        return self.timeline.forward(self.runner, batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)
