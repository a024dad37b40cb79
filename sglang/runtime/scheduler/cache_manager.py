"""KV memory of requests: the one place that moves slots between the pool, the prefix cache and requests.

`CacheManager` owns the request → token table (req_to_token rows), the token KV pool and the prefix
cache (radix tree or none). Its operations follow a request's life:
  - match / admit: find the cached prefix, lock it, give the request a req_to_token row;
  - alloc / extend_slots: new slots, evicting least recently used cache leaves when the pool is short;
  - cache_unfinished: share a running request's computed tokens through the cache;
  - release: the request stops holding KV (finished, aborted, retracted, re-prefilled).
Invariant once idle: every slot is free or evictable, nothing locked, every row free (`check_idle`).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool
from sglang.runtime.mem_cache.radix_cache import make_prefix_cache
from sglang.runtime.scheduler.req import Req


class OutOfKVMemory(RuntimeError):
    pass


class CacheManager:
    def __init__(self, req_to_token_pool: ReqToTokenPool, token_kv_pool: TokenKVPool,
                 disable_radix_cache: bool = False) -> None:
        self.req_pool = req_to_token_pool
        self.pool = token_kv_pool
        self.cache = make_prefix_cache(token_kv_pool, disable_radix_cache)

    # -- budget -----------------------------------------------------------------------------------
    def available(self) -> int:
        """Slots obtainable now: free + evictable."""
        return self.pool.available_size() + self.cache.evictable_size()

    def free_rows(self) -> int:
        return self.req_pool.available_size()

    def lock_cost(self, node: Any) -> int:
        """Evictable tokens that locking `node` (a cached prefix) takes out of the budget."""
        return self.cache.lock_cost(node)

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
    def match(self, req: Req) -> tuple[torch.Tensor, Any]:
        return self.cache.match_prefix(req.all_ids[: req.max_prefix_len()])

    def match_len(self, req: Req) -> int:
        """Cached tokens `match` would find for req, without its side effects (lpm ordering)."""
        return self.cache.match_len(req.all_ids[: req.max_prefix_len()])

    def admit(self, req: Req, prefix_slots: torch.Tensor, last_node: Any) -> None:
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

    def write_slots(self, rows: torch.Tensor, cols: torch.Tensor, slots: torch.Tensor) -> None:
        """req_to_token[rows[i], cols[i]] = slots[i] in one indexed store (a decode step: one slot per
        request). rows/cols are the batch's device tensors: building new ones here from host lists
        would wait for the device stream, which would undo overlap scheduling."""
        dev = self.req_pool.device
        self.req_pool.req_to_token[rows.to(dev), cols.to(dev)] = slots.to(dev)

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
        """The request stops holding KV: its computed tokens go to the cache (or back to the pool
        without one), its prefix is unlocked, its row is freed. Idempotent."""
        if req.req_pool_idx is None:
            return
        self.cache.cache_req(req.all_ids[: req.kv_len], self.slots_of(req), req.prefix_len, req.last_node, finished=True)
        self.req_pool.free(req.req_pool_idx)
        req.req_pool_idx = None
        req.last_node = None
        req.kv_len = req.prefix_len = 0

    # -- maintenance ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Drop every cached prefix (only when no request holds KV)."""
        self.cache.evict(self.cache.evictable_size())
        self.cache.reset()

    def stats(self) -> dict[str, int]:
        return {"pool_free": self.pool.available_size(), "pool_evictable": self.cache.evictable_size(),
                "pool_protected": self.cache.protected_size(), "pool_size": self.pool.size,
                "req_slots_free": self.req_pool.available_size()}

    def check_idle(self) -> None:
        """Raise AssertionError unless every slot and row is accounted for (no request holds KV)."""
        free, ev, size = self.pool.available_size(), self.cache.evictable_size(), self.pool.size
        if free + ev != size:
            raise AssertionError(f"KV leak: free {free} + evictable {ev} != pool size {size}")
        if self.cache.protected_size() != 0:
            raise AssertionError(f"{self.cache.protected_size()} cached tokens still locked while idle")
        if self.req_pool.available_size() != self.req_pool.size:
            raise AssertionError("req_to_token rows leaked")
