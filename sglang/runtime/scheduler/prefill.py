"""The prefill half of the scheduler: which waiting requests run next (schedule_policy.PrefillAdder) and
the EXTEND forward that computes them, optionally with the running requests' decode tokens mixed in
(--enable-mixed-chunk). A mixin of `Scheduler` (scheduler.py), which owns every attribute used here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from sglang.runtime.scheduler.batch import build_extend, to_device
from sglang.runtime.scheduler.logprobs import logprob_start, record_input_logprobs
from sglang.runtime.scheduler.req import FinishKind, FinishReason, Req
from sglang.runtime.scheduler.schedule_policy import LPM_MAX_QUEUE, PrefillAdder, order_waiting

if TYPE_CHECKING:
    from sglang.runtime.scheduler.scheduler import Scheduler


class PrefillMixin:
    def _next_prefill(self: "Scheduler") -> list:
        if not self.waiting and self.chunked is None:
            return []
        running_reserve = sum(PrefillAdder.reserve_for(r, self.new_token_ratio) for r in self.running)
        adder = PrefillAdder(
            rem_total_tokens=self.kv.available() - running_reserve,
            rem_input_tokens=self.args.max_prefill_tokens,
            rem_chunk_tokens=self.chunk_size,
            rem_requests=min(self.args.max_running_requests - len(self.running), self.req_pool.available_size()
                             + (1 if self.chunked is not None else 0)),
            num_running=len(self.running),
        )
        if self.chunked is not None:
            req = self.chunked
            if not adder.try_add(req, req.kv_len, self.new_token_ratio, must_continue=True):
                return []
        if not self.waiting or adder.blocked or adder.rem_requests <= 0 or adder.rem_total_tokens <= 0:
            return adder.admitted
        # lpm needs every waiting request's cached prefix; fcfs (or a long queue) matches lazily
        lpm = self.args.schedule_policy == "lpm" and len(self.waiting) <= LPM_MAX_QUEUE
        matches = {id(r): self.kv.match(r) for r in self.waiting} if lpm else {}
        order = order_waiting(self.waiting, "lpm" if lpm else "fcfs",
                              {k: int(v[0].numel()) for k, v in matches.items()}, self.starvation_rounds)
        for req in order:
            slots, node = matches[id(req)] if lpm else self.kv.match(req)
            if adder.try_add(req, int(slots.numel()), self.new_token_ratio, lock_cost=self.cache.lock_cost(node)):
                self.kv.admit(req, slots, node)
            elif adder.blocked or adder.rem_requests <= 0:
                break  # nothing more fits this round: skip matching the rest of the queue
        admitted = {id(a.req) for a in adder.admitted}
        latest = max((a.req.arrival for a in adder.admitted if a.req is not self.chunked), default=None)
        remaining = []
        for r in self.waiting:
            if id(r) in admitted:
                continue
            if latest is not None and r.arrival < latest:
                r.skipped_rounds += 1  # overtaken by a later arrival (starvation guard)
            remaining.append(r)
        self.waiting = remaining
        return adder.admitted

    def _decodes_to_mix(self: "Scheduler", admissions: list) -> list[Req]:
        """--enable-mixed-chunk: the running requests ride along in a prefill forward, one token each
        (an extend of 1 over their cached KV), instead of waiting for it. Only when every one of them
        gets its slot, after the admitted requests' new tokens, without retraction."""
        if not self.args.enable_mixed_chunk or not self.running:
            return []
        if self.kv.available() < len(self.running) + sum(a.extend_len for a in admissions):
            return []
        return list(self.running)

    def _run_extend(self: "Scheduler", admissions: list, decodes: Sequence[Req] = ()) -> None:
        reqs, slots = [], []
        for r in decodes:
            r.extend_len = 1  # its last token, at position kv_len
            slots.append(self.kv.extend_slots(r, 1))
            reqs.append(r)
        for a in admissions:
            req = a.req
            req.extend_len = a.extend_len
            if not req.scheduled_once:
                req.scheduled_once = True
                req.cached_tokens = req.kv_len
                self.counters["cached_tokens"] += req.kv_len
            slots.append(self.kv.extend_slots(req, a.extend_len))
            reqs.append(req)
        starts = tops = None
        if any(r.wants_input_logprobs for r in reqs):
            starts = [logprob_start(r) for r in reqs]
            tops = [r.top_logprobs_num if r.wants_input_logprobs else 0 for r in reqs]
        batch = build_extend(reqs, slots, self.req_pool, self.kv_pool, self.device, starts,
                             tops if tops and any(tops) else None)
        out = self.runner.forward(batch)
        self.counters["forward_extend"] += 1
        self.counters["prefill_tokens"] += batch.num_tokens - len(decodes)
        if decodes:
            self.counters["forward_mixed"] += 1

        logits = out.next_token_logits
        done_rows: list[int] = list(range(len(decodes)))  # a decode row always samples its next token
        for r in decodes:
            r.kv_len += 1
        for i, req in enumerate(reqs[len(decodes):], start=len(decodes)):
            if starts is not None:
                record_input_logprobs(req, i, starts[i], out, logits)
            req.kv_len += req.extend_len
            self.kv.cache_unfinished(req)  # share the computed prefix with waiting requests now
            if req.kv_len < req.seq_len:
                self.chunked = req
                continue
            if req is self.chunked:
                self.chunked = None
            req.input_logprobs_done = True
            if req.sampling_params.max_new_tokens == 0:
                self._finish(req, FinishReason(FinishKind.LENGTH, length=0))  # prefill only
            else:
                done_rows.append(i)
        if done_rows:
            rows = [reqs[i] for i in done_rows]
            if len(done_rows) < len(reqs):  # (a chunked request has no token to sample yet)
                logits = logits[to_device(torch.tensor(done_rows, dtype=torch.int64), logits.device)]
            self._sample_and_process(rows, logits)
            self.running.extend(r for r in rows[len(decodes):] if not r.finished and r.req_pool_idx is not None)
