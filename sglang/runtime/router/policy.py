"""Routing policies: which worker gets a request, given its routing key and the workers' loads.

`CacheAwarePolicy` (after sglang-router's design): while loads are balanced, send a key to the worker
whose routed history shares the longest prefix with it (when that covers at least `cache_threshold` of
the key), else to the least-loaded worker (ties: the smallest routed history, i.e. the emptiest
cache); when loads are imbalanced — (max - min) > `balance_abs_threshold` AND max >
`balance_rel_threshold` × min — to the least-loaded worker. Either way the key is recorded for the
chosen worker. `RoundRobinPolicy` is the baseline it is measured against.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

from sglang.runtime.router.tree import Key, PrefixTree


EVICT_TO = 0.9  # an over-full tree is cut to this fraction of its bound


@dataclass(frozen=True)
class Decision:
    """Where a request went and why (`reason`: cache_hit | least_loaded | imbalanced | round_robin)."""

    worker: str
    reason: str
    matched: int = 0   # key elements the chosen worker's routed history already covered
    key_len: int = 0


class Policy(Protocol):
    name: str

    def select(self, key: Key, loads: Mapping[str, int]) -> Decision:
        """Choose one of `loads`' workers (non-empty; load = requests in flight) for `key`."""

    def remove_worker(self, worker: str) -> None:
        """Forget the worker's state (it left the pool or restarted)."""


def least_loaded(loads: Mapping[str, int], tie_break: Optional[Mapping[str, int]] = None) -> str:
    """The worker with the fewest requests in flight; ties go to the smallest `tie_break`, then to order."""
    tie = tie_break or {}
    order = {w: i for i, w in enumerate(loads)}
    return min(loads, key=lambda w: (loads[w], tie.get(w, 0), order[w]))


def is_imbalanced(loads: Mapping[str, int], abs_threshold: int, rel_threshold: float) -> bool:
    if len(loads) < 2:
        return False
    hi, lo = max(loads.values()), min(loads.values())
    return hi - lo > abs_threshold and hi > rel_threshold * lo


class RoundRobinPolicy:
    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def select(self, key: Key, loads: Mapping[str, int]) -> Decision:
        workers = list(loads)
        with self._lock:
            i = next(self._counter)
        return Decision(workers[i % len(workers)], "round_robin", 0, len(key))

    def remove_worker(self, worker: str) -> None:
        pass


class CacheAwarePolicy:
    name = "cache_aware"

    def __init__(self, cache_threshold: float = 0.5, balance_abs_threshold: int = 32,
                 balance_rel_threshold: float = 1.0001, max_tree_size: int = 1 << 22) -> None:
        if not 0.0 <= cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold must be in [0, 1], got {cache_threshold}")
        if balance_abs_threshold < 0 or balance_rel_threshold < 1.0:
            raise ValueError("balance_abs_threshold must be >= 0 and balance_rel_threshold >= 1")
        if max_tree_size < 1:
            raise ValueError(f"max_tree_size must be >= 1, got {max_tree_size}")
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.max_tree_size = max_tree_size
        self.tree = PrefixTree()

    def select(self, key: Key, loads: Mapping[str, int]) -> Decision:
        decision = self._choose(key, loads)
        self.tree.insert(key, decision.worker)
        if self.tree.size(decision.worker) > self.max_tree_size:
            # evict with slack: each eviction walks the worker's whole subtree, so not on every request
            self.tree.evict(decision.worker, int(self.max_tree_size * EVICT_TO))
        return decision

    def _choose(self, key: Key, loads: Mapping[str, int]) -> Decision:
        matches = {w: n for w, n in self.tree.match(key).items() if w in loads}
        sizes = {w: self.tree.size(w) for w in loads}
        if is_imbalanced(loads, self.balance_abs_threshold, self.balance_rel_threshold):
            w = least_loaded(loads, sizes)
            return Decision(w, "imbalanced", matches.get(w, 0), len(key))
        if matches:
            best = max(matches.values())
            if key and best / len(key) >= self.cache_threshold:
                # several workers with the same match: the less loaded one
                w = least_loaded({w: loads[w] for w in loads if matches.get(w) == best})
                return Decision(w, "cache_hit", best, len(key))
        w = least_loaded(loads, sizes)
        return Decision(w, "least_loaded", matches.get(w, 0), len(key))

    def remove_worker(self, worker: str) -> None:
        self.tree.remove_worker(worker)


def make_policy(name: str, **kwargs: float) -> Policy:
    """`cache_aware` (kwargs: its thresholds) or `round_robin`."""
    if name == "cache_aware":
        return CacheAwarePolicy(**kwargs)  # type: ignore[arg-type]
    if name == "round_robin":
        return RoundRobinPolicy()
    raise ValueError(f"unknown routing policy {name!r} (cache_aware | round_robin)")
