"""Which rows of a DECODE batch share cached-prefix KV, from the radix tree (ForwardBatch.prefix_groups).

A running request holds the tree's slots for its first prefix_len tokens: the path root..last_node. Two
requests therefore share exactly the KV of the path root..LCA(their last nodes). `find_prefix_groups`
picks one shared prefix per group (a tree node) so that the KV reads saved, sum over groups of
(rows - 1) * shared length, is large: bottom-up, at each node either all rows below it form one group
at its depth, or its children's groupings stand and the rows they left alone (plus the rows ending right
there) group at this node. Splitting an edge (a later partial match) adds no branching node, so the
answer depends only on the last nodes.

The grouping is returned only when it pays: eager cascade decode (no cascade CUDA graphs) must save enough
KV traffic to beat a CUDA-graph replay of plain decode; a cascade graph costs little more than a plain one
(`GRAPH_THRESHOLDS`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Optional, Sequence

from sglang.runtime.forward_batch import PrefixGroups

# a shared prefix shorter than this is read per row: its tile would cost more than it saves
MIN_SHARED_LEN = 32
# cascade only when it saves at least this share of the batch's KV reads and this many tokens of KV
# (eager launches instead of a graph replay cost ~1 ms of host time per step; tune on the H200)
MIN_SAVED_SHARE = 0.25
MIN_SAVED_TOKENS = 16384
# with cascade CUDA graphs the extra cost is one small kernel per layer and a wider merge
GRAPH_THRESHOLDS = (0.1, 4096)


def find_prefix_groups(nodes: Sequence[Any], seq_lens: Sequence[int],
                       min_saved_share: float = MIN_SAVED_SHARE,
                       min_saved_tokens: int = MIN_SAVED_TOKENS) -> Optional[PrefixGroups]:
    """nodes[i]: the radix node that ends row i's cached prefix (None or the root: none).
    seq_lens[i]: the row's KV length this step. None when no grouping saves enough."""
    groups, saved = _best_grouping(nodes)
    return _if_worth_it(groups, saved, seq_lens, min_saved_share, min_saved_tokens)


class PrefixGrouper:
    """find_prefix_groups for consecutive decode steps: the grouping depends only on the rows' last
    nodes (ids are never reused), which stay the same from step to step until the batch changes."""

    def __init__(self, min_saved_share: Optional[float] = None, min_saved_tokens: Optional[int] = None) -> None:
        """None: the module's thresholds as they are when the grouper is made."""
        self.min_saved_share = MIN_SAVED_SHARE if min_saved_share is None else min_saved_share
        self.min_saved_tokens = MIN_SAVED_TOKENS if min_saved_tokens is None else min_saved_tokens
        self._key: Optional[tuple] = None
        self._value: tuple[Optional[PrefixGroups], int] = (None, 0)

    def find(self, nodes: Sequence[Any], seq_lens: Sequence[int]) -> Optional[PrefixGroups]:
        key = tuple(None if n is None else n.id for n in nodes)
        if key != self._key:
            self._key, self._value = key, _best_grouping(nodes)
        return _if_worth_it(*self._value, seq_lens, self.min_saved_share, self.min_saved_tokens)


def _best_grouping(nodes: Sequence[Any]) -> tuple[Optional[PrefixGroups], int]:
    tree = _InducedTree(nodes)
    if tree.root is None:
        return None, 0
    saved = tree.solve()
    if saved <= 0:
        return None, 0
    rows: list[int] = []
    indptr = [0]
    shared: list[int] = []
    for members, length in tree.groups():
        rows.extend(members)
        indptr.append(len(rows))
        shared.append(length)
    return PrefixGroups(rows=rows, indptr=indptr, shared_lens=shared), saved


def _if_worth_it(groups: Optional[PrefixGroups], saved: int, seq_lens: Sequence[int], min_saved_share: float,
                 min_saved_tokens: int) -> Optional[PrefixGroups]:
    if groups is None or saved < min_saved_tokens or saved < min_saved_share * sum(seq_lens):
        return None
    return groups


class _InducedTree:
    """The part of the radix tree on the paths from the batch's last nodes to the root."""

    def __init__(self, nodes: Sequence[Any]) -> None:
        self.rows_at: dict[int, list[int]] = defaultdict(list)  # node id -> rows ending there
        self.kids: dict[int, list[int]] = defaultdict(list)
        self.node: dict[int, Any] = {}
        self.root: Optional[int] = None
        last: dict[int, Any] = {}
        for row, n in enumerate(nodes):
            if n is None or n.parent is None:
                continue  # no cached prefix
            self.rows_at[n.id].append(row)
            if n.id not in last:
                last[n.id] = n
                self._add_path(n.parent)
        # a row alone at a leaf of this tree (its own prompt's tail: the common case) can only join a
        # group at an ancestor, so it is kept as a loose row of its parent, not as a node (speed)
        self.loose_at: dict[int, list[int]] = defaultdict(list)
        for nid, n in last.items():
            if nid in self.node:
                continue
            rows = self.rows_at[nid]
            if len(rows) == 1:
                self.loose_at[n.parent.id].append(rows[0])
                del self.rows_at[nid]
            else:
                self._add_path(n)

    def _add_path(self, n: Any) -> None:
        while n.id not in self.node:
            self.node[n.id] = n
            if n.parent is None:
                self.root = n.id
                return
            self.kids[n.parent.id].append(n.id)
            n = n.parent

    def _top_down(self) -> list[int]:
        order, i = [self.root], 0
        while i < len(order):
            order.extend(self.kids[order[i]])
            i += 1
        return order

    def solve(self) -> int:
        """Choose the groups bottom-up; returns the tokens of KV reads they save.

        At each node two candidates: `whole` (every row below in one group at this depth) or `split`
        (the children's choices, plus one group here of the rows they left ungrouped and the rows
        ending here). Rows left ungrouped travel up to join a shallower group."""
        order = self._top_down()
        self.depth = {self.root: 0}
        for nid in order[1:]:
            n = self.node[nid]
            self.depth[nid] = self.depth[n.parent.id] + len(n.key)
        under: dict[int, int] = {}
        free: dict[int, list[int]] = {}  # rows below the node not yet in a group
        best: dict[int, int] = {}
        self.whole: dict[int, bool] = {}
        self.here: dict[int, list[int]] = {}  # split: the group formed at the node (may be empty)
        for nid in reversed(order):
            d, kids = self.depth[nid], self.kids.get(nid, ())
            own = self.rows_at.get(nid, []) + self.loose_at.get(nid, [])
            loose = list(own)
            for c in kids:
                loose.extend(free[c])
            under[nid] = len(own) + sum(under[c] for c in kids)
            split = sum(best[c] for c in kids) + _saving(len(loose), d)
            whole = _saving(under[nid], d)
            self.whole[nid] = whole > 0 and whole >= split
            grouped_here = not self.whole[nid] and _saving(len(loose), d) > 0
            self.here[nid] = loose if grouped_here else []
            free[nid] = [] if self.whole[nid] or grouped_here else loose
            best[nid] = max(whole, split)
        return best[self.root]

    def groups(self) -> list[tuple[list[int], int]]:
        out: list[tuple[list[int], int]] = []
        stack = [self.root]
        while stack:
            nid = stack.pop()
            d = self.depth[nid]
            if self.whole[nid]:
                out.append((self._rows_below(nid), d))
                continue
            if self.here[nid]:
                out.append((sorted(self.here[nid]), d))
            stack.extend(self.kids.get(nid, ()))
        return out

    def _rows_below(self, nid: int) -> list[int]:
        rows, stack = [], [nid]
        while stack:
            n = stack.pop()
            rows.extend(self.rows_at.get(n, ()))
            rows.extend(self.loose_at.get(n, ()))
            stack.extend(self.kids.get(n, ()))
        return sorted(rows)


def _saving(rows: int, shared_len: int) -> int:
    """KV tokens not read when `rows` rows read a `shared_len` prefix once (0 when not worth a group)."""
    if rows < 2 or shared_len < MIN_SHARED_LEN:
        return 0
    return (rows - 1) * shared_len
