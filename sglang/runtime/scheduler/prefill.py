"""Prefill: the waiting queue, who is admitted next, and the EXTEND forward that computes them.

`PrefillManager` owns the waiting queue and the one request whose prefill is in progress over
several rounds (`chunked`). `admit` runs one admission round: the chunked request first, then the
queue in policy order (schedule_policy.order_waiting) through a `PrefillAdder` under the token
budgets, locking each admitted request's cached prefix (CacheManager.admit). `run` computes the
admitted requests' new tokens in ONE EXTEND forward, optionally with running requests' decode tokens
mixed in as extends of one token (--enable-mixed-chunk), records input logprobs, shares the computed
prefixes through the cache and says which rows have a next token to sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from sglang.runtime.server_args import ServerArgs
from sglang.runtime.scheduler.batch import build_extend, to_device
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.logprobs import host_token_logprobs, logprob_start, record_input_logprobs
from sglang.runtime.scheduler.req import Req
from sglang.runtime.scheduler.schedule_policy import LPM_MAX_QUEUE, MAX_SCAN_PER_ROUND, Admission, PrefillAdder, order_waiting

STARVATION_ROUNDS = 16  # a request overtaken in this many prefill rounds goes before anything else


@dataclass
class ExtendResult:
    """What an EXTEND forward left to do: `rows` have a next token to sample from `logits` (row i of
    logits belongs to rows[i]; mixed decode rows first); `prefill_only` reqs are done (max_new_tokens 0)."""

    rows: list[Req] = field(default_factory=list)
    logits: Optional[torch.Tensor] = None
    prefill_only: list[Req] = field(default_factory=list)


class PrefillManager:
    def __init__(self, args: ServerArgs, cache: CacheManager, runner: Any, device: torch.device) -> None:
        self.args = args
        self.cache = cache
        self.runner = runner
        self.device = device
        self.chunk_size = args.chunked_prefill_size if args.chunked_prefill_size > 0 else None
        # unset (no runner sized it): as many as the request table has rows
        self.max_running = args.max_running_requests or cache.req_pool.size
        self.starvation_rounds = STARVATION_ROUNDS
        self.waiting: list[Req] = []
        self.chunked: Optional[Req] = None  # the request whose prefill is in progress over rounds
        # the last round admitted nothing from the queue (out of memory): the next one matches lazily (fcfs)
        # instead of the whole queue for lpm, which would only find the same lack of memory, every step
        self.queue_blocked = False
        self.counters = {"forward_extend": 0, "prefill_tokens": 0, "cached_tokens": 0, "chunk_yields": 0,
                         "forward_mixed": 0}

    # -- the queue --------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.waiting) or self.chunked is not None

    def add(self, req: Req) -> None:
        self.waiting.append(req)

    def requeue(self, req: Req) -> None:
        """Drop req's KV (into the cache) and put it back to wait; it will re-extend from the cache."""
        self.cache.release(req)
        if not req.input_logprobs_done:  # its prefill restarts from logprob_start_len
            req.input_token_logprobs.clear()
            req.input_top_logprobs.clear()
        req.skipped_rounds = self.starvation_rounds  # it was admitted once: come back first
        self.waiting.append(req)

    def yield_chunked(self) -> bool:
        """The half-prefilled request gives its memory back (its KV stays cached); False if none."""
        if self.chunked is None:
            return False
        req, self.chunked = self.chunked, None
        self.requeue(req)
        self.counters["chunk_yields"] += 1
        return True

    def remove(self, req: Req) -> bool:
        """Take req out (abort); whether it was here."""
        if req in self.waiting:
            self.waiting.remove(req)
            return True
        if req is self.chunked:
            self.chunked = None
            return True
        return False

    def clear(self) -> None:
        self.waiting, self.chunked = [], None

    # -- admission --------------------------------------------------------------------------------
    def admit(self, running: Sequence[Req], new_token_ratio: float) -> list[Admission]:
        """One admission round; `running` requests keep a reserve of decode tokens (new_token_ratio)."""
        if not self.has_work():
            return []
        adder = PrefillAdder(
            rem_total_tokens=self.cache.available() - sum(PrefillAdder.reserve_for(r, new_token_ratio) for r in running),
            rem_input_tokens=self.args.max_prefill_tokens,
            rem_chunk_tokens=self.chunk_size,
            rem_requests=min(self.max_running - len(running),
                             self.cache.free_rows() + (1 if self.chunked is not None else 0)),
            num_running=len(running),
            defer_siblings=not self.cache.cache.disabled,
        )
        if self.chunked is not None and not adder.try_add(self.chunked, self.chunked.kv_len, new_token_ratio,
                                                          must_continue=True):
            return []
        if self.waiting and not (adder.blocked or adder.rem_requests <= 0 or adder.rem_total_tokens <= 0):
            self._admit_waiting(adder, new_token_ratio)
        return adder.admitted

    def _admit_waiting(self, adder: PrefillAdder, new_token_ratio: float) -> None:
        # lpm needs every waiting request's cached prefix; fcfs (or a long or memory-blocked queue) matches lazily
        lpm = self.args.schedule_policy == "lpm" and len(self.waiting) <= LPM_MAX_QUEUE and not self.queue_blocked
        # the order needs only lengths; the slots are gathered for the requests the round actually scans
        lengths = {id(r): self.cache.match_len(r) for r in self.waiting} if lpm else {}
        order = order_waiting(self.waiting, "lpm" if lpm else "fcfs", lengths, self.starvation_rounds)
        for scanned, req in enumerate(order):
            if scanned >= MAX_SCAN_PER_ROUND and adder.admitted:
                break  # a long queue of deferred siblings: matching them all every step costs more than a round
            slots, node = self.cache.match(req)
            if adder.try_add(req, int(slots.numel()), new_token_ratio, lock_cost=self.cache.lock_cost(node)):
                self.cache.admit(req, slots, node)
            elif adder.blocked or adder.rem_requests <= 0 or adder.rem_input_tokens <= 0:
                break  # nothing more fits this round: skip matching the rest of the queue
        admitted = {id(a.req) for a in adder.admitted}
        self.queue_blocked = adder.out_of_memory and not any(a.req is not self.chunked for a in adder.admitted)
        latest = max((a.req.arrival for a in adder.admitted if a.req is not self.chunked), default=None)
        for r in self.waiting:
            if id(r) not in admitted and latest is not None and r.arrival < latest:
                r.skipped_rounds += 1  # overtaken by a later arrival (starvation guard)
        self.waiting = [r for r in self.waiting if id(r) not in admitted]

    # -- the EXTEND forward -----------------------------------------------------------------------
    def run(self, admissions: list[Admission], decodes: Sequence[Req] = ()) -> ExtendResult:
        reqs = list(decodes) + [a.req for a in admissions]
        slots = [self._slots_for_decode_row(r) for r in decodes] + [self._slots_for(a) for a in admissions]
        starts = tops = None
        if any(r.wants_input_logprobs for r in reqs):
            starts = [logprob_start(r) for r in reqs]
            tops = [r.top_logprobs_num if r.wants_input_logprobs else 0 for r in reqs]
        batch = build_extend(reqs, slots, self.cache.req_pool, self.cache.pool, self.device, starts,
                             tops if tops and any(tops) else None)
        out = self.runner.forward(batch)
        self.counters["forward_extend"] += 1
        self.counters["prefill_tokens"] += batch.num_tokens - len(decodes)
        self.counters["forward_mixed"] += 1 if decodes else 0
        return self._after_forward(reqs, len(decodes), starts, out)

    def _slots_for_decode_row(self, req: Req) -> torch.Tensor:
        req.extend_len = 1  # its last token, at position kv_len
        return self.cache.extend_slots(req, 1)

    def _slots_for(self, a: Admission) -> torch.Tensor:
        req = a.req
        req.extend_len = a.extend_len
        if not req.scheduled_once:
            req.scheduled_once = True
            req.cached_tokens = req.kv_len
            self.counters["cached_tokens"] += req.kv_len
        return self.cache.extend_slots(req, a.extend_len)

    def _after_forward(self, reqs: list[Req], num_decodes: int, starts: Optional[list[int]], out: Any) -> ExtendResult:
        logits = out.next_token_logits
        result = ExtendResult()
        done_rows: list[int] = list(range(num_decodes))  # a decode row always samples its next token
        for r in reqs[:num_decodes]:
            r.kv_len += 1
        host = host_token_logprobs(out) if starts is not None else None
        for i, req in enumerate(reqs[num_decodes:], start=num_decodes):
            if starts is not None:
                record_input_logprobs(req, i, starts[i], out, logits, host)
            req.kv_len += req.extend_len
            self.cache.cache_unfinished(req)  # share the computed prefix with waiting requests now
            if req.kv_len < req.seq_len:
                self.chunked = req
                continue
            if req is self.chunked:
                self.chunked = None
            req.input_logprobs_done = True
            if req.sampling_params.max_new_tokens == 0:
                result.prefill_only.append(req)
            else:
                done_rows.append(i)
        if done_rows:
            result.rows = [reqs[i] for i in done_rows]
            if len(done_rows) < len(reqs):  # (a chunked request has no token to sample yet)
                logits = logits[to_device(torch.tensor(done_rows, dtype=torch.int64), logits.device)]
            result.logits = logits
        return result
