"""Approximate prefix tree of what was routed to each worker, with a per-worker size bound (LRU).

The router cannot see a worker's radix cache, so it remembers the keys it sent there: a worker that
received a key probably still caches its prefix. Keys are sequences of hashable elements (the
characters of a prompt string, or token ids); one tree holds every worker, each node recording which
workers own it and when they last touched it. A worker owning a node owns all its ancestors, so a
worker's match length is the depth of the deepest owned node along the key's path.
"""
from __future__ import annotations

import heapq
import itertools
import threading
from typing import Hashable, Optional, Sequence

Key = Sequence[Hashable]


class _Node:
    __slots__ = ("edge", "children", "parent", "owners")

    def __init__(self, edge: Key, parent: Optional["_Node"]) -> None:
        self.edge = edge                          # the elements on the edge from the parent to this node
        self.children: dict[Hashable, _Node] = {}  # first element of the child's edge -> child
        self.parent = parent
        self.owners: dict[str, int] = {}           # worker -> tick of its last insert through this node


def _common_len(a: Key, b: Key, start: int) -> int:
    """Length of the common prefix of `a` and `b[start:]`. Slice comparisons run in C: one when the
    whole edge matches (the usual case), a binary search over them when it does not."""
    n = min(len(a), len(b) - start)
    if a[:n] == b[start:start + n]:
        return n
    lo, hi = 0, n  # a[:lo] matches, a[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[start:start + mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _norm(key: Key) -> Key:
    # slices of one type compare equal only to the same type: a list key must match a tuple edge
    return key if isinstance(key, (str, tuple)) else tuple(key)


class PrefixTree:
    """Which worker has seen which key prefixes. Thread-safe; every operation is O(len(key)) but eviction."""

    def __init__(self) -> None:
        self._root = _Node((), None)
        self._sizes: dict[str, int] = {}  # worker -> elements on the edges it owns
        self._ticks = itertools.count(1)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ queries

    def size(self, worker: str) -> int:
        return self._sizes.get(worker, 0)

    def workers(self) -> list[str]:
        return list(self._sizes)

    def match(self, key: Key) -> dict[str, int]:
        """worker -> length of the longest prefix of `key` routed to it (workers with 0 left out)."""
        key = _norm(key)
        with self._lock:
            out: dict[str, int] = {}
            node, pos = self._root, 0
            while pos < len(key):
                child = node.children.get(key[pos])
                if child is None:
                    break
                n = _common_len(child.edge, key, pos)
                pos += n
                for w in child.owners:
                    out[w] = pos  # deeper nodes overwrite: owners of a child are owners of its parent
                if n < len(child.edge):
                    break
                node = child
            return out

    # ------------------------------------------------------------------ updates

    def insert(self, key: Key, worker: str) -> None:
        """Record that `key` was routed to `worker` (touches every node on its path)."""
        if not key:
            return
        key = _norm(key)
        with self._lock:
            tick = next(self._ticks)
            node, pos = self._root, 0
            while pos < len(key):
                child = node.children.get(key[pos])
                if child is None:
                    child = _Node(key[pos:], node)
                    node.children[key[pos]] = child
                n = _common_len(child.edge, key, pos)
                if n < len(child.edge):
                    child = self._split(child, n)
                self._own(child, worker, tick)
                pos += n
                node = child

    def _split(self, child: _Node, n: int) -> _Node:
        """Cut child's edge after n elements; the new upper node keeps child's owners (they own both)."""
        parent = child.parent
        assert parent is not None
        upper = _Node(child.edge[:n], parent)
        upper.owners = dict(child.owners)
        parent.children[upper.edge[0]] = upper
        child.edge = child.edge[n:]
        child.parent = upper
        upper.children[child.edge[0]] = child
        return upper

    def _own(self, node: _Node, worker: str, tick: int) -> None:
        if worker not in node.owners:
            self._sizes[worker] = self._sizes.get(worker, 0) + len(node.edge)
        node.owners[worker] = tick

    def evict(self, worker: str, max_size: int) -> int:
        """Forget the worker's least recently routed leaves until it owns at most `max_size` elements.
        Returns the number of elements forgotten."""
        with self._lock:
            size = self._sizes.get(worker, 0)
            if size <= max_size:
                return 0
            heap = [(n.owners[worker], id(n), n) for n in self._owned(worker) if self._is_leaf_of(n, worker)]
            heapq.heapify(heap)
            freed = 0
            while heap and size - freed > max_size:
                _, _, node = heapq.heappop(heap)
                freed += len(node.edge)
                parent = self._disown(node, worker)
                if parent is not self._root and parent is not None and self._is_leaf_of(parent, worker):
                    heapq.heappush(heap, (parent.owners[worker], id(parent), parent))
            self._sizes[worker] = size - freed
            return freed

    def remove_worker(self, worker: str) -> None:
        """Forget everything routed to `worker` (it left the pool, or restarted with an empty cache)."""
        with self._lock:
            for node in self._owned(worker):
                self._disown(node, worker)
            self._sizes.pop(worker, None)

    # ------------------------------------------------------------------ internals

    def _owned(self, worker: str) -> list[_Node]:
        """Nodes owned by `worker`, children after parents (ownership is closed upward, so prune there)."""
        out, stack = [], [c for c in self._root.children.values() if worker in c.owners]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(c for c in node.children.values() if worker in c.owners)
        return out

    @staticmethod
    def _is_leaf_of(node: _Node, worker: str) -> bool:
        return worker in node.owners and not any(worker in c.owners for c in node.children.values())

    def _disown(self, node: _Node, worker: str) -> Optional[_Node]:
        """Drop the worker from `node`; a node nobody owns leaves the tree. Returns the parent."""
        node.owners.pop(worker, None)
        parent = node.parent
        if not node.owners and parent is not None:
            # nobody owns it, so nobody owns its descendants either
            del parent.children[node.edge[0]]
            node.parent = None
        return parent

    def check_invariants(self) -> None:
        """Owners are closed upward, parents and children agree, recorded sizes are the owned edge lengths."""
        sizes: dict[str, int] = {}
        stack = [self._root]
        while stack:
            node = stack.pop()
            for first, child in node.children.items():
                assert child.parent is node and child.edge and child.edge[0] == first
                assert child.owners, "an unowned node stays in the tree"
                if node is not self._root:
                    assert set(child.owners) <= set(node.owners), "an owner of a child must own its parent"
                for w in child.owners:
                    sizes[w] = sizes.get(w, 0) + len(child.edge)
                stack.append(child)
        assert {w: s for w, s in self._sizes.items() if s} == sizes, (self._sizes, sizes)
