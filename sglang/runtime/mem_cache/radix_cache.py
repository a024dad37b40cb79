"""Prefix cache policies over the token KV pool.

`RadixCache` is RadixAttention's cache: a radix tree whose edges are token-id runs and whose nodes hold
the KV-pool slots of those tokens (page size 1). Requests reuse the longest cached prefix, running
requests lock their path so it cannot be evicted, and unlocked leaves are evicted in LRU order when the
pool runs short. `NoRadixCache` has the same interface and caches nothing (--disable-radix-cache).

Slot ownership: a slot is either free in the pool, owned by the tree, or owned by exactly one request.
Hence the invariant once idle: pool.available_size() + cache.evictable_size() == pool.size.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Optional, Sequence

import torch

from sglang.runtime.mem_cache.memory_pool import TokenKVPool

_EMPTY = torch.empty((0,), dtype=torch.int64)


class TreeNode:
    __slots__ = ("children", "parent", "key", "value", "lock_ref", "last_access", "id")
    _ids = itertools.count()

    def __init__(self, parent: Optional["TreeNode"] = None) -> None:
        self.children: dict[int, TreeNode] = {}
        self.parent = parent
        self.key: tuple[int, ...] = ()  # token ids on the edge from parent to this node
        self.value: torch.Tensor = _EMPTY  # KV slots of those tokens
        self.lock_ref = 0
        self.last_access = 0
        self.id = next(TreeNode._ids)

    def __lt__(self, other: "TreeNode") -> bool:  # heap order: least recently used first
        return (self.last_access, self.id) < (other.last_access, other.id)

    def __repr__(self) -> str:
        return f"TreeNode(id={self.id}, len={len(self.key)}, lock={self.lock_ref})"


def _common_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of a and b, by slice comparisons (C speed; an edge usually matches
    whole, and a batch of requests sharing a long few-shot prefix walks it once per request per round)
    and a binary search for the first difference, not a Python loop over the tokens."""
    n = min(len(a), len(b))
    a, b = tuple(a[:n]), tuple(b[:n])
    if a == b:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class RadixCache:
    """Token-level radix tree of cached prefixes (see module docstring)."""

    disabled = False

    def __init__(self, token_kv_pool: TokenKVPool) -> None:
        self.pool = token_kv_pool
        self.reset()

    # -- lifecycle --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything. Does NOT free slots: call when the pool is cleared as well."""
        self.root = TreeNode()
        self.root.lock_ref = 1  # the root is never evicted
        self._clock = 0
        self._evictable = 0
        self._protected = 0

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    # -- lookup -----------------------------------------------------------------------------------
    def match_prefix(self, token_ids: Sequence[int]) -> tuple[torch.Tensor, TreeNode]:
        """Slots of the longest cached prefix of `token_ids`, and the node that ends it.

        A partial match inside an edge splits that edge so the returned node ends exactly there.
        """
        token_ids = token_ids if isinstance(token_ids, tuple) else tuple(token_ids)  # slices compare as tuples
        node, pieces, now = self.root, [], self._tick()
        node.last_access = now
        pos = 0
        while pos < len(token_ids):
            child = node.children.get(token_ids[pos])
            if child is None:
                break
            n = _common_len(child.key, token_ids[pos : pos + len(child.key)])
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = now
            pieces.append(child.value)
            node, pos = child, pos + n
        slots = torch.cat(pieces) if pieces else _EMPTY.to(self.pool.device)
        return slots, node

    def match_len(self, token_ids: Sequence[int]) -> int:
        """How many leading tokens of `token_ids` are cached: match_prefix's length without its effects (no
        edge split, no access time, no slots gathered on the device). The lpm order needs only this, for
        every waiting request every round: a match per request launched a device concat each (~50 us)."""
        node, pos, n = self.root, 0, len(token_ids)
        while pos < n:
            child = node.children.get(token_ids[pos])
            if child is None:
                break
            k = len(child.key)
            m = _common_len(child.key, token_ids[pos : pos + k])
            pos += m
            if m < k:
                break
            node = child
        return pos

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Cut `child`'s edge after n tokens; returns the new middle node (which keeps child below)."""
        mid = TreeNode(child.parent)
        mid.key, mid.value = child.key[:n], child.value[:n]
        mid.lock_ref, mid.last_access = child.lock_ref, child.last_access
        child.parent.children[mid.key[0]] = mid
        child.key, child.value = child.key[n:], child.value[n:]
        child.parent = mid
        mid.children[child.key[0]] = child
        return mid

    # -- insertion --------------------------------------------------------------------------------
    def insert(self, token_ids: Sequence[int], slots: torch.Tensor) -> int:
        """Cache `slots` as the KV of `token_ids`; returns how many leading tokens were already cached.

        The tree keeps its own slots for those; the caller owns `slots[:returned]` and must free the
        ones it does not share with the tree (the part beyond the prefix it matched earlier).
        """
        if len(token_ids) != slots.numel():
            raise ValueError(f"insert: {len(token_ids)} tokens but {slots.numel()} slots")
        # a list of ints (every request's ids) converts at C speed; anything else (tensor rows) per token
        token_ids = tuple(token_ids) if isinstance(token_ids, (list, tuple)) else tuple(int(t) for t in token_ids)
        node, pos, now = self.root, 0, self._tick()
        while pos < len(token_ids):
            child = node.children.get(token_ids[pos])
            if child is None:
                leaf = TreeNode(node)
                leaf.key, leaf.value = token_ids[pos:], slots[pos:].clone()
                leaf.last_access = now
                node.children[leaf.key[0]] = leaf
                self._evictable += len(leaf.key)
                return pos
            n = _common_len(child.key, token_ids[pos : pos + len(child.key)])
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = now
            node, pos = child, pos + n
        return pos

    # -- eviction ---------------------------------------------------------------------------------
    def evict(self, num_tokens: int) -> int:
        """Free at least `num_tokens` slots (if possible) from unlocked leaves, LRU first."""
        heap = [n for n in self._leaves() if n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < num_tokens and heap:
            leaf = heapq.heappop(heap)
            self.pool.free(leaf.value)
            freed += len(leaf.key)
            self._evictable -= len(leaf.key)
            parent = leaf.parent
            del parent.children[leaf.key[0]]
            if not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, parent)
        return freed

    def _leaves(self) -> list[TreeNode]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            if not node.children and node is not self.root:
                out.append(node)
            stack.extend(node.children.values())
        return out

    # -- locking ----------------------------------------------------------------------------------
    def inc_lock_ref(self, node: TreeNode) -> None:
        """Protect the path root..node from eviction (a running request uses it)."""
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.key)
                self._protected += len(node.key)
            node.lock_ref += 1
            node = node.parent

    def dec_lock_ref(self, node: TreeNode) -> None:
        while node is not self.root:
            if node.lock_ref == 1:
                self._evictable += len(node.key)
                self._protected -= len(node.key)
            if node.lock_ref <= 0:
                raise RuntimeError(f"dec_lock_ref on unlocked {node!r}")
            node.lock_ref -= 1
            node = node.parent

    def lock_cost(self, node: TreeNode) -> int:
        """How many evictable tokens inc_lock_ref(node) would protect."""
        total = 0
        while node is not self.root and node.lock_ref == 0:
            total += len(node.key)
            node = node.parent
        return total

    # -- sizes ------------------------------------------------------------------------------------
    def evictable_size(self) -> int:
        return self._evictable

    def protected_size(self) -> int:
        return self._protected

    def total_size(self) -> int:
        return self._evictable + self._protected

    def num_nodes(self) -> int:
        count, stack = 0, [self.root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        return count

    # -- request-level helpers (the one place that knows the ownership rules) ---------------------
    def cache_req(
        self,
        token_ids: Sequence[int],
        slots: torch.Tensor,
        prefix_len: int,
        last_node: TreeNode,
        finished: bool,
    ) -> tuple[torch.Tensor, TreeNode]:
        """Hand a request's KV (slots for `token_ids`; the first prefix_len came from the tree and are
        locked at `last_node`) over to the tree.

        finished: the request lets go; its path is unlocked and nothing is returned to it.
        unfinished (a chunk of a chunked prefill): the request keeps using these tokens; returns the
        slots it should now see for `token_ids` (the tree's) and the new locked node.
        """
        already = self.insert(token_ids, slots)
        # slots[prefix_len:already] duplicate KV the tree already had (another request inserted the
        # same tokens meanwhile); the tree keeps its copy, ours go back to the pool.
        if already > prefix_len:
            self.pool.free(slots[prefix_len:already])
        if finished:
            self.dec_lock_ref(last_node)
            return _EMPTY, self.root
        new_slots, new_node = self.match_prefix(token_ids)
        self.inc_lock_ref(new_node)
        self.dec_lock_ref(last_node)
        return new_slots, new_node

    def pretty(self) -> str:
        lines: list[str] = []

        def walk(node: TreeNode, depth: int) -> None:
            for child in node.children.values():
                lines.append("  " * depth + f"{list(child.key)[:8]}{'...' if len(child.key) > 8 else ''}"
                             f" len={len(child.key)} lock={child.lock_ref}")
                walk(child, depth + 1)

        walk(self.root, 0)
        return "\n".join(lines)


class NoRadixCache:
    """--disable-radix-cache: nothing is ever shared; a request frees its own slots when done."""

    disabled = True

    def __init__(self, token_kv_pool: TokenKVPool) -> None:
        self.pool = token_kv_pool
        self.root = TreeNode()

    def reset(self) -> None:
        pass

    def match_prefix(self, token_ids: Sequence[int]) -> tuple[torch.Tensor, TreeNode]:
        return _EMPTY.to(self.pool.device), self.root

    def match_len(self, token_ids: Sequence[int]) -> int:
        return 0

    def insert(self, token_ids: Sequence[int], slots: torch.Tensor) -> int:
        return 0

    def evict(self, num_tokens: int) -> int:
        return 0

    def inc_lock_ref(self, node: TreeNode) -> None:
        pass

    def dec_lock_ref(self, node: TreeNode) -> None:
        pass

    def lock_cost(self, node: TreeNode) -> int:
        return 0

    def evictable_size(self) -> int:
        return 0

    def protected_size(self) -> int:
        return 0

    def total_size(self) -> int:
        return 0

    def num_nodes(self) -> int:
        return 1

    def cache_req(
        self,
        token_ids: Sequence[int],
        slots: torch.Tensor,
        prefix_len: int,
        last_node: TreeNode,
        finished: bool,
    ) -> tuple[torch.Tensor, TreeNode]:
        if finished:
            self.pool.free(slots)
            return _EMPTY, self.root
        return slots, self.root  # the request keeps owning its slots

    def pretty(self) -> str:
        return ""


def make_prefix_cache(token_kv_pool: TokenKVPool, disable: bool) -> RadixCache | NoRadixCache:
    return NoRadixCache(token_kv_pool) if disable else RadixCache(token_kv_pool)
