"""Regex → minimal byte-level DFA (UTF-8), the base automaton of every constraint.

Python's own regex parser (`re._parser`) reads the pattern, so syntax errors carry the exact position.
The parse tree becomes a Thompson NFA over bytes (every code-point set is expanded into UTF-8 byte-range
sequences), then a DFA by subset construction over byte equivalence classes, then it is trimmed to the
states that can still reach acceptance and minimized (Moore refinement, vectorized with numpy).

Semantics are those of `re.fullmatch(pattern, text, re.ASCII)`: `\\w \\d \\s` are ASCII classes (as in
interegular, outlines and xgrammar), while `.` and negated classes cover all of Unicode (no surrogates).
`.` excludes "\\n" unless the DOTALL flag is set. Unsupported (not regular, or not worth it): back
references, look-arounds, `\\b`, conditional groups, IGNORECASE; each is reported with its position.

DFA layout: state 0 is the dead state (every transition of row 0 goes to 0); `trans[s, byte]` is the
next state; `accepting[s]` marks final states; `start` is the initial state.
"""
from __future__ import annotations

import functools
import re
import re._constants as C  # noqa: N812 - the parser's opcode names
import re._parser as sre_parse
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sglang.runtime.constrained.budget import CompileBudget, active_budget
from sglang.runtime.constrained.errors import EmptyLanguageError, RegexSyntaxError

MAX_CP = 0x10FFFF
_OK_FLAGS = int(re.ASCII | re.UNICODE | re.VERBOSE | re.DOTALL)  # ints: enum arithmetic is slow
_DOTALL = int(re.DOTALL)
MAX_NFA_STATES = 400_000  # a bigger pattern is refused rather than exhausting memory
MAX_DFA_STATES = 50_000  # subset construction can blow up exponentially: refuse instead of hanging
# estimated CPython bytes per structure, charged to the compile's budget (budget.py) before it is built
_NFA_STATE_BYTES = 200  # two lists and their slots
_SET_ITEM_BYTES = 40  # one member of a frozenset (hash slot + load factor), closures and DFA subsets
_MOVE_BYTES = 80  # one (class, target) tuple

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive code-point ranges

_DIGIT: Ranges = [(48, 57)]
_WORD: Ranges = [(48, 57), (65, 90), (95, 95), (97, 122)]
_SPACE: Ranges = [(9, 13), (32, 32)]


def _normalize(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    nxt = 0
    for lo, hi in _normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CP:
        out.append((nxt, MAX_CP))
    return out


def _without_surrogates(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in ranges:
        if hi < 0xD800 or lo > 0xDFFF:
            out.append((lo, hi))
            continue
        if lo < 0xD800:
            out.append((lo, 0xD7FF))
        if hi > 0xDFFF:
            out.append((0xE000, hi))
    return out


def utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """Split the code-point range [lo, hi] into byte-range sequences: every code point in the range is
    encoded by exactly one sequence, each byte position spanning a contiguous byte range."""
    out: list[list[tuple[int, int]]] = []
    stack = [(lo, hi)]
    while stack:
        a, b = stack.pop()
        if a > b:
            continue
        split = False
        for bound in (0x7F, 0x7FF, 0xFFFF):  # never mix encodings of different lengths
            if a <= bound < b:
                stack += [(a, bound), (bound + 1, b)]
                split = True
                break
        if split:
            continue
        if b <= 0x7F:
            out.append([(a, b)])
            continue
        n = len(chr(a).encode("utf-8", "surrogatepass"))
        for i in range(1, n):
            m = (1 << (6 * i)) - 1
            if a & ~m != b & ~m:
                if a & m:
                    stack += [(a, a | m), ((a | m) + 1, b)]
                    split = True
                    break
                if b & m != m:
                    stack += [(a, (b & ~m) - 1), (b & ~m, b)]
                    split = True
                    break
        if split:
            continue
        ea = chr(a).encode("utf-8", "surrogatepass")
        eb = chr(b).encode("utf-8", "surrogatepass")
        out.append([(ea[i], eb[i]) for i in range(n)])
    return out


class _NFA:
    """Thompson NFA over bytes: `edges[s]` = [(lo, hi, target)], `eps[s]` = [target]."""

    def __init__(self, pattern: str, budget: CompileBudget) -> None:
        self.pattern = pattern
        self.budget = budget
        self.edges: list[list[tuple[int, int, int]]] = []
        self.eps: list[list[int]] = []

    def new(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise RegexSyntaxError(self.pattern, f"pattern too large (more than {MAX_NFA_STATES} automaton "
                                   "states; reduce repetition counts)")
        self.budget.charge(_NFA_STATE_BYTES, self.pattern)
        self.edges.append([])
        self.eps.append([])
        return len(self.eps) - 1

    def charset(self, ranges: Ranges) -> tuple[int, int]:
        start, end = self.new(), self.new()
        trie: dict[tuple, int] = {}
        for seq in _sequences(tuple(ranges)):
            node = start
            for i, (blo, bhi) in enumerate(seq):
                if i == len(seq) - 1:
                    self.edges[node].append((blo, bhi, end))
                    break
                key = tuple(seq[: i + 1])
                nxt = trie.get(key)
                if nxt is None:
                    nxt = trie[key] = self.new()
                    self.edges[node].append((blo, bhi, nxt))
                node = nxt
        return start, end


@functools.lru_cache(maxsize=4096)
def _sequences(ranges: tuple) -> list[list[tuple[int, int]]]:
    out: list[list[tuple[int, int]]] = []
    for lo, hi in _without_surrogates(_normalize(list(ranges))):
        out += utf8_sequences(lo, hi)
    return out


def _find_pos(pattern: str, regex: str) -> Optional[int]:
    """Position of the first unescaped occurrence of a construct (the parser keeps no positions)."""
    i = 0
    rx = re.compile(regex)
    while i < len(pattern):
        if rx.match(pattern, i):
            return i
        i += 2 if pattern[i] == "\\" else 1
    return None


class _Builder:
    def __init__(self, pattern: str, dotall: bool, budget: CompileBudget) -> None:
        self.pattern = pattern
        self.nfa = _NFA(pattern, budget)
        self.dotall = dotall

    def unsupported(self, what: str, regex: str) -> RegexSyntaxError:
        return RegexSyntaxError(self.pattern, f"unsupported construct: {what}", _find_pos(self.pattern, regex))

    def seq(self, items: list, top: bool = False) -> tuple[int, int]:
        start = cur = self.nfa.new()
        n = len(items)
        for i, (op, av) in enumerate(items):
            if op is C.AT:
                first, last = top and i == 0, top and i == n - 1
                if av in (C.AT_BEGINNING, C.AT_BEGINNING_STRING) and first:
                    continue
                if av in (C.AT_END, C.AT_END_STRING) and last:
                    continue
                if av in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
                    raise self.unsupported("word boundary \\b / \\B", r"\\[bB]")
                raise self.unsupported("anchor (^ $ \\A \\Z) not at the start/end of the pattern", r"\^|\$|\\[AZ]")
            s, e = self.item(op, av)
            self.nfa.eps[cur].append(s)
            cur = e
        return start, cur

    def item(self, op, av) -> tuple[int, int]:
        if op is C.LITERAL:
            return self.nfa.charset([(av, av)])
        if op is C.NOT_LITERAL:
            return self.nfa.charset(_complement([(av, av)]))
        if op is C.ANY:
            return self.nfa.charset([(0, MAX_CP)] if self.dotall else _complement([(10, 10)]))
        if op is C.IN:
            return self.nfa.charset(self.char_class(av))
        if op is C.BRANCH:
            start, end = self.nfa.new(), self.nfa.new()
            for alt in av[1]:
                s, e = self.seq(list(alt))
                self.nfa.eps[start].append(s)
                self.nfa.eps[e].append(end)
            return start, end
        if op is C.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags & ~_OK_FLAGS:
                raise self.unsupported("inline flags other than a, u, x, s", r"\(\?[a-zA-Z-]+[:)]")
            old = self.dotall
            self.dotall = (old or bool(add_flags & _DOTALL)) and not del_flags & _DOTALL
            try:
                return self.seq(list(sub))
            finally:
                self.dotall = old
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            return self.repeat(lo, None if hi is C.MAXREPEAT else hi, list(sub))
        if op is C.ATOMIC_GROUP:
            return self.seq(list(av))  # (?>...) matches the same set of whole strings
        if op in (C.GROUPREF, C.GROUPREF_EXISTS):
            raise self.unsupported("back reference / conditional group", r"\\[1-9]|\(\?P=|\(\?\(")
        if op in (C.ASSERT, C.ASSERT_NOT):
            raise self.unsupported("look-ahead / look-behind", r"\(\?<?[=!]")
        raise RegexSyntaxError(self.pattern, f"unsupported construct {op}")

    def char_class(self, items: list) -> Ranges:
        ranges: Ranges = []
        negate = False
        for op, av in items:
            if op is C.NEGATE:
                negate = True
            elif op is C.LITERAL:
                ranges.append((av, av))
            elif op is C.RANGE:
                ranges.append(av)
            elif op is C.CATEGORY:
                ranges += _category(av)
            else:
                raise RegexSyntaxError(self.pattern, f"unsupported item {op} in character class")
        return _complement(ranges) if negate else _normalize(ranges)

    def repeat(self, lo: int, hi: Optional[int], sub: list) -> tuple[int, int]:
        start = cur = self.nfa.new()
        for _ in range(lo):
            s, e = self.seq(sub)
            self.nfa.eps[cur].append(s)
            cur = e
        if hi is None:  # star: loop back
            s, e = self.seq(sub)
            self.nfa.eps[cur].append(s)
            self.nfa.eps[e].append(s)
            end = self.nfa.new()
            self.nfa.eps[cur].append(end)
            self.nfa.eps[e].append(end)
            return start, end
        end = self.nfa.new()
        for _ in range(hi - lo):
            self.nfa.eps[cur].append(end)
            s, e = self.seq(sub)
            self.nfa.eps[cur].append(s)
            cur = e
        self.nfa.eps[cur].append(end)
        return start, end


def _category(cat) -> Ranges:
    table = {
        C.CATEGORY_DIGIT: _DIGIT, C.CATEGORY_NOT_DIGIT: _complement(_DIGIT),
        C.CATEGORY_WORD: _WORD, C.CATEGORY_NOT_WORD: _complement(_WORD),
        C.CATEGORY_SPACE: _SPACE, C.CATEGORY_NOT_SPACE: _complement(_SPACE),
    }
    if cat not in table:
        raise ValueError(f"unsupported character category {cat}")
    return table[cat]


def walk_bytes(trans: np.ndarray, state: int, data: bytes) -> int:
    """The state a byte transition table [S, 256] reaches from `state` over `data` (0: dead)."""
    for b in data:
        state = int(trans[state, b])
        if state == 0:
            return 0
    return state


@dataclass
class ByteDFA:
    """Minimal byte-level DFA. State 0 is dead; `trans[s, b]` next state; `accepting[s]` final."""

    trans: np.ndarray  # int32 [S, 256]
    accepting: np.ndarray  # bool [S]
    start: int
    # (first state, block width, lo, hi) of a counted automaton (json_lexical.bounded_string_dfa): the
    # states first + c * width + j (j < width) have read c units of lo..hi; see `walk_state`
    count_blocks: Optional[tuple[int, int, int, int]] = None

    def walk_state(self, state: int, max_bytes: int) -> int:
        """A state whose every walk of at most `max_bytes` bytes behaves as `state`'s (same live paths,
        same acceptances): in a counted automaton, every count from lo up to hi - max_bytes does (a
        token cannot reach the bound from there), so token walks from those states are computed once."""
        if self.count_blocks is None:
            return state
        first, width, lo, hi = self.count_blocks
        c, j = divmod(state - first, width)
        if state < first or not lo < c <= hi - max_bytes:
            return state
        return first + lo * width + j

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    def walk(self, state: int, data: bytes) -> int:
        return walk_bytes(self.trans, state, data)

    def fullmatch(self, data: bytes) -> bool:
        return bool(self.accepting[self.walk(self.start, data)])


def parse_regex(pattern: str):
    """Python's parse tree of `pattern`; syntax errors become RegexSyntaxError with the position."""
    if not isinstance(pattern, str):
        raise RegexSyntaxError(repr(pattern), f"pattern must be a str, got {type(pattern).__name__}")
    try:
        tree = sre_parse.parse(pattern, 0)
    except re.error as exc:
        raise RegexSyntaxError(pattern, exc.msg, exc.pos) from None
    except (RecursionError, OverflowError) as exc:
        raise RegexSyntaxError(pattern, f"pattern too deeply nested or too large ({exc})") from None
    return tree


def regex_to_dfa(pattern: str, minimize: bool = True) -> ByteDFA:
    """Compile `pattern` into a trimmed, minimal ByteDFA; an empty language raises EmptyLanguageError.
    `minimize=False` skips the minimization (the grammar engine's lexical automata are walked lazily, so
    a few redundant states cost less than minimizing them)."""
    tree = parse_regex(pattern)
    flags = tree.state.flags
    if flags & re.IGNORECASE:
        raise RegexSyntaxError(pattern, "unsupported flag: IGNORECASE", _find_pos(pattern, r"\(\?[a-zA-Z]*i"))
    budget = active_budget()
    builder = _Builder(pattern, dotall=bool(flags & re.DOTALL), budget=budget)
    nfa_start, nfa_end = builder.seq(list(tree), top=True)
    trans, accepting, class_of = _determinize(builder.nfa, nfa_start, nfa_end, budget)
    trans, accepting, start = _trim(trans, accepting, 1)
    if start == 0:
        raise EmptyLanguageError(f"regex {pattern!r} matches no string (its language is empty)")
    if minimize:
        trans, accepting, start = _minimize(trans, accepting, start)
    return ByteDFA(trans=np.ascontiguousarray(trans[:, class_of]), accepting=accepting, start=start)


def trim_dfa(dfa: ByteDFA) -> ByteDFA:
    """`dfa` keeping only states reachable from the start that can still reach acceptance (the others
    become the dead state 0), for automata built directly rather than by `regex_to_dfa`."""
    trans, accepting, start = _trim(dfa.trans, dfa.accepting, dfa.start)
    return ByteDFA(trans=np.ascontiguousarray(trans), accepting=accepting, start=start)


def literal_then(prefix: bytes, tail: ByteDFA) -> ByteDFA:
    """The DFA of the literal bytes `prefix` followed by `tail`'s language, built directly: a chain of
    states glued onto a copy of `tail` (microseconds, where the regex compiler takes milliseconds).
    Trimmed when `tail` is (every chain state leads on to the tail's start)."""
    n, m = len(prefix), tail.num_states
    trans = np.zeros((n + m, 256), dtype=np.int32)
    # states: 0 dead; 1..n the chain (i + 1 = i prefix bytes read); n + s the tail's state s >= 1
    tail_rows = tail.trans[1:]
    trans[n + 1:] = np.where(tail_rows > 0, tail_rows + n, 0)
    for i, b in enumerate(prefix):
        trans[i + 1, b] = i + 2 if i + 1 < n else n + tail.start
    accepting = np.zeros(n + m, dtype=bool)
    accepting[n + 1:] = tail.accepting[1:]
    return ByteDFA(trans=trans, accepting=accepting, start=1 if n else tail.start)


def _determinize(nfa: _NFA, start: int, end: int, budget: CompileBudget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subset construction; returns (trans [S, n_classes], accepting [S], class_of [256]), start = 1.
    Every closure, subset and row is charged to `budget` as it is built: their total, not the number of
    DFA states, is what grows without bound on nested counted repetitions."""
    # byte equivalence classes: bytes no edge range separates behave identically
    cuts = np.zeros(257, dtype=bool)
    cuts[0] = True
    for edges in nfa.edges:
        for lo, hi, _ in edges:
            cuts[lo] = True
            cuts[hi + 1] = True
    class_of = np.cumsum(cuts[:256]) - 1
    n_classes = int(class_of[-1]) + 1

    closure_cache: dict[int, frozenset] = {}

    def closure(s: int) -> frozenset:
        got = closure_cache.get(s)
        if got is None:
            seen = {s}
            stack = [s]
            while stack:
                for t in nfa.eps[stack.pop()]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            budget.charge(_SET_ITEM_BYTES * len(seen), nfa.pattern)
            got = closure_cache[s] = frozenset(seen)
        return got

    by_class: dict[int, list[tuple[int, int]]] = {}  # nfa state -> [(class, target)]

    def moves(s: int) -> list[tuple[int, int]]:
        got = by_class.get(s)
        if got is None:
            got = []
            for lo, hi, t in nfa.edges[s]:
                for c in range(int(class_of[lo]), int(class_of[hi]) + 1):
                    got.append((c, t))
            budget.charge(_MOVE_BYTES * len(got), nfa.pattern)
            by_class[s] = got
        return got

    ids: dict[frozenset, int] = {}
    step_cache: dict[frozenset, frozenset] = {}  # NFA targets -> their epsilon closure
    rows: list[list[int]] = [[0] * n_classes]  # dead state 0
    acc: list[bool] = [False]
    first = closure(start)
    ids[first] = 1
    rows.append([0] * n_classes)
    acc.append(end in first)
    queue = [first]
    while queue:
        cur = queue.pop()
        sid = ids[cur]
        targets: dict[int, set] = {}
        for s in cur:
            for c, t in moves(s):
                targets.setdefault(c, set()).add(t)
        row = rows[sid]
        for c, ts in targets.items():
            fts = frozenset(ts)
            key = step_cache.get(fts)
            if key is None:  # many classes (and states) move to the same NFA targets: close them once
                nxt: set = set()
                for t in ts:
                    nxt |= closure(t)
                budget.charge(_SET_ITEM_BYTES * (len(nxt) + len(fts)), nfa.pattern)
                key = step_cache[fts] = frozenset(nxt)
            tid = ids.get(key)
            if tid is None:
                if len(rows) >= MAX_DFA_STATES:
                    raise RegexSyntaxError(nfa.pattern, f"pattern too large: its automaton exceeds {MAX_DFA_STATES} "
                                           "states (e.g. a long counted repetition after an alternation)")
                budget.charge(8 * n_classes + 64, nfa.pattern)
                tid = ids[key] = len(rows)
                rows.append([0] * n_classes)
                acc.append(end in key)
                queue.append(key)
            row[c] = tid
    return np.asarray(rows, dtype=np.int32), np.asarray(acc, dtype=bool), class_of


def _trim(trans: np.ndarray, accepting: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Keep states reachable from start that can reach an accepting state; the rest become state 0."""
    n = trans.shape[0]
    # successor sets in plain Python: per-state numpy calls dominate for the small tables of terminals
    succ = [set(row) for row in trans.tolist()]
    preds: list[list[int]] = [[] for _ in range(n)]
    for s_, ts in enumerate(succ):
        for t in ts:
            preds[t].append(s_)
    live = np.zeros(n, dtype=bool)
    stack = [int(s) for s in np.flatnonzero(accepting) if s != 0]
    live[stack] = True
    live_l = live.tolist()
    while stack:  # backwards search from the accepting states
        t = stack.pop()
        for s_ in preds[t]:
            if not live_l[s_]:
                live_l[s_] = True
                stack.append(s_)
    live_l[0] = False
    reach_l = [False] * n
    if live_l[start]:
        reach_l[start] = True
        stack = [start]
        while stack:
            s_ = stack.pop()
            for t in succ[s_]:
                if live_l[t] and not reach_l[t]:
                    reach_l[t] = True
                    stack.append(t)
    reach = np.asarray(reach_l, dtype=bool)
    keep = np.flatnonzero(reach)
    if keep.size == 0:
        return np.zeros((1, trans.shape[1]), np.int32), np.zeros(1, bool), 0
    remap = np.zeros(n, dtype=np.int32)
    remap[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    new_trans = np.zeros((keep.size + 1, trans.shape[1]), dtype=np.int32)
    new_trans[1:] = remap[trans[keep]]
    new_acc = np.zeros(keep.size + 1, dtype=bool)
    new_acc[1:] = accepting[keep]
    return new_trans, new_acc, int(remap[start])


def _minimize(trans: np.ndarray, accepting: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Moore partition refinement; the dead state keeps block 0.

    Each round hashes a state's (block, successor blocks) row with random 64-bit weights, so a round is a
    few vectorized passes; the final partition is checked exactly and refined further on a collision."""
    n, k = trans.shape
    rng = np.random.default_rng(0x5EED)
    weights = rng.integers(1, 2**63 - 1, size=k + 1, dtype=np.int64) | 1
    block = accepting.astype(np.int64) + 1
    block[0] = 0
    _, block = np.unique(block, return_inverse=True)  # compact ids: some class may be empty
    block = block.reshape(-1).astype(np.int64)
    n_blocks = int(block.max()) + 1
    exact = False
    while True:
        rows = np.concatenate([block[:, None], block[trans]], axis=1)
        if exact:
            _, new_block = np.unique(rows, axis=0, return_inverse=True)
        else:
            with np.errstate(over="ignore"):
                sig = (rows * weights).sum(axis=1)
            _, new_block = np.unique(sig, return_inverse=True)
        new_block = new_block.reshape(-1).astype(np.int64)
        new_n = int(new_block.max()) + 1
        if new_n == n_blocks:
            if exact:
                break
            exact = True  # confirm the fixpoint without hashing
            continue
        block, n_blocks = new_block, new_n
    # renumber: the dead state's block is 0, the others in order of their first state
    first = np.full(n_blocks, n, dtype=np.int64)
    np.minimum.at(first, block, np.arange(n))
    order = np.argsort(first, kind="stable")
    rank = np.empty(n_blocks, dtype=np.int64)
    rank[order] = np.arange(n_blocks)
    blk = rank[block]
    reps = np.sort(first)
    new_trans = blk[trans[reps]].astype(np.int32)
    new_acc = accepting[reps].copy()
    new_acc[0] = False
    return new_trans, new_acc, int(blk[start])
