"""The scheduler: continuous batching over the model runner, in its own thread; a short loop over parts.

One loop iteration (`step`): take new requests/aborts/calls from the inbox, then run ONE forward:
  1. an EXTEND batch if any waiting request can be admitted (PrefillManager: admission under the token
     budgets, chunking, mixed decode rows),
  2. otherwise a DECODE batch of the running requests (DecodeManager: retraction first if the pool
     cannot hold one more token each), one step ahead of the host when overlap applies (OverlapDecoder),
then sample and process the tokens (TokenProcessor: stop checks, constraints, jump-forward, outputs).

The parts, each with its own state, composed here (none of them knows the Scheduler):
  CacheManager (KV slots, prefix cache) ← RequestTable (requests in flight, outputs) ← PrefillManager
  (waiting queue) ← DecodeManager (running batch) ← TokenProcessor (+ BatchSampler) ← OverlapDecoder;
the Scheduler itself keeps only the Inbox (the one thing other threads touch), the stop flag and a
StepTimer (host vs device time per decode step, off unless a benchmark asks: set_step_timing) and
an optional Timeline (one JSON line per forward: SGLANG_TIMELINE=path or set_timeline; timeline.py).
Hooks for the owner: `constraint_factory(req) -> state | None` (see process.py for the state's methods),
`on_step_end()` after each inbox drain and step. CUDA graphs live behind `model_runner.forward`.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

import torch

from sglang.runtime.server_args import ServerArgs
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.decode import DecodeManager
from sglang.runtime.scheduler.inbox import Inbox
from sglang.runtime.scheduler.overlap import OverlapDecoder
from sglang.runtime.scheduler.prefill import PrefillManager
from sglang.runtime.scheduler.process import TokenProcessor
from sglang.runtime.scheduler.req import FinishKind, FinishReason, Req, TokenizedRequest
from sglang.runtime.scheduler.request_table import OutputCallback, RequestTable
from sglang.runtime.scheduler.schedule_policy import Admission
from sglang.runtime.scheduler.sample import BatchSampler, eos_ids_of
from sglang.runtime.scheduler.step_timer import StepTimer
from sglang.runtime.scheduler.timeline import Timeline, TimelineRunner, timeline_path

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, server_args: ServerArgs, model_runner: Any, tokenizer: Any, on_output: OutputCallback,
                 detokenize: bool = True) -> None:
        """detokenize=False: outputs of requests whose text does not decide when they stop carry their new
        text ids instead of text, for the consumer to detokenize (RequestTable.client_text)."""
        if server_args.max_running_requests is None:  # the runner sized its request table from the KV pool
            server_args = server_args.replace(max_running_requests=getattr(
                model_runner, "max_running_requests", None) or model_runner.req_to_token_pool.size)
        self.args = server_args
        self.runner = model_runner
        self.tokenizer = tokenizer
        self.on_output = on_output
        self.device = torch.device(model_runner.device)
        self.kv = CacheManager(model_runner.req_to_token_pool, model_runner.token_kv_pool,
                               server_args.disable_radix_cache)
        self.cache = self.kv.cache  # the prefix cache (radix tree or none)
        cfg = model_runner.model_config
        self.table = RequestTable(self.kv, tokenizer, on_output, server_args.stream_interval, detokenize)
        self.prefill = PrefillManager(server_args, self.kv, model_runner, self.device)
        self.timer = StepTimer()
        self.decode = DecodeManager(server_args, self.kv, self.prefill, self.table, model_runner, self.device,
                                    self.timer)
        sampler = BatchSampler(int(cfg.vocab_size), eos_ids_of(cfg, tokenizer), server_args.random_seed)
        self.processor = TokenProcessor(sampler, self.kv, self.table, self.prefill, self.decode, tokenizer,
                                        self.timer)
        self.overlap = OverlapDecoder(self.decode, self.kv, sampler, self.processor, server_args.disable_overlap,
                                      self.device)
        self.constraint_factory: Optional[Callable[[Req], Any]] = None
        # called by run_forever after each inbox drain and step: lets the owner send that step's outputs
        # as one batch (one pipe message / one event-loop wake-up instead of one per token)
        self.on_step_end: Optional[Callable[[], None]] = None
        self.inbox = Inbox()
        self._stopped = False
        self.timeline: Optional[Timeline] = None
        self._attach_timeline(Timeline.from_env(self.device, self._timeline_meta()))

    @property
    def starvation_rounds(self) -> int:
        return self.prefill.starvation_rounds

    @starvation_rounds.setter
    def starvation_rounds(self, rounds: int) -> None:
        self.prefill.starvation_rounds = rounds

    @property
    def counters(self) -> dict[str, int]:
        return {**self.prefill.counters, **self.decode.counters, **self.table.counters}

    # -- thread-safe entry points (any thread) ----------------------------------------------------
    def submit(self, req: TokenizedRequest) -> None:
        self.inbox.put("req", req)

    def abort(self, rid: str) -> None:
        self.inbox.put("abort", rid)

    def call(self, fn: "str | Callable[[Scheduler], Any]", *args: Any) -> "Future[Any]":
        """Run fn(self) inside the scheduler thread (stats, flush, invariant checks); fn may be a method
        name (with args), the picklable form the scheduler process client also takes."""
        if isinstance(fn, str):
            name = fn
            fn = lambda s: getattr(s, name)(*args)  # noqa: E731
        fut: Future = Future()
        self.inbox.put("call", (fn, fut))
        return fut

    def stop(self) -> None:
        self.inbox.put("stop")

    # -- loop -------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.prefill.has_work() or self.decode.running or self.overlap.pending)

    def run_forever(self) -> None:
        end = self.on_step_end or (lambda: None)
        while not self._stopped:
            idle = not self.has_work()
            if idle and self.timeline is not None:
                self.timeline.flush()  # about to wait for requests: reading the device costs nothing now
            self.drain_inbox(block=idle)
            end()
            if self._stopped:
                break
            try:
                self.step()
            except Exception as exc:  # a bug must not hang every caller: fail what is in flight
                logger.exception("scheduler step failed")
                self._fail_all(f"internal error: {type(exc).__name__}: {exc}")
            end()
        self._fail_all("engine shut down")
        end()
        if self.timeline is not None:
            self.timeline.flush()

    def drain_inbox(self, block: bool) -> None:
        for kind, payload in self.inbox.take_all(block):
            try:
                self._handle(kind, payload)
            except Exception as exc:  # one bad message must not stop the loop
                logger.exception("scheduler: handling %r failed", kind)
                if kind == "req":
                    self.table.reject(payload, f"internal error: {type(exc).__name__}: {exc}")

    def _handle(self, kind: str, payload: Any) -> None:
        if kind in ("abort", "call"):
            self.overlap.flush()  # requests must be in a consistent host state
        if kind == "req":
            self._add_request(payload)
        elif kind == "abort":
            self._abort(payload)
        elif kind == "call":
            fn, fut = payload
            if self.on_step_end is not None:  # outputs made before the call reach the owner before its result
                self.on_step_end()
            try:
                fut.set_result(fn(self))
            except Exception as exc:
                fut.set_exception(exc)
        elif kind == "stop":
            self._stopped = True

    def step(self) -> bool:
        """Run one forward if there is anything to do; returns whether it did."""
        if self.timeline is None:
            return self._step()
        self.timeline.begin_step()
        try:
            return self._step()
        finally:
            self.timeline.end_step(len(self.decode.running), len(self.prefill.waiting))

    def _step(self) -> bool:
        if self.overlap.pending is not None and self.prefill.has_work():
            self.overlap.flush()
        admissions = self.prefill.admit(self.decode.running, self.decode.new_token_ratio)
        if admissions:
            self._run_extend(admissions)
        elif self.decode.running:
            self._run_decode()
        elif self.overlap.pending is not None:
            self.overlap.flush()
        else:
            return False
        return True

    def _run_extend(self, admissions: list[Admission]) -> None:
        mixed: list[Req] = []
        if self.args.enable_mixed_chunk:  # running requests ride along, one token each
            mixed = self.decode.mixable(sum(a.extend_len for a in admissions))
        fresh = sum(not a.req.scheduled_once for a in admissions) if self.timeline is not None else 0
        done = self.prefill.run(admissions, mixed)
        if self.timeline is not None:  # (a request re-prefilled after a retraction has its first token already)
            self.timeline.note(admitted=fresh, mixed_rows=len(mixed), first_tokens=len(done.prefill_only) + sum(
                not r.output_ids for r in done.rows[len(mixed):]))
        for req in done.prefill_only:
            self.table.finish(req, FinishReason(FinishKind.LENGTH, length=0))
        if done.rows:
            self.processor.sample_and_process(done.rows, done.logits)
            self.decode.add(done.rows[len(mixed):])

    def _run_decode(self) -> None:
        self.timer.begin_step()
        try:
            self._decode_once()
        finally:
            self.timer.end_step()

    def _decode_once(self) -> None:
        if self.overlap.enabled():
            self.overlap.decode_step()
            return
        self.overlap.flush()
        self.decode.make_room()
        if self.decode.running:
            reqs = list(self.decode.running)
            self.processor.sample_and_process(reqs, self.decode.launch(reqs).next_token_logits)

    # -- requests in and out ----------------------------------------------------------------------
    def _add_request(self, t: TokenizedRequest) -> None:
        req = self.table.create(t, self.device, self.constraint_factory)
        if self.timeline is not None:
            self.timeline.arrived()
        if req is not None:
            self.prefill.add(req)

    def _abort(self, rid: str) -> None:
        req = self.table.get(rid)
        if req is None or req.finished:
            return
        if not self.prefill.remove(req):
            self.decode.remove(req)
        self.table.finish(req, FinishReason(FinishKind.ABORT, message="aborted by request"))

    def _fail_all(self, message: str) -> None:
        try:
            self.overlap.flush()
        except Exception:
            self.overlap.drop()
        self.table.fail_all(message)
        self.prefill.clear()
        self.decode.clear()

    # -- maintenance (scheduler thread, via call()) -----------------------------------------------
    def flush_cache(self) -> bool:
        if self.has_work():
            return False
        self.kv.flush()
        if self.timeline is not None:  # benchmarks flush between runs: the mark separates them
            self.timeline.mark("flush_cache")
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "running": len(self.decode.running) + (1 if self.prefill.chunked else 0),
            "waiting": len(self.prefill.waiting),
            **self.kv.stats(),
            "new_token_ratio": self.decode.new_token_ratio,
            "max_running_requests": self.args.max_running_requests,
            **self.counters,
        }

    def set_step_timing(self, on: bool) -> None:
        """Start (and reset) or stop measuring host / device time per decode step (benchmarks)."""
        self.timer.set_enabled(on)

    def step_timing(self) -> dict[str, float]:
        """Mean host and device milliseconds per decode step since set_step_timing(True)."""
        return self.timer.report()

    def set_timeline(self, path: Optional[str]) -> Optional[str]:
        """Start a forward timeline written to `path` (a running one is written out and replaced), or stop
        it (None); returns the file it writes ("{pid}" filled in), see timeline.py."""
        if self.timeline is not None:
            self.timeline.flush()
        self._attach_timeline(Timeline(timeline_path(path), self.device, self._timeline_meta()) if path else None)
        return self.timeline.path if self.timeline is not None else None

    def flush_timeline(self) -> Optional[str]:
        """Write out every recorded step now; the timeline's file, or None without one."""
        if self.timeline is None:
            return None
        self.timeline.flush()
        return self.timeline.path

    def _attach_timeline(self, timeline: Optional[Timeline]) -> None:
        # only the prefill and decode parts launch forwards: they see the recording runner
        self.timeline = timeline
        runner = TimelineRunner(self.runner, timeline) if timeline is not None else self.runner
        self.prefill.runner = runner
        self.decode.runner = runner

    def _timeline_meta(self) -> dict[str, Any]:
        a = self.args
        return {"chunked_prefill_size": a.chunked_prefill_size, "max_prefill_tokens": a.max_prefill_tokens,
                "max_running_requests": a.max_running_requests, "schedule_policy": a.schedule_policy,
                "disable_radix_cache": a.disable_radix_cache, "enable_mixed_chunk": a.enable_mixed_chunk,
                "pool_tokens": self.kv.pool.size}

    def check_invariant(self) -> None:
        """Raise AssertionError unless every slot is accounted for (only meaningful when idle)."""
        if self.has_work():
            raise AssertionError("check_invariant needs an idle scheduler")
        self.kv.check_idle()


def start_scheduler_thread(scheduler: Scheduler) -> threading.Thread:
    t = threading.Thread(target=scheduler.run_forever, name="sglang-scheduler", daemon=True)
    t.start()
    return t
