"""Token masks for context-free grammars: `CFGConstraintState`, the ConstraintState interface over cfg.py.

Mask of a column: every scan group (terminal T, DFA state q) is handled on its own (a column's future is
the union of its groups' futures, since the chart behind it is read-only). The vocabulary splits, per
(T, q) and with no parser context (`GroupWalk`, shared process-wide by T's regex, so the string /
number / key automata recurring in every schema are walked once per tokenizer):
1. tokens whose bytes stay live in T (`inside`): allowed whatever the parser stack (T can still finish,
   and every Earley item can be completed). Found by walking the vocabulary trie from q: node by node
   for terminals reaching few nodes (keys, enums, numbers), level by level with numpy otherwise;
2. tokens where T accepts mid-token and bytes remain (`tails`): the only context-dependent ones. Their
   suffixes are merged into one lazily expanded trie (`TailNode`), so a suffix such as `",` that ends a
   thousand string tokens is stepped by the parser once: one Earley closure where T ends, then the
   tail trie walked byte by byte, only along bytes the column can take, pruned as soon as the prefix
   dies. The tokens found are memoized per group key (T, state, items), across columns;
3. every other token is rejected by T's DFA.
EOS is allowed only when the text so far is complete. Jump-forward is not offered (returns None).

Memo: a mask depends on the parser state only through its scan groups' (terminal, DFA state, items) and,
for each item, how its origin column completes it -- recursively, which `CFGIndex.column_id` interns as
one integer per column signature (no positions in it). Masks are cached per grammar under that key
(`mask_key`), so every position inside one string value, or the same property in each array element or
in each request, computes its mask once; a hit is a dict lookup.

Budget: step 2 is capped at MAX_MASK_STEPS parser steps per mask. Past it, the remaining tails stay
masked: the mask is then a subset of the exact one (every allowed token is still viable, and the tokens
of step 1 -- single bytes included -- always remain, so generation never dead-ends), and the index counts
it in `truncated_masks`. JSON / expression grammars stay far below it.
"""
from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np
import torch

from sglang.runtime.constrained.cfg import Column, CompiledCFG, Recognizer, Waiting, closure, compile_cfg, step
from sglang.runtime.constrained.cfg_cache import cached_cfg
from sglang.runtime.constrained.errors import ConstraintViolation
from sglang.runtime.constrained.regex_fsm import ByteDFA
from sglang.runtime.constrained.json_schema import is_schema_grammar, schema_cfg
from sglang.runtime.constrained.state import consume_eos
from sglang.runtime.constrained.token_fsm import write_mask_row
from sglang.runtime.constrained.vocab import TokenVocab


# Parser steps one mask may spend walking token tails past terminal ends (a few thousand for JSON-like
# grammars; grammars letting a terminal follow itself with no separator, e.g. `WORD+`, need far more).
MAX_MASK_STEPS = 20_000
SPARSE_WALK_NODES = 500  # trie nodes a node-by-node walk may reach before the numpy walk takes over
DENSE_WALK_RATIO = 8  # a trie walk switches to whole-level gathers once 1/8 of a level's nodes are live
MASK_CACHE_ITEMS = 256  # masks kept per grammar (one bool per token each: ~12 MB at 49k tokens)
COLUMN_SIGS_MAX = 200_000  # distinct chart-column signatures interned per grammar before starting over
SHARED_WALKS_MAX = 2_000  # (vocab, terminal regex, DFA state) walks kept process-wide (~V bytes each)
_SHARED_WALKS: dict[tuple[str, str, int], "GroupWalk"] = {}
TAIL_MEMO_ITEMS = 4096  # scan groups' tail sets kept per grammar


class _TrieLists:
    """Python-list views of the vocabulary trie for the byte-by-byte subtree walks, and its numpy arrays
    for the vectorized walks (`walk`)."""

    def __init__(self, vocab: TokenVocab) -> None:
        t = vocab.trie
        self.depth = t.depth
        self.byte = [b.tolist() for b in t.byte]
        self.child_lo = [c.tolist() for c in t.child_lo]
        self.child_hi = [c.tolist() for c in t.child_hi]
        self.term_lo = [c.tolist() for c in t.term_lo]
        self.term_hi = [c.tolist() for c in t.term_hi]
        self.term_tokens = [c.tolist() for c in t.term_tokens]
        self.byte_np = t.byte
        self.tok_np = t.term_tokens
        self.child_lo_np, self.child_hi_np = t.child_lo, t.child_hi
        self.term_lo_np, self.term_hi_np = t.term_lo, t.term_hi
        self.parent = [np.zeros(0, np.int64)] + [  # each level-d node's parent (the dense walk's gather)
            np.repeat(np.arange(len(t.byte[d - 1])), np.asarray(t.child_hi[d]) - np.asarray(t.child_lo[d]))
            for d in range(1, t.depth + 1)]
        self.tok_node = [np.repeat(np.arange(len(t.byte[d])), t.term_hi[d] - t.term_lo[d]) for d in range(t.depth + 1)]

    def children(self, d: int, node: int) -> Optional[tuple[int, int, int]]:
        """(depth d + 1, first, end) of node's children at depth d (a range of level d + 1), or None if none."""
        d1 = d + 1
        if d1 > self.depth:
            return None
        lo, hi = self.child_lo[d1][node], self.child_hi[d1][node]
        return None if lo == hi else (d1, lo, hi)

    def walk(self, dfa: ByteDFA, q: int, vocab_size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """(bool [V] tokens whose bytes stay live in `dfa` from state q, [(depth, node)] where it accepts).

        A key, enum or number terminal reaches a few dozen trie nodes: those are walked node by node
        (`sparse_walk`); past SPARSE_WALK_NODES nodes (a string's body reaches most of the vocabulary) the
        walk starts over level by level with numpy (`dense_walk`)."""
        got = self.sparse_walk(dfa, q, vocab_size)
        return got if got is not None else self.dense_walk(dfa, q, vocab_size)

    def sparse_walk(self, dfa: ByteDFA, q: int, vocab_size: int,
                    max_nodes: int = 0) -> Optional[tuple[np.ndarray, list[tuple[int, int]]]]:
        """`walk` depth-first over the live trie nodes, or None past `max_nodes` of them
        (SPARSE_WALK_NODES by default). A node's children are found by binary search on their sorted
        bytes when the DFA state has few live bytes (a literal key has one), else by a scan."""
        max_nodes = max_nodes or SPARSE_WALK_NODES
        rows: dict[int, tuple[list[int], list[int], dict[int, int]]] = {}
        accepting = dfa.accepting
        toks: list[int] = []
        bounds: list[tuple[int, int]] = []
        stack = [(0, 0, q)]
        visited = 0
        while stack:
            d, node, s = stack.pop()
            span = self.children(d, node)
            if span is None:
                continue
            d1, lo, hi = span
            got = rows.get(s)
            if got is None:
                live = np.flatnonzero(dfa.trans[s])
                nxt = dfa.trans[s][live].tolist()
                got = rows[s] = (live.tolist(), nxt, dict(zip(live.tolist(), nxt)))
            live_bytes, nxt, by_byte = got
            level = self.byte[d1]
            if len(live_bytes) * 8 < hi - lo:
                pairs = []
                for b, s2 in zip(live_bytes, nxt):
                    c = bisect_left(level, b, lo, hi)
                    if c < hi and level[c] == b:
                        pairs.append((c, s2))
            else:
                pairs = [(c, by_byte[level[c]]) for c in range(lo, hi) if level[c] in by_byte]
            visited += len(pairs)
            if visited > max_nodes:
                return None
            tlo, thi, tt = self.term_lo[d1], self.term_hi[d1], self.term_tokens[d1]
            for c, s2 in pairs:
                toks.extend(tt[tlo[c]:thi[c]])
                if accepting[s2]:
                    bounds.append((d1, c))
                stack.append((d1, c, s2))
        inside = np.zeros(vocab_size, dtype=np.bool_)
        inside[toks] = True
        return inside, sorted(bounds)

    def dense_walk(self, dfa: ByteDFA, q: int, vocab_size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """`walk` level by level over the trie nodes still live, with numpy (whole-level gathers once
        most of a level is live)."""
        inside = np.zeros(vocab_size, dtype=np.bool_)
        bounds: list[tuple[int, int]] = []
        nodes = np.zeros(1, dtype=np.int64)  # the root
        st = np.asarray([q], dtype=np.int64)
        full: Optional[np.ndarray] = None  # every node's state at this level (dense mode), 0 = dead
        for d in range(1, self.depth + 1):
            n_level = len(self.byte_np[d])
            if full is not None or nodes.size * DENSE_WALK_RATIO > len(self.byte_np[d - 1]):
                # most of the level is live (inside a string): one gather over the level beats ranges
                if full is None:
                    full = np.zeros(len(self.byte_np[d - 1]), dtype=np.int64)
                    full[nodes] = st
                full = dfa.trans[full[self.parent[d]], self.byte_np[d]].astype(np.int64)
                if not full.any():
                    break
                inside[self.tok_np[d][full[self.tok_node[d]] > 0]] = True
                acc = dfa.accepting[full] & (full > 0)
                if acc.any():
                    bounds.extend((d, int(n)) for n in np.flatnonzero(acc))
                continue
            children, counts = _ranges(self.child_lo_np[d][nodes], self.child_hi_np[d][nodes])
            if children.size == 0 or n_level == 0:
                break
            nxt = dfa.trans[np.repeat(st, counts), self.byte_np[d][children]]
            live = nxt > 0
            nodes, st = children[live], nxt[live].astype(np.int64)
            if nodes.size == 0:
                break
            toks, _ = _ranges(self.term_lo_np[d][nodes], self.term_hi_np[d][nodes])
            inside[self.tok_np[d][toks]] = True
            acc = dfa.accepting[st]
            if acc.any():
                bounds.extend((d, int(n)) for n in nodes[acc])
        return inside, bounds


_TRIES: dict[str, _TrieLists] = {}
_TRIES_LOCK = threading.Lock()


def trie_lists(vocab: TokenVocab) -> _TrieLists:
    """The vocabulary's trie views, made once per vocabulary (not per grammar: converting them cost
    milliseconds per compile, and every copy's lists lengthened each garbage collection)."""
    with _TRIES_LOCK:
        got = _TRIES.get(vocab.fingerprint)
        if got is None:
            if len(_TRIES) >= 4:
                _TRIES.clear()
            got = _TRIES[vocab.fingerprint] = _TrieLists(vocab)
        return got


def _ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the concatenated index ranges lo[i]:hi[i], their lengths)."""
    counts = (hi - lo).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), counts
    ends = np.cumsum(counts)
    idx = np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts) + np.repeat(lo.astype(np.int64), counts)
    return idx, counts


class CFGIndex:
    """A compiled grammar bound to one vocabulary: shared by all requests, caches per-group trie walks."""

    def __init__(self, grammar: CompiledCFG, vocab: TokenVocab, source: str = "") -> None:
        self.g = grammar
        self.vocab = vocab
        self.source = source
        self.trie = trie_lists(vocab)
        self._walks: dict[tuple[int, int], GroupWalk] = {}
        self.max_steps = MAX_MASK_STEPS
        self.truncated_masks = 0  # masks that hit max_steps (reported by tests / benchmarks)
        self.last_steps = 0  # parser steps the latest mask took (diagnostics)
        self._lock = threading.Lock()
        # masks by parser-state signature (see `mask_key`), shared by every request on this grammar
        self._masks: "OrderedDict[tuple, tuple[np.ndarray, torch.Tensor]]" = OrderedDict()
        self._col_sigs: dict[tuple, int] = {}  # column signature -> its id
        self.generation = 0  # bumped when _col_sigs is cleared: ids of older generations mean nothing
        self.mask_hits = 0
        # tails of a scan group by its key in `mask_key` (terminal, walk state, items): a group recurs in
        # columns whose other groups differ (a property's value in several objects)
        self._tails: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._live: dict[tuple[int, int], frozenset[int]] = {}
        self.walks_computed = 0  # group walks this index computed itself (not found shared)
        self.tail_walks = 0  # groups whose tails the parser walked (not memoized)

    def column_id(self, chart: list[Waiting], ids: list[Optional[int]], pos: int) -> int:
        """The id of chart column `pos`'s signature: its waiting items as (rule, dot, id of the origin's
        column), an origin at `pos` itself written -1. Two columns with one id complete every item the
        same way, whatever their positions (ids[o] memoizes column o; filled oldest first, no recursion)."""
        got = ids[pos]
        if got is not None:
            return got
        stack = [pos]
        while stack:
            o = stack[-1]
            if ids[o] is not None:
                stack.pop()
                continue
            waiting = chart[o]
            missing = {o2 for items in waiting.values() for _, _, o2 in items if o2 != o and ids[o2] is None}
            if missing:
                stack.extend(missing)
                continue
            sig = tuple(sorted((x, tuple(sorted((r, d, -1 if o2 == o else ids[o2]) for r, d, o2 in items)))
                               for x, items in waiting.items()))
            with self._lock:
                got = self._col_sigs.get(sig)
                if got is None:
                    got = self._col_sigs[sig] = len(self._col_sigs)
            ids[o] = got
            stack.pop()
        return ids[pos]  # type: ignore[return-value]

    def group_keys(self, col: Column, chart: list[Waiting], ids: list[Optional[int]]) -> list[tuple]:
        """Per scan group of `col` (in `col.scans` order): the terminal, its DFA state (counted strings:
        the walk-equivalent one) and its items as (rule, dot, origin column id) -- equal for two groups
        that allow the same tokens."""
        depth = self.trie.depth
        out = []
        for (t, q), items in col.scans.items():
            sig = tuple(sorted((r, d, self.column_id(chart, ids, o)) for r, d, o in items))
            out.append((t, self.g.dfas[t].walk_state(q, depth), sig))
        return out

    def mask_key(self, col: Column, chart: list[Waiting], ids: list[Optional[int]],
                 group_keys: Optional[list[tuple]] = None) -> tuple:
        """A key equal for two parser states with the same mask: acceptance and the set of group keys."""
        gk = group_keys if group_keys is not None else self.group_keys(col, chart, ids)
        return (col.accepting, tuple(sorted(gk)))

    def cached_mask(self, key: tuple) -> Optional[tuple[np.ndarray, torch.Tensor]]:
        with self._lock:
            got = self._masks.get(key)
            if got is not None:
                self._masks.move_to_end(key)
                self.mask_hits += 1
            return got

    def remember_mask(self, key: tuple, mask: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Keep `mask` (made read-only: every request with this key shares it) with a tensor view of it
        for `fill_mask` (taken while still writable: torch warns on read-only arrays)."""
        got = (mask, torch.from_numpy(mask))
        mask.flags.writeable = False
        with self._lock:
            self._masks[key] = got
            while len(self._masks) > MASK_CACHE_ITEMS:
                self._masks.popitem(last=False)
            if len(self._col_sigs) > COLUMN_SIGS_MAX:  # ids restart: keys made with older ids are dropped
                self._col_sigs.clear()
                self._masks.clear()
                self._tails.clear()
                self.generation += 1
        return got

    def group_walk(self, t: int, q: int) -> "GroupWalk":
        """Terminal t's vocabulary split from DFA state q (see GroupWalk).

        Grammars that name their terminals' regexes (JSON schemas) share these walks process-wide: the
        same string / number / key terminals recur in every schema."""
        q = self.g.dfas[t].walk_state(q, self.trie.depth)  # counted strings: one walk for most counts
        key = (t, q)
        got = self._walks.get(key)
        if got is not None:
            return got
        shared = None
        if self.g.term_regexes is not None:
            shared = (self.vocab.fingerprint, self.g.term_regexes[t], q)
            got = _SHARED_WALKS.get(shared)
            if got is not None:
                self._walks[key] = got
                return got
        inside, bounds = self.trie.walk(self.g.dfas[t], q, self.vocab.size)
        got = GroupWalk(inside, TailNode(self.trie, bounds))
        with self._lock:
            self.walks_computed += 1
            self._walks[key] = got
            if shared is not None:
                if len(_SHARED_WALKS) > SHARED_WALKS_MAX:
                    _SHARED_WALKS.clear()
                _SHARED_WALKS[shared] = got
        return got

    def mask(self, col: Column, chart: list[Waiting], group_keys: Optional[Sequence[tuple]] = None) -> np.ndarray:
        """The exact mask of `col` (EOS aside): per scan group, the tokens inside its terminal
        (precomputed) and the tails that complete it mid-token, checked by the parser. `group_keys`
        (from `mask_key`, in `col.scans` order) memoize each group's tails across columns."""
        allowed = np.zeros(self.vocab.size, dtype=np.bool_)
        budget = [self.max_steps]  # per call (an index may serve several threads)
        for k, ((t, q), items) in enumerate(col.scans.items()):
            walk = self.group_walk(t, q)
            allowed |= walk.inside
            if not walk.tails.has_children:
                continue
            gkey = group_keys[k] if group_keys is not None else None
            toks = self._tails.get(gkey) if gkey is not None else None
            if toks is None:
                toks = self._group_tails(col, items, walk.tails, chart, budget)
                if gkey is not None and budget[0] >= 0:  # a truncated walk is not kept for other columns
                    with self._lock:
                        self._tails[gkey] = toks
                        if len(self._tails) > TAIL_MEMO_ITEMS:
                            self._tails.popitem(last=False)
            allowed[toks] = True
        self.last_steps = self.max_steps - budget[0]
        if budget[0] < 0:
            self.truncated_masks += 1
        return allowed

    def _group_tails(self, col: Column, items: set, tails: "TailNode", chart: list[Waiting],
                     budget: list[int]) -> np.ndarray:
        """Token ids whose bytes complete the group's terminal mid-token and go on viably: one Earley
        closure where the terminal ends (positions past the chart are scratch: any depth is the same
        parser state), then the group's tail trie walked byte by byte, pruned where the prefix dies."""
        self.tail_walks += 1
        seeds = [(r, d + 1, o) for r, d, o in items]
        extra: dict[int, Waiting] = {}
        c = closure(self.g, col.pos + 1, seeds, {}, _lookup(chart, extra))
        extra[c.pos] = c.waiting
        out: list[np.ndarray] = []
        self._walk_tails(c, tails, chart, extra, out, budget)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _walk_tails(self, col: Column, node: "TailNode", chart: list[Waiting], extra: dict[int, Waiting],
                    out: list[np.ndarray], budget: list[int]) -> None:
        """Step `col` by each byte of the tail trie `node` (those its scan groups can take only), marking
        the tokens that end at a live child and descending into live children."""
        g = self.g
        lookup = _lookup(chart, extra)
        for b in self._live_bytes(col):
            sub = node.child(b)
            if sub is None:
                continue
            budget[0] -= 1
            if budget[0] < 0:
                return  # out of budget: the rest of this subtree stays masked (sound, see module doc)
            c2 = step(g, col, b, lookup)
            if c2 is None:
                continue
            if sub.tokens.size:
                out.append(sub.tokens)
            if sub.has_children:
                extra[c2.pos] = c2.waiting
                self._walk_tails(c2, sub, chart, extra, out, budget)
                del extra[c2.pos]

    def _live_bytes(self, col: Column) -> list[int]:
        """The bytes some scan group of `col` can take, ascending (per (terminal, state), cached)."""
        live: set[int] = set()
        for key in col.scans:
            got = self._live.get(key)
            if got is None:
                row = self.g.trans[key[0]][key[1]]
                got = self._live[key] = frozenset(b for b in range(256) if row[b])
            live |= got
        return sorted(live)


class GroupWalk:
    """A scan group's vocabulary split, from its terminal's DFA state alone (no parser context):
    `inside`, bool [V], the tokens whose bytes stay inside the terminal (allowed whatever the parser
    stack is); `tails`, a trie of the token suffixes left where the terminal accepts mid-token, with the
    tokens ending at each node -- the only tokens whose fate depends on the parser. Every other token
    is rejected by the terminal's DFA."""

    __slots__ = ("inside", "tails")

    def __init__(self, inside: np.ndarray, tails: TailNode) -> None:
        self.inside, self.tails = inside, tails


class TailNode:
    """The token suffixes left after a terminal ends mid-token, as one trie over the vocabulary trie's
    nodes: a node stands for the trie positions reached by the same suffix bytes from every place the
    terminal accepts (`positions`), so a suffix such as `",` that recurs under a thousand string ends is
    stepped by the parser once. Children are found when first asked for (only bytes the parser can take
    are ever asked), and kept: the node is shared by every grammar using this terminal."""

    __slots__ = ("tr", "positions", "has_children", "_kids", "_tokens")

    def __init__(self, tr: _TrieLists, positions: list[tuple[int, int]]) -> None:
        self.tr = tr
        self.positions = positions
        self.has_children = any(d < tr.depth and tr.child_lo[d + 1][n] < tr.child_hi[d + 1][n] for d, n in positions)
        self._kids: dict[int, Optional[TailNode]] = {}
        self._tokens: Optional[np.ndarray] = None

    def child(self, b: int) -> "Optional[TailNode]":
        """The node after suffix byte `b` (None when no token goes on with it)."""
        if b in self._kids:
            return self._kids[b]
        tr, out = self.tr, []
        for d, n in self.positions:
            span = tr.children(d, n)
            if span is None:
                continue
            d1, lo, hi = span
            level = tr.byte[d1]
            c = bisect_left(level, b, lo, hi)
            if c < hi and level[c] == b:
                out.append((d1, c))
        got = TailNode(tr, out) if out else None
        self._kids[b] = got
        return got

    @property
    def tokens(self) -> np.ndarray:
        """The tokens whose last byte is this node's (ids, int64)."""
        if self._tokens is None:
            tr, toks = self.tr, []
            for d, n in self.positions:
                toks.extend(tr.term_tokens[d][tr.term_lo[d][n]:tr.term_hi[d][n]])
            self._tokens = np.asarray(sorted(set(toks)), dtype=np.int64)
        return self._tokens


def _lookup(chart: list[Waiting], extra: dict[int, Waiting]):
    n = len(chart)

    def lookup(o: int) -> Waiting:
        return chart[o] if o < n else extra[o]

    return lookup


_INDEX_CACHE: dict[tuple[str, str], CFGIndex] = {}
_CACHE_LOCK = threading.Lock()


def _compile_grammar(src: str) -> CompiledCFG:
    return schema_cfg(src) if is_schema_grammar(src) else compile_cfg(src)


def cfg_index(src: str, vocab: TokenVocab, disk: bool = True) -> CFGIndex:
    """The (memoized) CFGIndex of grammar text `src` (Lark / GBNF, or a JSON-schema grammar key from
    json_schema.json_schema_constraint) for `vocab`, compiled once per process and kept on disk
    (cfg_cache.py); raises GrammarError for a bad grammar."""
    key = (src, vocab.fingerprint)
    with _CACHE_LOCK:
        got = _INDEX_CACHE.get(key)
    if got is None:
        got = CFGIndex(cached_cfg(src, _compile_grammar, disk=disk), vocab, src)
        with _CACHE_LOCK:
            if len(_INDEX_CACHE) > 64:
                _INDEX_CACHE.clear()
            _INDEX_CACHE[key] = got
    return got


class CFGConstraintState:
    """Per-request cursor with ConstraintState's interface (fill_mask / advance / is_accepting /
    must_stop / jump_forward -> None / copy)."""

    def __init__(self, index: CFGIndex) -> None:
        self.index = index
        self.vocab = index.vocab
        self.rec = Recognizer(index.g)
        self.finished = False
        self._eos = frozenset(self.vocab.eos_token_ids)
        self._mask: Optional[np.ndarray] = None  # mask of the current position (reset on advance)
        self._mask_t: Optional[torch.Tensor] = None  # the same, as a tensor (fill_mask)
        self._col_ids: list[Optional[int]] = []  # CFGIndex.column_id of each chart column (lazy)
        self._generation = index.generation

    def allowed_mask(self) -> np.ndarray:
        """The allowed tokens here (EOS included when the text is complete); read-only, as the array may
        be shared with other requests in the same parser state."""
        if self._mask is None:
            col = self.rec.col
            if col is None:
                self._mask = np.zeros(self.vocab.size, dtype=np.bool_)
                self._mask_t = torch.from_numpy(self._mask)
                return self._mask
            index, chart = self.index, self.rec.chart
            if self._generation != index.generation:
                self._col_ids, self._generation = [], index.generation
            self._col_ids.extend([None] * (len(chart) - len(self._col_ids)))
            gk = index.group_keys(col, chart, self._col_ids)
            key = index.mask_key(col, chart, self._col_ids, gk)
            got = index.cached_mask(key)
            if got is None:
                m = index.mask(col, chart, gk)
                if self.rec.accepting:
                    m[list(self._eos)] = True
                got = index.remember_mask(key, m)
            self._mask, self._mask_t = got
        return self._mask

    def fill_mask(self, row: torch.Tensor) -> None:
        n = self.vocab.size
        if row.shape[0] < n:
            raise ValueError(f"mask row has {row.shape[0]} entries, the tokenizer has {n} tokens")
        if self.finished:
            row.fill_(False)
            return
        write_mask_row(row, self.allowed_mask(), self._mask_t)

    def allowed_token_ids(self) -> np.ndarray:
        return np.flatnonzero(self.allowed_mask())

    def is_allowed(self, token_id: int) -> bool:
        return not self.finished and 0 <= token_id < self.vocab.size and bool(self.allowed_mask()[token_id])

    def advance(self, token_id: int) -> None:
        token_id = int(token_id)
        if consume_eos(self, token_id, "grammar"):
            return
        data = self.vocab.token_bytes[token_id] if 0 <= token_id < self.vocab.size else b""
        col = self.rec.try_bytes(data) if data else None
        if col is None:
            raise ConstraintViolation(f"token {token_id} ({data!r}) is not allowed by the grammar here")
        self.rec.feed(data)
        self._mask = self._mask_t = None

    def is_accepting(self) -> bool:
        return self.rec.accepting

    def must_stop(self) -> bool:
        return self.finished or self.rec.col is None or (self.rec.accepting and not self.rec.col.scans)

    def jump_forward(self, output_ids: Sequence[int], tokenizer: Any, window: int = 6,
                     min_bytes: int = 1) -> None:
        return None

    def apply_jump_forward(self, jf: Any) -> None:  # never offered a jump
        raise ConstraintViolation("grammar constraints do not jump forward")
