"""Exact context-free grammar recognizer over bytes: an Earley parser whose terminals are byte DFAs.

Used for grammars that are not regular (nesting recursion, which grammar.py can only unroll to a fixed
depth). Lark parses the grammar text (Lark or GBNF, via lark_source.load_grammar); every terminal is compiled with
regex_fsm into a ByteDFA; rules become plain BNF. `%ignore` terminals are allowed before every terminal
and at the end (an implicit rule `IGN: | IGNORED`, IGNORED matching any run of them).

Parsing is Earley with the lexer folded in: an item waiting on terminal T sits in a *scan group*
(T, dfa state) of the current column; each byte moves every group's DFA; a group whose DFA accepts
completes T there (so tokens of any length are tried, as lark's `dynamic_complete` lexer does, which is
exactly the grammar's language). Nullable symbols use the Aycock-Horspool prediction trick.
Columns are immutable once built; positions index a chart of "items waiting on nonterminal X" dicts.
Every item in a column is viable because unproductive rules are removed at compile time, so a column
with a live scan group (or the completed start item) proves the consumed bytes are a viable prefix.
"""
from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Callable, Iterator, Optional, Sequence

from sglang.runtime.constrained.errors import ConstraintError, GrammarError
from sglang.runtime.constrained.lark_source import load_grammar, terminal_regex
from sglang.runtime.constrained.regex_fsm import ByteDFA, regex_to_dfa

Item = tuple[int, int, int]  # (rule id, dot, origin position)
Waiting = dict[int, list[Item]]  # nonterminal -> items whose next symbol is it


@dataclass(frozen=True)
class CompiledCFG:
    """Rules over symbols: nonterminal ids >= 0, terminal t written as ~t (< 0)."""

    lhs: tuple[int, ...]
    rhs: tuple[tuple[int, ...], ...]
    by_lhs: tuple[tuple[int, ...], ...]
    nullable: frozenset[int]  # nonterminals and terminals (~t) deriving the empty string
    start_rule: int  # S' -> start [IGN]
    nt_names: tuple[str, ...]
    term_names: tuple[str, ...]
    dfas: "tuple[ByteDFA, ...] | LazyDFAs"  # a JSON schema's are compiled when first scanned
    trans: "LazyTables"  # python copies of the DFA tables (fast scalar lookups), made on first use
    accepting: "LazyTables"
    term_regexes: Optional[tuple[str, ...]] = None  # when set, keys token walks shared across grammars


def compile_cfg(src: str, start: str = "start") -> CompiledCFG:
    """Compile Lark/GBNF text; bad grammars raise GrammarError (lark's message has the position)."""
    parser = load_grammar(src, start)
    term_names: list[str] = []
    dfas: list[ByteDFA] = []
    tid: dict[str, int] = {}
    for t in parser.terminals:
        rx = terminal_regex(t)
        try:
            dfa = regex_to_dfa(rx)
        except ConstraintError as exc:
            raise GrammarError(f"terminal {t.name}: {exc}") from None
        tid[t.name] = len(dfas)
        term_names.append(t.name)
        dfas.append(dfa)
    nt: dict[str, int] = {}

    def nid(name: str) -> int:
        return nt.setdefault(name, len(nt))

    raw: list[tuple[int, list[int]]] = []
    ign_rx = [f"({terminal_regex(t)})" for t in parser.terminals if t.name in set(getattr(parser, "ignore_tokens", []))]
    ign: list[int] = []
    if ign_rx:  # one terminal for any run of ignored text, so `IGN` never splits a run two ways
        term_names.append("__IGNORED")
        dfas.append(regex_to_dfa(f"({'|'.join(ign_rx)})+"))
        ign = [len(dfas) - 1]
    ign_nt = nid("__IGN") if ign else -1
    for r in parser.rules:
        body: list[int] = []
        for s in r.expansion:
            if s.is_term:
                if s.name not in tid:
                    raise GrammarError(f"terminal {s.name!r} is used but not defined")
                if ign:
                    body.append(ign_nt)
                body.append(~tid[s.name])
            else:
                body.append(nid(s.name))
        raw.append((nid(r.origin.name), body))
    if start not in nt:
        raise GrammarError(f"grammar has no rule {start!r}")
    if ign:
        raw.append((ign_nt, []))
        raw.append((ign_nt, [~ign[0]]))
    names = [""] * len(nt)
    for k, v in nt.items():
        names[v] = k
    return build_cfg(raw, names, term_names, dfas, [nt[start]] + ([ign_nt] if ign else []), start_name=start)


def build_cfg(raw: list[tuple[int, list[int]]], nt_names: list[str], term_names: list[str], dfas: list[ByteDFA],
              start_body: list[int], start_name: str = "start",
              term_regexes: Optional[list[str]] = None) -> CompiledCFG:
    """A CompiledCFG from BNF rules (lhs nonterminal id, body of symbols: ids >= 0, terminals ~t) and the
    terminals' DFAs; `start_body` is the right-hand side of the added start rule. Unproductive rules are
    dropped so every Earley item can still complete (GrammarError when the start derives nothing)."""
    names = list(nt_names) + ["__START"]
    s_prime = len(names) - 1
    raw = list(raw) + [(s_prime, list(start_body))]
    defined = {l for l, _ in raw}
    for _, body in raw:
        for s in body:
            if s >= 0 and s not in defined:
                raise GrammarError(f"rule {names[s]!r} is used but not defined")
    # keep productive rules only, so every Earley item can still be completed
    productive: set[int] = set()
    changed = True
    while changed:
        changed = False
        for l, body in raw:
            if l not in productive and all(s < 0 or s in productive for s in body):
                productive.add(l)
                changed = True
    if s_prime not in productive:
        raise GrammarError(f"rule {start_name!r} derives no finite string (every alternative recurses forever)")
    raw = [(l, b) for l, b in raw if all(s < 0 or s in productive for s in b)]
    nullable: set[int] = {~i for i in range(len(dfas)) if _nullable_terminal(dfas, i)}
    changed = True
    while changed:
        changed = False
        for l, body in raw:
            if l not in nullable and all(s in nullable for s in body):
                nullable.add(l)
                changed = True
    by_lhs: list[list[int]] = [[] for _ in names]
    for i, (l, _) in enumerate(raw):
        by_lhs[l].append(i)
    return CompiledCFG(lhs=tuple(l for l, _ in raw), rhs=tuple(tuple(b) for _, b in raw),
                       by_lhs=tuple(tuple(x) for x in by_lhs), nullable=frozenset(nullable),
                       start_rule=next(i for i, (l, _) in enumerate(raw) if l == s_prime),
                       nt_names=tuple(names), term_names=tuple(term_names),
                       dfas=dfas if isinstance(dfas, LazyDFAs) else tuple(dfas),
                       trans=LazyTables(dfas, 0), accepting=LazyTables(dfas, 1),
                       term_regexes=tuple(term_regexes) if term_regexes is not None else None)


_TABLE_CACHE: dict[int, tuple[ByteDFA, list[tuple[int, ...]], list[bool]]] = {}
LAZY_ROWS_OVER = 256  # DFAs with more states (counted strings: thousands) convert their rows one by one


class _RowLists:
    """`rows[q][byte]` of a large table, each row converted to a list when first read (a walk inside a
    counted string reads a handful of its thousands of rows)."""

    __slots__ = ("trans", "rows")

    def __init__(self, trans) -> None:
        self.trans = trans
        self.rows: dict[int, tuple[int, ...]] = {}

    def __getitem__(self, q: int) -> tuple[int, ...]:
        got = self.rows.get(q)
        if got is None:
            got = self.rows[q] = tuple(self.trans[q].tolist())
        return got


class LazyDFAs:
    """Terminal automata compiled on first use (`dfas[t]`), from their regexes with `compile_fn`.

    Why: a large schema has hundreds of terminals (enums, patterns, formats) and one request reaches a
    few of them; compiling each when the parser first predicts it keeps a cold compile to the
    structure plus the terminals of the first position. `known` holds those given up front (built
    directly, or loaded from the disk cache). Nullability is read off the regex (Python's `re`)
    without compiling the automaton."""

    def __init__(self, regexes: Sequence[str], compile_fn: Callable[[str], ByteDFA],
                 known: Optional[dict[int, ByteDFA]] = None) -> None:
        self.regexes = tuple(regexes)
        self.compile_fn = compile_fn
        self.known: dict[int, ByteDFA] = dict(known or {})

    def __getitem__(self, t: int) -> ByteDFA:
        got = self.known.get(t)
        if got is None:  # two threads may both compile it: the same automaton, either one is kept
            got = self.known[t] = self.compile_fn(self.regexes[t])
        return got

    def __len__(self) -> int:
        return len(self.regexes)

    def __iter__(self) -> Iterator[ByteDFA]:
        return (self[t] for t in range(len(self.regexes)))

    def nullable(self, t: int) -> bool:
        d = self.known.get(t)
        if d is not None:
            return bool(d.accepting[d.start])
        return re.fullmatch(self.regexes[t], "") is not None


def _nullable_terminal(dfas: "Sequence[ByteDFA] | LazyDFAs", t: int) -> bool:
    if isinstance(dfas, LazyDFAs):
        return dfas.nullable(t)
    d = dfas[t]
    return bool(d.accepting[d.start])


class LazyTables:
    """`tables[t]`: terminal t's transition rows (which=0) or accepting flags (which=1) as Python lists,
    converted when the parser first scans t. A large schema has hundreds of terminals and a request
    touches few of them: converting them all up front cost more than compiling the grammar."""

    __slots__ = ("dfas", "which", "lists")

    def __init__(self, dfas: "Sequence[ByteDFA]", which: int) -> None:
        self.dfas, self.which = dfas, which
        self.lists: list[Optional[list]] = [None] * len(self.dfas)

    def __getitem__(self, t: int) -> list:
        got = self.lists[t]
        if got is None:
            d = self.dfas[t]
            if d.num_states > LAZY_ROWS_OVER:
                got = _RowLists(d.trans) if self.which == 0 else d.accepting.tolist()
            else:
                got = _tables(d)[self.which]
            self.lists[t] = got
        return got

    def __len__(self) -> int:
        return len(self.dfas)


def _tables(dfa: ByteDFA) -> tuple[list[tuple[int, ...]], list[bool]]:
    """Python-list copies of a DFA's tables, made once per DFA object (terminal DFAs are shared across
    grammars, see schema_ir.terminal_dfa). The entry keeps the DFA alive so its id is never reused."""
    got = _TABLE_CACHE.get(id(dfa))
    if got is None or got[0] is not dfa:
        if len(_TABLE_CACHE) > 16384:
            _TABLE_CACHE.clear()
        # rows as tuples: the collector stops tracking tuples of ints, where thousands of row lists
        # made every full collection walk them (hundreds of ms per compile late in a process)
        got = _TABLE_CACHE[id(dfa)] = (dfa, [tuple(r) for r in dfa.trans.tolist()], dfa.accepting.tolist())
    return got[1], got[2]


class Column:
    """Earley set at one byte position: waiting items (for completion), scan groups, and acceptance."""

    __slots__ = ("pos", "waiting", "scans", "accepting")

    def __init__(self, pos: int, waiting: Waiting, scans: dict[tuple[int, int], set[Item]], accepting: bool) -> None:
        self.pos = pos
        self.waiting = waiting
        self.scans = scans
        self.accepting = accepting

    @property
    def alive(self) -> bool:
        return bool(self.scans) or self.accepting


def closure(g: CompiledCFG, pos: int, seeds: list[Item], scans: dict[tuple[int, int], set[Item]],
            lookup: Callable[[int], Waiting]) -> Column:
    """Predict/complete from `seeds` at `pos`; `scans` (carried groups) is extended in place."""
    waiting: Waiting = {}
    seen: set[Item] = set()
    predicted: set[int] = set()
    accepting = False
    agenda = list(seeds)
    lhs, rhs, nullable, by_lhs = g.lhs, g.rhs, g.nullable, g.by_lhs
    while agenda:
        it = agenda.pop()
        if it in seen:
            continue
        seen.add(it)
        r, d, o = it
        body = rhs[r]
        if d == len(body):
            if r == g.start_rule and o == 0:
                accepting = True
            src = waiting if o == pos else lookup(o)
            for r2, d2, o2 in src.get(lhs[r], ()):
                agenda.append((r2, d2 + 1, o2))
            continue
        x = body[d]
        if x < 0:
            t = ~x
            key = (t, g.dfas[t].start)
            grp = scans.get(key)
            if grp is None:
                scans[key] = {it}
            else:
                grp.add(it)
        else:
            waiting.setdefault(x, []).append(it)
            if x not in predicted:
                predicted.add(x)
                agenda.extend((r2, 0, pos) for r2 in by_lhs[x])
        if x in nullable:
            agenda.append((r, d + 1, o))
    return Column(pos, waiting, scans, accepting)


def step(g: CompiledCFG, col: Column, byte: int, lookup: Callable[[int], Waiting]) -> Optional[Column]:
    """The column after one more byte, or None when the prefix dies."""
    new: dict[tuple[int, int], set[Item]] = {}
    seeds: list[Item] = []
    for (t, q), items in col.scans.items():
        q2 = g.trans[t][q][byte]
        if not q2:
            continue
        grp = new.get((t, q2))
        if grp is None:
            new[(t, q2)] = set(items)
        else:
            grp |= items
        if g.accepting[t][q2]:
            seeds.extend((r, d + 1, o) for r, d, o in items)
    if not new:
        return None
    if not seeds:  # still inside terminals: nothing to predict or complete
        return Column(col.pos + 1, {}, new, False)
    return closure(g, col.pos + 1, seeds, new, lookup)


class Recognizer:
    """Incremental recognizer: feed bytes, ask `alive` (viable prefix) and `accepting` (complete)."""

    def __init__(self, g: CompiledCFG) -> None:
        self.g = g
        self.chart: list[Waiting] = []
        col = closure(g, 0, [(g.start_rule, 0, 0)], {}, self.chart.__getitem__)
        self.chart.append(col.waiting)
        self.col: Optional[Column] = col

    @property
    def alive(self) -> bool:
        return self.col is not None

    @property
    def accepting(self) -> bool:
        return self.col is not None and self.col.accepting

    def try_bytes(self, data: bytes) -> Optional[Column]:
        """The column after `data` without changing this recognizer (None if the prefix dies)."""
        col, extra = self.col, {}
        base = self.chart

        def lookup(o: int) -> Waiting:
            return base[o] if o < len(base) else extra[o]

        for b in data:
            if col is None:
                return None
            col = step(self.g, col, b, lookup)
            if col is not None:
                extra[col.pos] = col.waiting
        return col

    def feed(self, data: bytes) -> bool:
        """Consume `data`; returns whether the prefix is still viable (a dead recognizer stays dead)."""
        for b in data:
            if self.col is None:
                return False
            col = step(self.g, self.col, b, self.chart.__getitem__)
            self.col = col
            if col is not None:
                self.chart.append(col.waiting)
        return self.col is not None


def matches(g: CompiledCFG, data: bytes) -> tuple[bool, bool]:
    """(viable prefix, complete) of `data`."""
    r = Recognizer(g)
    r.feed(data)
    return r.alive, r.accepting

