"""Decode: the running requests, one token each per DECODE forward, and retraction when memory runs out.

`DecodeManager` owns the running batch (requests whose KV covers all but their last token) and the
adaptive `new_token_ratio`: the share of their remaining max_new_tokens that admission keeps free
for them. It decays a little with every decode step (requests usually stop early) and jumps up after
a retraction (the guess was too low). `make_room` retracts before a decode step until each running
request can get one more slot: first the half-prefilled request yields, then the least advanced
running request goes back to waiting (it loses the least work); a lone request that still does not
fit is aborted. `launch` allocates the slots, builds the DECODE batch and runs the forward.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch

from sglang.runtime.server_args import ServerArgs
from sglang.runtime.scheduler.batch import build_decode
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.prefill import PrefillManager
from sglang.runtime.scheduler.prefix_groups import GRAPH_THRESHOLDS, PrefixGrouper
from sglang.runtime.scheduler.req import FinishKind, FinishReason, Req
from sglang.runtime.scheduler.request_table import RequestTable
from sglang.runtime.scheduler.step_timer import StepTimer

RETRACT_RATIO_STEP = 0.3  # new_token_ratio increase per retraction
NEW_TOKEN_RATIO_DECAY = 0.001  # new_token_ratio decrease per decode step


class DecodeManager:
    def __init__(self, args: ServerArgs, cache: CacheManager, prefill: PrefillManager, table: RequestTable,
                 runner: Any, device: torch.device, timer: Optional[StepTimer] = None) -> None:
        self.cache = cache
        self.timer = timer or StepTimer()
        self.prefill = prefill
        self.table = table
        self.runner = runner
        self.device = device
        cons = args.schedule_conservativeness
        self.init_new_token_ratio = min(0.7 * cons, 1.0)
        self.min_new_token_ratio = min(0.1 * cons, 1.0)
        self.new_token_ratio = self.init_new_token_ratio
        self.running: list[Req] = []
        # rows sharing radix-cached prefixes, so that attention may read that KV once per group
        self.grouper = None
        if args.enable_cascade_decode and not cache.cache.disabled:
            graphs = getattr(getattr(runner, "cuda_graph_runner", None), "cascade", False)
            self.grouper = PrefixGrouper(*GRAPH_THRESHOLDS) if graphs else PrefixGrouper()
        self.counters = {"forward_decode": 0, "retractions": 0}

    # -- the running batch ------------------------------------------------------------------------
    def add(self, reqs: Iterable[Req]) -> None:
        """Requests that finished their prefill join; one that already finished or gave its KV back
        (jump-forward) does not."""
        self.running.extend(r for r in reqs if not r.finished and r.req_pool_idx is not None)

    def remove(self, req: Req) -> bool:
        """Take req out (finished, aborted, or re-prefilling); whether it was here."""
        if req in self.running:
            self.running.remove(req)
            return True
        return False

    def clear(self) -> None:
        self.running = []

    def mixable(self, extra_tokens: int) -> list[Req]:
        """--enable-mixed-chunk: the running requests ride along in a prefill forward, one token each,
        only when every one of them gets its slot after the prefill's `extra_tokens`, without retraction."""
        if not self.running or self.cache.available() < len(self.running) + extra_tokens:
            return []
        return list(self.running)

    # -- retraction -------------------------------------------------------------------------------
    def make_room(self) -> None:
        """Retract until each running request can get one more slot (see the module docstring)."""
        while self.running and self.cache.available() < len(self.running):
            if self.prefill.yield_chunked():
                continue
            if len(self.running) == 1:
                req = self.running.pop()
                self.table.finish(req, FinishReason(FinishKind.ABORT, message="KV cache too small for this request"))
                return
            self.retract(self.retraction_victim())

    def retraction_victim(self) -> Req:
        """The least advanced request (fewest output tokens, then the longest prompt): it loses the
        least work and frees the most memory among equals."""
        return min(self.running, key=lambda r: (len(r.output_ids), -len(r.origin_input_ids)))

    def retract(self, req: Req) -> None:
        self.running.remove(req)
        self.prefill.requeue(req)
        req.num_retractions += 1
        self.counters["retractions"] += 1
        self.new_token_ratio = min(1.0, self.new_token_ratio + RETRACT_RATIO_STEP)

    # -- the DECODE forward -----------------------------------------------------------------------
    def launch(self, reqs: list[Req], input_ids: Optional[torch.Tensor] = None) -> Any:
        """One KV slot per request at position kv_len, then the forward; returns the runner's output.
        input_ids: the tokens as a device tensor when the host does not have them yet (overlap)."""
        slots = self.cache.alloc(len(reqs))
        groups = self.grouper and self.grouper.find([r.last_node for r in reqs], [r.kv_len + 1 for r in reqs])
        batch = build_decode(reqs, slots, self.cache.req_pool, self.cache.pool, self.device, input_ids, groups)
        self.cache.write_slots(batch.req_pool_indices, batch.positions, slots)
        self.timer.device_begin(self.device)  # ended once the step's tokens are sampled
        out = self.runner.forward(batch)
        self.counters["forward_decode"] += 1
        for r in reqs:
            r.kv_len += 1
        self.new_token_ratio = max(self.new_token_ratio - NEW_TOKEN_RATIO_DECAY, self.min_new_token_ratio)
        return out
