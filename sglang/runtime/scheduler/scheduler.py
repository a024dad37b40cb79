"""The scheduler: continuous batching over the model runner, in its own thread.

One loop iteration (`step`): take new requests/aborts from the inbox, then run ONE forward:
  1. a prefill (EXTEND) batch if any waiting request can be admitted (schedule_policy.PrefillAdder),
     each request extending from its cached prefix, one request at a time possibly chunked;
  2. otherwise a DECODE batch of all running requests, retracting some first if the pool (free +
     evictable) cannot hold one more token each.
Then sample, append, check stop conditions, stream/finish outputs through `on_output`.
The prefill half (admission and the EXTEND forward) lives in scheduler/prefill.py as a mixin.

Hooks for other parts:
  - constrained decoding: `constraint_factory(req) -> state or None` set by the engine; a state has
    `fill_vocab_mask(row: bool[V])`, `advance(token_id)`, `is_terminated() -> bool` and optionally
    `jump_forward() -> (rollback_k, new_ids) | None`, applied with `replace_output_tail`.
  - overlap: scheduler/overlap.py (decode one step ahead of the host); CUDA graphs live behind
    `model_runner.forward(ForwardBatch)`; batches are built by
    `batch.build_extend/build_decode` only, so a runner may pad or replay them.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

import torch

from sglang.runtime.detokenizer import DecodeStream
from sglang.runtime.mem_cache.radix_cache import make_prefix_cache
from sglang.runtime.sampling.sampler import Sampler, top_logprobs
from sglang.runtime.sampling.sampling_batch_info import SamplingBatchInfo, make_generator
from sglang.runtime.server_args import ServerArgs
from sglang.runtime.scheduler.batch import KVManager, build_decode, to_device
from sglang.runtime.scheduler.output import make_output
from sglang.runtime.scheduler.overlap import OverlapDecoder
from sglang.runtime.scheduler.prefill import PrefillMixin
from sglang.runtime.scheduler.req import FinishKind, FinishReason, Req, TokenizedRequest

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str, dict, bool], None]  # (rid, response dict, finished)

STARVATION_ROUNDS = 16  # a request overtaken in this many prefill rounds goes before anything else
RETRACT_RATIO_STEP = 0.3


class Scheduler(PrefillMixin):
    def __init__(self, server_args: ServerArgs, model_runner: Any, tokenizer: Any, on_output: OutputCallback) -> None:
        self.args = server_args
        self.runner = model_runner
        self.tokenizer = tokenizer
        self.on_output = on_output
        self.device = torch.device(model_runner.device)
        self.req_pool = model_runner.req_to_token_pool
        self.kv_pool = model_runner.token_kv_pool
        self.cache = make_prefix_cache(self.kv_pool, server_args.disable_radix_cache)
        self.kv = KVManager(self.req_pool, self.kv_pool, self.cache)
        cfg = model_runner.model_config
        self.vocab_size = int(cfg.vocab_size)
        self.eos_ids = tuple(_eos_ids(cfg, tokenizer))
        self.sampler = Sampler(seed=server_args.random_seed)
        self.chunk_size = server_args.chunked_prefill_size if server_args.chunked_prefill_size > 0 else None
        cons = server_args.schedule_conservativeness
        self.init_new_token_ratio = min(0.7 * cons, 1.0)
        self.min_new_token_ratio = min(0.1 * cons, 1.0)
        self.new_token_ratio = self.init_new_token_ratio
        self.new_token_ratio_decay = 0.001
        self.constraint_factory: Optional[Callable[[Req], Any]] = None
        # called by run_forever after each inbox drain and step: lets the owner send that step's outputs
        # as one batch (one pipe message / one event-loop wake-up instead of one per token)
        self.on_step_end: Optional[Callable[[], None]] = None
        self.overlap = OverlapDecoder(self)
        self.starvation_rounds = STARVATION_ROUNDS

        self.waiting: list[Req] = []
        self.running: list[Req] = []
        self.chunked: Optional[Req] = None  # the request whose prefill is in progress over rounds
        self.reqs: dict[str, Req] = {}
        self.inbox: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._stopped = False
        self.counters = {"forward_extend": 0, "forward_decode": 0, "prefill_tokens": 0, "cached_tokens": 0,
                         "retractions": 0, "chunk_yields": 0, "finished": 0, "aborted": 0, "forward_mixed": 0}

    # -- thread-safe entry points (any thread) ----------------------------------------------------
    def submit(self, req: TokenizedRequest) -> None:
        self.inbox.put(("req", req))

    def abort(self, rid: str) -> None:
        self.inbox.put(("abort", rid))

    def call(self, fn: "str | Callable[[Scheduler], Any]", *args: Any) -> "Future[Any]":
        """Run fn(self) inside the scheduler thread (stats, flush, invariant checks); fn may be a method
        name (with args), the picklable form the scheduler process client also takes."""
        if isinstance(fn, str):
            name = fn
            fn = lambda s: getattr(s, name)(*args)  # noqa: E731
        fut: Future = Future()
        self.inbox.put(("call", (fn, fut)))
        return fut

    def stop(self) -> None:
        self.inbox.put(("stop", None))

    # -- loop -------------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.chunked or self.overlap.pending)

    def run_forever(self) -> None:
        end = self.on_step_end or (lambda: None)
        while not self._stopped:
            self.drain_inbox(block=not self.has_work())
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

    def drain_inbox(self, block: bool) -> None:
        try:
            msg = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                self._handle(*msg)
            except Exception as exc:  # one bad message must not stop the loop
                logger.exception("scheduler: handling %r failed", msg[0])
                if msg[0] == "req":
                    self._reject(msg[1], f"internal error: {type(exc).__name__}: {exc}")
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                return

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
        if self.overlap.pending is not None and (self.waiting or self.chunked is not None):
            self.overlap.flush()
        admissions = self._next_prefill()
        if admissions:
            self._run_extend(admissions, self._decodes_to_mix(admissions))
            return True
        if self.running:
            self._run_decode()
            return True
        if self.overlap.pending is not None:
            self.overlap.flush()
            return True
        return False

    # -- requests in and out ----------------------------------------------------------------------
    def _reject(self, t: TokenizedRequest, message: str) -> None:
        req = Req.from_tokenized(t)
        req.finished_reason = FinishReason(FinishKind.ABORT, message=message)
        self.on_output(req.rid, make_output(req, self.tokenizer), True)

    def _add_request(self, t: TokenizedRequest) -> None:
        if t.rid in self.reqs:
            self._reject(t, f"duplicate request id {t.rid!r}")
            return
        req = Req.from_tokenized(t)
        req.generator = make_generator(req.sampling_params.seed, self.device)
        req.text_tracker = DecodeStream(self.tokenizer, req.sampling_params, req.origin_input_ids)
        if self.constraint_factory is not None:
            req.constraint = self.constraint_factory(req)
        self.reqs[req.rid] = req
        self.waiting.append(req)

    def _abort(self, rid: str) -> None:
        req = self.reqs.get(rid)
        if req is None or req.finished:
            return
        reason = FinishReason(FinishKind.ABORT, message="aborted by request")
        if req in self.waiting:
            self.waiting.remove(req)
        elif req in self.running:
            self.running.remove(req)
        elif req is self.chunked:
            self.chunked = None
        self._finish(req, reason)

    def _finish(self, req: Req, reason: FinishReason) -> None:
        req.finished_reason = reason
        self.kv.release(req)
        self.reqs.pop(req.rid, None)
        self.counters["aborted" if reason.kind == FinishKind.ABORT else "finished"] += 1
        self.on_output(req.rid, make_output(req, self.tokenizer), True)

    def _fail_all(self, message: str) -> None:
        try:
            self.overlap.flush()
        except Exception:
            self.overlap.pending = None
        for req in list(self.reqs.values()):
            try:
                self._finish(req, FinishReason(FinishKind.ABORT, message=message))
            except Exception:  # pool state may be what broke; still tell the caller
                self.on_output(req.rid, make_output(req, self.tokenizer), True)
        self.waiting, self.running, self.chunked, self.reqs = [], [], None, {}

    # -- decode -----------------------------------------------------------------------------------
    def _run_decode(self) -> None:
        if self.overlap.enabled():
            self.overlap.decode_step()
            return
        self.overlap.flush()
        self._make_room_for_decode()
        if not self.running:
            return
        reqs = list(self.running)
        out = self._launch_decode(reqs)
        self._sample_and_process(reqs, out.next_token_logits)

    def _launch_decode(self, reqs: list[Req], input_ids: Optional[torch.Tensor] = None) -> Any:
        """One KV slot per request at position kv_len, then the forward. input_ids: the tokens as a
        device tensor when the host does not have them yet (overlap)."""
        slots = self.kv.alloc(len(reqs))
        batch = build_decode(reqs, slots, self.req_pool, self.kv_pool, self.device, input_ids)
        dev = self.req_pool.device
        self.req_pool.req_to_token[batch.req_pool_indices.to(dev), batch.positions.to(dev)] = slots.to(dev)
        out = self.runner.forward(batch)
        self.counters["forward_decode"] += 1
        for r in reqs:
            r.kv_len += 1
        self.new_token_ratio = max(self.new_token_ratio - self.new_token_ratio_decay, self.min_new_token_ratio)
        return out

    def _make_room_for_decode(self) -> None:
        """Retract running requests (KV to the cache, back to waiting) until each remaining one can
        get one more slot. The least advanced request goes first (it loses the least work)."""
        while self.running and self.kv.available() < len(self.running):
            if self.chunked is not None:  # a half-prefilled request yields first (its KV stays cached)
                req, self.chunked = self.chunked, None
                self.requeue(req)
                self.counters["chunk_yields"] += 1
                continue
            if len(self.running) == 1:
                req = self.running.pop()
                self._finish(req, FinishReason(FinishKind.ABORT, message="KV cache too small for this request"))
                return
            victim = min(self.running, key=lambda r: (len(r.output_ids), -len(r.origin_input_ids)))
            self.running.remove(victim)
            self.requeue(victim)
            self.counters["retractions"] += 1
            victim.num_retractions += 1
            self.new_token_ratio = min(1.0, self.new_token_ratio + RETRACT_RATIO_STEP)

    def requeue(self, req: Req) -> None:
        """Drop req's KV (into the cache) and put it back to wait; it will re-extend from the cache."""
        self.kv.release(req)
        if not req.input_logprobs_done:  # its prefill restarts from logprob_start_len
            req.input_token_logprobs.clear()
            req.input_top_logprobs.clear()
        req.skipped_rounds = self.starvation_rounds  # it was admitted once: come back first
        self.waiting.append(req)

    # -- sampling and stop conditions -------------------------------------------------------------
    def _sample_and_process(self, reqs: list[Req], logits: torch.Tensor) -> None:
        ids, lps, info = self._sample(reqs, logits)
        ks = [r.top_logprobs_num if r.return_logprob else 0 for r in reqs]
        tops = top_logprobs(logits[:, : self.vocab_size], ks) if any(ks) else None
        self._process_tokens(reqs, ids.tolist(), lps.tolist(), tops)

    def _sampling_info(self, reqs: list[Req], device: torch.device, lag: int = 0) -> SamplingBatchInfo:
        """lag: output tokens sampled on the device but not yet on the host (overlap); they count
        for the positions (seeded draws) but, being unknown, must not matter otherwise."""
        outputs = [r.output_ids + [0] * lag for r in reqs] if lag else [r.output_ids for r in reqs]
        mask = None
        if any(r.constraint is not None for r in reqs):
            # filled on the host (one memcpy per row), then one non-blocking copy to the device
            mask = torch.ones((len(reqs), self.vocab_size), dtype=torch.bool)
            for i, r in enumerate(reqs):
                if r.constraint is not None:
                    r.constraint.fill_vocab_mask(mask[i])
            mask = to_device(mask, device)
        return SamplingBatchInfo.build(
            [r.sampling_params for r in reqs], outputs, [r.generator for r in reqs],
            self.vocab_size, device, mask,
            prompt_ids=[r.origin_input_ids for r in reqs], eos_token_ids=self.eos_ids,
        )

    def _sample(self, reqs: list[Req], logits: torch.Tensor, lag: int = 0):
        """Next tokens (device tensors, no host sync) and the sampling info used."""
        info = self._sampling_info(reqs, logits.device, lag)
        ids, lps = self.sampler.sample(logits[:, : self.vocab_size], info)
        return ids, lps, info

    def _process_tokens(self, reqs: list[Req], ids_l: list[int], lps_l: list[float], tops: Optional[list]) -> None:
        """Host side of a sampling step: append, logprobs, constraint, stop checks, streaming."""
        for i, r in enumerate(reqs):
            if r.finished:  # aborted meanwhile
                continue
            tok = ids_l[i]
            r.output_ids.append(tok)
            r.completion_tokens_wo_jump_forward += 1
            if r.return_logprob:
                r.output_token_logprobs.append((lps_l[i], tok))
                if r.top_logprobs_num > 0:
                    r.output_top_logprobs.append(tops[i] if tops else [])
            if r.constraint is not None:
                r.constraint.advance(tok)
            self._check_finished(r)
            if not r.finished and r.constraint is not None and hasattr(r.constraint, "jump_forward"):
                jump = r.constraint.jump_forward()
                if jump:
                    self.replace_output_tail(r, *jump)
            self._emit(r)

    def _check_finished(self, r: Req) -> None:
        """Stop token / EOS, then stop strings (on the detokenized text), then length, then the
        constraint. A stop token's own text is not part of the output unless no_stop_trim."""
        sp, stream = r.sampling_params, r.text_tracker
        tok, n = r.output_ids[-1], len(r.output_ids)
        reason: Optional[FinishReason] = None
        if n >= sp.min_new_tokens and (tok in sp.stop_token_ids or (not sp.ignore_eos and tok in self.eos_ids)):
            reason = FinishReason(FinishKind.STOP, matched=tok)
            if sp.no_stop_trim:
                stream.append([tok])
        else:
            _, matched = stream.append([tok])
            if matched is not None:
                reason = FinishReason(FinishKind.STOP, matched=matched)
            elif n >= sp.max_new_tokens:
                reason = FinishReason(FinishKind.LENGTH, length=sp.max_new_tokens)
            elif r.constraint is not None and r.constraint.is_terminated():
                reason = FinishReason(FinishKind.STOP)
        if reason is not None:
            stream.finish()
        r.text = stream.text
        if reason is not None:
            if r in self.running:
                self.running.remove(r)
            self._finish(r, reason)

    def _emit(self, r: Req) -> None:
        if r.finished or not r.stream:
            return
        if len(r.output_ids) - r.sent_tokens >= self.args.stream_interval:
            r.sent_tokens = len(r.output_ids)
            self.on_output(r.rid, make_output(r, self.tokenizer), False)

    def replace_output_tail(self, req: Req, rollback: int, new_ids: list[int]) -> None:
        """Jump-forward hook: drop the last `rollback` output tokens, append `new_ids` (not counted as
        sampled). The request re-extends the new tokens from the cache in a later prefill round."""
        if rollback < 0 or rollback > len(req.output_ids):
            raise ValueError(f"cannot roll back {rollback} of {len(req.output_ids)} output tokens")
        if req in self.running:
            self.running.remove(req)
        self.kv.release(req)  # computed tokens go to the cache; the common prefix is reused
        del req.output_ids[len(req.output_ids) - rollback :]
        if req.return_logprob:
            del req.output_token_logprobs[len(req.output_ids) :]
            del req.output_top_logprobs[len(req.output_ids) :]
        req.output_ids.extend(new_ids)
        stream = req.text_tracker = DecodeStream(self.tokenizer, req.sampling_params, req.origin_input_ids)
        _, matched = stream.append(req.output_ids)
        sp = req.sampling_params
        reason = None
        if matched is not None:  # the jumped-over text completed a stop string
            reason = FinishReason(FinishKind.STOP, matched=matched)
        elif len(req.output_ids) >= sp.max_new_tokens:
            reason = FinishReason(FinishKind.LENGTH, length=sp.max_new_tokens)
        if reason is not None:
            stream.finish()
        req.text = stream.text
        if reason is not None:
            self._finish(req, reason)
            return
        req.skipped_rounds = self.starvation_rounds
        self.waiting.append(req)

    # -- maintenance (scheduler thread, via call()) -----------------------------------------------
    def flush_cache(self) -> bool:
        if self.has_work():
            return False
        self.cache.evict(self.cache.evictable_size())
        self.cache.reset()
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "running": len(self.running) + (1 if self.chunked else 0),
            "waiting": len(self.waiting),
            "pool_free": self.kv_pool.available_size(),
            "pool_evictable": self.cache.evictable_size(),
            "pool_protected": self.cache.protected_size(),
            "pool_size": self.kv_pool.size,
            "req_slots_free": self.req_pool.available_size(),
            "new_token_ratio": self.new_token_ratio,
            **self.counters,
        }

    def check_invariant(self) -> None:
        """Raise AssertionError unless every slot is accounted for (only meaningful when idle)."""
        if self.has_work():
            raise AssertionError("check_invariant needs an idle scheduler")
        free, ev, size = self.kv_pool.available_size(), self.cache.evictable_size(), self.kv_pool.size
        if free + ev != size:
            raise AssertionError(f"KV leak: free {free} + evictable {ev} != pool size {size}")
        if self.cache.protected_size() != 0:
            raise AssertionError(f"{self.cache.protected_size()} cached tokens still locked while idle")
        if self.req_pool.available_size() != self.req_pool.size:
            raise AssertionError("req_to_token rows leaked")


def _eos_ids(cfg: Any, tokenizer: Any) -> list[int]:
    ids = getattr(cfg, "eos_token_ids", None)
    if ids is None:
        ids = getattr(cfg, "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple, set)) else [ids])]


def start_scheduler_thread(scheduler: Scheduler) -> threading.Thread:
    t = threading.Thread(target=scheduler.run_forever, name="sglang-scheduler", daemon=True)
    t.start()
    return t
