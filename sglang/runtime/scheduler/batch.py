"""KV memory for requests and ForwardBatch construction.

`KVManager` is the one place that moves slots between the pool, the radix cache and requests:
admission (lock the cached prefix), allocation (evicting LRU cache leaves when the pool is short),
and release (hand the request's KV to the cache, unlock, free its req_to_token row).
`build_extend` / `build_decode` turn a list of requests into the ForwardBatch contract.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from sglang.runtime.forward_batch import ForwardBatch, ForwardMode
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool
from sglang.runtime.scheduler.req import Req


class OutOfKVMemory(RuntimeError):
    pass


class KVManager:
    def __init__(self, req_to_token_pool: ReqToTokenPool, token_kv_pool: TokenKVPool, cache) -> None:
        self.req_pool = req_to_token_pool
        self.pool = token_kv_pool
        self.cache = cache

    # -- budget -----------------------------------------------------------------------------------
    def available(self) -> int:
        """Slots obtainable now: free + evictable."""
        return self.pool.available_size() + self.cache.evictable_size()

    def alloc(self, n: int) -> torch.Tensor:
        if n == 0:
            return torch.empty((0,), dtype=torch.int64, device=self.pool.device)
        slots = self.pool.alloc(n)
        if slots is None:
            self.cache.evict(n - self.pool.available_size())
            slots = self.pool.alloc(n)
        if slots is None:
            raise OutOfKVMemory(f"need {n} KV slots, {self.pool.available_size()} free after eviction")
        return slots

    # -- request life cycle -----------------------------------------------------------------------
    def match(self, req: Req) -> tuple[torch.Tensor, object]:
        return self.cache.match_prefix(req.all_ids[: req.max_prefix_len()])

    def admit(self, req: Req, prefix_slots: torch.Tensor, last_node: object) -> None:
        """A waiting request joins: lock its cached prefix and give it a req_to_token row."""
        idx = self.req_pool.alloc()
        if idx is None:
            raise OutOfKVMemory("no free req_to_token row")
        self.cache.inc_lock_ref(last_node)
        req.req_pool_idx = idx
        req.last_node = last_node
        req.prefix_len = req.kv_len = int(prefix_slots.numel())
        if req.prefix_len:
            self.req_pool.write(idx, 0, prefix_slots)

    def extend_slots(self, req: Req, n: int) -> torch.Tensor:
        """Allocate KV for the next n tokens of req (positions kv_len .. kv_len + n)."""
        slots = self.alloc(n)
        self.req_pool.write(req.req_pool_idx, req.kv_len, slots)
        return slots

    def slots_of(self, req: Req, end: Optional[int] = None) -> torch.Tensor:
        end = req.kv_len if end is None else end
        return self.req_pool.req_to_token[req.req_pool_idx, :end].clone()

    def cache_unfinished(self, req: Req) -> None:
        """Share the request's computed tokens through the cache while it keeps running."""
        new_slots, node = self.cache.cache_req(
            req.all_ids[: req.kv_len], self.slots_of(req), req.prefix_len, req.last_node, finished=False
        )
        req.last_node = node
        req.prefix_len = int(new_slots.numel())
        if req.prefix_len:
            self.req_pool.write(req.req_pool_idx, 0, new_slots)

    def release(self, req: Req) -> None:
        """The request stops holding KV (finished, aborted, retracted, or re-prefilled): its
        computed tokens go to the cache (or back to the pool without one), its row is freed."""
        if req.req_pool_idx is None:
            return
        self.cache.cache_req(req.all_ids[: req.kv_len], self.slots_of(req), req.prefix_len, req.last_node, finished=True)
        self.req_pool.free(req.req_pool_idx)
        req.req_pool_idx = None
        req.last_node = None
        req.kv_len = req.prefix_len = 0


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device without blocking the host: a plain torch.tensor(..., device="cuda") or a
    pageable .to() waits for the stream to drain, which would undo overlap scheduling."""
    device = torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def _t(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return to_device(torch.tensor(values, dtype=torch.int64), device)


def build_extend(
    reqs: Sequence[Req],
    out_slots: Sequence[torch.Tensor],
    req_pool: ReqToTokenPool,
    kv_pool: TokenKVPool,
    device: torch.device,
    logprob_starts: Optional[list[int]] = None,
    top_logprobs_nums: Optional[list[int]] = None,
) -> ForwardBatch:
    """reqs have kv_len (prefix) set and extend_len tokens to compute, whose slots are out_slots."""
    input_ids: list[int] = []
    positions: list[int] = []
    prefix_lens, ext_lens, seq_lens, starts = [], [], [], []
    loc = 0
    for r in reqs:
        ids = r.all_ids[r.kv_len : r.kv_len + r.extend_len]
        input_ids.extend(ids)
        positions.extend(range(r.kv_len, r.kv_len + r.extend_len))
        prefix_lens.append(r.kv_len)
        ext_lens.append(r.extend_len)
        seq_lens.append(r.kv_len + r.extend_len)
        starts.append(loc)
        loc += r.extend_len
    return ForwardBatch(
        mode=ForwardMode.EXTEND,
        batch_size=len(reqs),
        input_ids=_t(input_ids, device),
        positions=_t(positions, device),
        req_pool_indices=_t([r.req_pool_idx for r in reqs], device),
        seq_lens=_t(seq_lens, device),
        out_cache_loc=torch.cat(list(out_slots)).to(device),
        req_to_token=req_pool.req_to_token,
        kv_pool=kv_pool,
        extend_prefix_lens=_t(prefix_lens, device),
        extend_seq_lens=_t(ext_lens, device),
        extend_start_loc=_t(starts, device),
        seq_lens_cpu=seq_lens,
        extend_prefix_lens_cpu=prefix_lens,
        extend_seq_lens_cpu=ext_lens,
        extend_logprob_start_lens_cpu=logprob_starts,
        return_logprob=logprob_starts is not None,
        top_logprobs_nums=top_logprobs_nums,
    )


def build_decode(
    reqs: Sequence[Req],
    out_slots: torch.Tensor,
    req_pool: ReqToTokenPool,
    kv_pool: TokenKVPool,
    device: torch.device,
    input_ids: Optional[torch.Tensor] = None,
) -> ForwardBatch:
    """Every req computes one token at position kv_len into out_slots[i]: its last token, or
    input_ids[i] when given (overlap: sampled on the device, not yet on the host). The per-request
    columns go to the device in ONE non-blocking copy."""
    seq_lens = [r.kv_len + 1 for r in reqs]
    host_ids = [0] * len(reqs) if input_ids is not None else [
        r.output_ids[-1] if r.output_ids else r.origin_input_ids[-1] for r in reqs]
    packed = to_device(torch.tensor([[r.req_pool_idx for r in reqs], [r.kv_len for r in reqs], seq_lens, host_ids],
                                    dtype=torch.int64), device)
    return ForwardBatch(
        mode=ForwardMode.DECODE,
        batch_size=len(reqs),
        input_ids=packed[3] if input_ids is None else input_ids.to(device, torch.int64),
        positions=packed[1],
        req_pool_indices=packed[0],
        seq_lens=packed[2],
        out_cache_loc=out_slots.to(device),
        req_to_token=req_pool.req_to_token,
        kv_pool=kv_pool,
        seq_lens_cpu=seq_lens,
    )
