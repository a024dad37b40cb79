"""A small grammar IR for JSON-schema constraints, with two back ends: one regex, or a context-free grammar.

Nodes (`Node`): a terminal regex (`T`), a sequence, an alternation, a bounded/unbounded repetition, or a
reference to a named rule (a `$ref` target, possibly recursive). Constructors fold terminal-only subtrees
into one terminal regex while it stays short (`TERM_MAX` characters), so the grammar's terminals are
coarse lexical units (a whole string, a number, an enum) and the rules only carry structure. Property keys
(`atom`) and counted strings (`solid`) are never folded: their automata are built directly, and their
neighbours stay terminals that recur verbatim across schemas (compiled once per process).
`None` stands for the empty language everywhere (a `false` schema, an impossible range): constructors
propagate it (a sequence with an empty part is empty, an alternation drops empty branches).

- `to_regex(node, rules, ...)`: inlines every rule; recursion is unrolled `max_depth` levels (deeper
  branches dropped, so the regex's language stays inside the schema's) and `ANY` (any JSON value) is a
  bounded-depth regex. `cyclic(rules)` says whether unrolling would cut anything.
- `to_cfg(node, rules, ...)`: one nonterminal per rule and per repetition, terminals are the regexes;
  recursion is exact and `ANY` is a recursive rule. The result is a `cfg.CompiledCFG`.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

from sglang.runtime.constrained.cfg import CompiledCFG, LazyDFAs, build_cfg
from sglang.runtime.constrained.regex_fsm import ByteDFA, regex_to_dfa, trim_dfa

TERM_MAX = 120  # longest terminal regex built by folding (longer subtrees keep their structure)
ANY_RULE = "__any"  # the rule name of "any JSON value" (recursive in the CFG, bounded in a regex)


class Node:
    """One IR node; `kind` is t | seq | alt | rep | ref (immutable after construction)."""

    __slots__ = ("kind", "rx", "parts", "lo", "hi", "name", "solid", "keep")

    def __init__(self, kind: str, rx: str = "", parts: tuple["Node", ...] = (), lo: int = 0,
                 hi: Optional[int] = None, name: str = "", solid: bool = False, keep: bool = False) -> None:
        self.kind, self.rx, self.parts, self.lo, self.hi, self.name = kind, rx, parts, lo, hi, name
        self.solid = solid  # a terminal with its own DFA builder: never folded into a bigger regex
        # never folded either, but cheap for the regex back end: a terminal kept apart so that its
        # neighbours stay terminals shared across schemas (see `atom`)
        self.keep = keep or solid

    @property
    def folds(self) -> bool:
        """Whether this is a terminal that constructors may merge into a neighbouring terminal."""
        return self.kind == "t" and not self.keep


def _group(rx: str) -> str:
    return rx if len(rx) <= 1 or (rx[0] == "(" and _closes_at_end(rx)) else f"({rx})"


def _closes_at_end(rx: str) -> bool:
    """Whether the "(" at rx[0] is closed by the last character (so rx is already one group)."""
    depth, i, in_class = 0, 0, False
    while i < len(rx):
        c = rx[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if rx[i + 1:i + 2] == "]":  # "[]...]": a leading "]" is a literal
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i == len(rx) - 1
        i += 1
    return False


def T(rx: str) -> Node:
    """A terminal regex (concatenation-safe: alternations are grouped by the caller or here)."""
    return Node("t", rx=rx)


EMPTY = T("")

# terminals whose DFA is built directly (the regex compiler would take seconds on them): regex -> builder
_BUILDERS: dict[str, Callable[[], ByteDFA]] = {}
# terminals kept apart whose builder makes a trimmed DFA in microseconds (property keys): regex -> builder
_ATOM_BUILDERS: dict[str, Callable[[], ByteDFA]] = {}


def solid(rx: str, builder: Callable[[], ByteDFA], trimmed: bool = False) -> Node:
    """A terminal whose DFA `builder` makes (the regex `rx` names the same language, for the regex back
    end and as the cache key); it is never folded into a neighbouring terminal. `trimmed`: the builder's
    automaton has no state that cannot reach acceptance (trimming a large table costs a second)."""
    (_ATOM_BUILDERS if trimmed else _BUILDERS).setdefault(rx, builder)
    return Node("t", rx=rx, solid=True)


def atom(rx: str, builder: Callable[[], ByteDFA]) -> Node:
    """A terminal never folded into its neighbours, whose (trimmed) DFA `builder` makes directly.

    Why: a property key folded with its value makes one terminal per (schema, key), each a regex
    compile (milliseconds); kept apart, the key's DFA is a byte chain built at once and the value's
    terminal (a string, a number...) is the same regex in every schema, compiled once per process."""
    _ATOM_BUILDERS.setdefault(rx, builder)
    return Node("t", rx=rx, keep=True)


def seq(*parts: Optional[Node]) -> Optional[Node]:
    if any(p is None for p in parts):
        return None
    flat: list[Node] = []
    for p in parts:
        for q in (p.parts if p.kind == "seq" else (p,)):
            if q.kind == "t" and not q.rx:
                continue
            if q.folds and flat and flat[-1].folds and len(flat[-1].rx) + len(q.rx) <= TERM_MAX:
                flat[-1] = T(flat[-1].rx + q.rx)
            else:
                flat.append(q)
    if not flat:
        return EMPTY
    return flat[0] if len(flat) == 1 else Node("seq", parts=tuple(flat))


def alt(parts: Sequence[Optional[Node]]) -> Optional[Node]:
    kept: list[Node] = []
    seen: set[int] = set()
    for p in parts:
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            kept.append(p)
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    if all(p.folds for p in kept):
        rxs = list(dict.fromkeys(p.rx for p in kept))
        total = sum(len(r) + 1 for r in rxs)
        if total <= TERM_MAX:
            return T(rxs[0] if len(rxs) == 1 else "(" + "|".join(rxs) + ")")
    return Node("alt", parts=tuple(kept))


def rep(x: Optional[Node], lo: int, hi: Optional[int]) -> Optional[Node]:
    """x repeated lo..hi times (hi None = unbounded)."""
    if hi is not None and hi < lo:
        return None
    if x is None:
        return EMPTY if lo == 0 else None
    if hi == 0 or (x.kind == "t" and not x.rx):
        return EMPTY
    if lo == hi == 1:
        return x
    if x.folds and len(x.rx) + 12 <= TERM_MAX and (hi is None or hi <= 4):
        q = "?" if (lo, hi) == (0, 1) else "*" if (lo, hi) == (0, None) else "+" if (lo, hi) == (1, None) \
            else f"{{{lo},{'' if hi is None else hi}}}"
        return T(f"({x.rx}){q}")
    return Node("rep", parts=(x,), lo=lo, hi=hi)


def ref(name: str) -> Node:
    return Node("ref", name=name)


def opt(x: Optional[Node]) -> Optional[Node]:
    return rep(x, 0, 1)


# ---------------------------------------------------------------- analysis

def cyclic(start: Node, rules: dict[str, Node]) -> bool:
    """Whether a rule reachable from `start` refers to itself (ANY excepted: both back ends handle it)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    memo: dict[int, frozenset[str]] = {}  # node id -> the rules it names (nodes are shared: walk each once)

    def refs_of(n: Node) -> frozenset[str]:
        got = memo.get(id(n))
        if got is None:
            if n.kind == "ref":
                got = frozenset((n.name,))
            else:
                got = frozenset().union(*(refs_of(p) for p in n.parts)) if n.parts else frozenset()
            memo[id(n)] = got
        return got

    def visit(name: str) -> bool:
        if name == ANY_RULE or state.get(name) == 2:
            return False
        if state.get(name) == 1:
            return True
        state[name] = 1
        body = rules.get(name)
        if body is not None and any(visit(r) for r in sorted(refs_of(body))):
            return True
        state[name] = 2
        return False

    return any(visit(r) for r in sorted(refs_of(start)))


# ---------------------------------------------------------------- regex back end

class RegexTooLarge(Exception):
    """The inlined regex would pass `limit` characters."""


def to_regex(start: Node, rules: dict[str, Node], any_regex: str, max_depth: int = 3,
             limit: Optional[int] = None) -> Optional[str]:
    """The regex of `start` with every rule inlined (None: empty language); raises RegexTooLarge past
    `limit` characters, or at a solid terminal when a limit is set (its automaton is large)."""
    memo: dict[tuple[str, tuple], Optional[str]] = {}
    budget = [limit]

    def charge(rx: Optional[str]) -> Optional[str]:
        if rx is not None and budget[0] is not None:
            budget[0] -= len(rx)
            if budget[0] < 0:
                raise RegexTooLarge()
        return rx

    def emit(n: Node, stack: tuple[str, ...]) -> Optional[str]:
        k = n.kind
        if k == "t":
            if n.solid and limit is not None:
                raise RegexTooLarge()
            return n.rx
        if k == "seq":
            out = []
            for p in n.parts:
                r = emit(p, stack)
                if r is None:
                    return None
                out.append(r)
            return charge("".join(out))
        if k == "alt":
            rs = [r for r in (emit(p, stack) for p in n.parts) if r is not None]
            if not rs:
                return None
            rs = list(dict.fromkeys(rs))
            return charge(rs[0] if len(rs) == 1 else "(" + "|".join(rs) + ")")
        if k == "rep":
            r = emit(n.parts[0], stack)
            if r is None:
                return "" if n.lo == 0 else None
            if not r:
                return ""
            q = "?" if (n.lo, n.hi) == (0, 1) else "*" if (n.lo, n.hi) == (0, None) else \
                f"{{{n.lo},{'' if n.hi is None else n.hi}}}"
            charge(r * (max(n.lo, n.hi or 1) - 1))  # a counted repeat costs its copies in the automaton
            return charge(f"({r}){q}")
        # ref
        if n.name == ANY_RULE:
            return any_regex
        if stack.count(n.name) >= max_depth:
            return None
        key = (n.name, tuple(sorted((s, stack.count(s)) for s in set(stack))))
        if key not in memo:
            body = rules.get(n.name)
            memo[key] = None if body is None else emit(body, stack + (n.name,))
        return memo[key]

    return emit(start, ())


# ---------------------------------------------------------------- CFG back end

@functools.lru_cache(maxsize=8192)
def terminal_dfa(rx: str) -> ByteDFA:
    """Terminal regexes recur across schemas (strings, numbers, keys): compile each once per process."""
    atom_builder = _ATOM_BUILDERS.get(rx)
    if atom_builder is not None:
        return atom_builder()
    builder = _BUILDERS.get(rx)
    # trimmed either way: a live state must always lead to acceptance (no token may lead nowhere)
    return trim_dfa(builder()) if builder is not None else regex_to_dfa(rx, minimize=False)


def to_cfg(start: Node, rules: dict[str, Node], any_node: Node) -> CompiledCFG:
    """A context-free grammar of `start`: one nonterminal per rule, alternation, sequence and repetition."""
    nts: dict[object, int] = {}
    names: list[str] = []
    raw: list[tuple[int, list[int]]] = []
    terms: dict[str, int] = {}

    def nt(key: object, label: str) -> tuple[int, bool]:
        got = nts.get(key)
        if got is not None:
            return got, False
        nts[key] = len(names)
        names.append(label)
        return nts[key], True

    def term(rx: str) -> int:
        if rx not in terms:
            terms[rx] = len(terms)
        return ~terms[rx]

    def body(n: Node) -> list[int]:
        """The symbols of `n` as one right-hand side (sequences stay inline)."""
        if n.kind == "t":
            return [term(n.rx)] if n.rx else []
        if n.kind == "seq":
            return [s for p in n.parts for s in body(p)]
        return [symbol(n)]

    def symbol(n: Node) -> int:
        if n.kind == "ref":
            name = n.name
            target = any_node if name == ANY_RULE else rules.get(name)
            i, new = nt(("ref", name), name)
            if new and target is not None:
                raw.append((i, body(target)))
            return i
        if n.kind == "t":
            return term(n.rx)
        i, new = nt(id(n), n.kind)
        if not new:
            return i
        if n.kind == "seq":
            raw.append((i, body(n)))
        elif n.kind == "alt":
            for p in n.parts:
                raw.append((i, body(p)))
        else:  # rep: x{lo} then (hi - lo) nested optionals, or a star rule
            x = body(n.parts[0])
            head = x * n.lo
            if n.hi is None:
                star, _ = nt(("star", id(n)), "star")
                raw.append((star, []))
                raw.append((star, [star] + x))
                raw.append((i, head + [star]))
            else:
                tail: list[int] = []
                for _ in range(n.hi - n.lo):
                    o, _ = nt(("opt", id(n), len(names)), "opt")
                    raw.append((o, []))
                    raw.append((o, x + tail))
                    tail = [o]
                raw.append((i, head + tail))
        return i

    start_body = body(start)  # (nodes are keyed by id(): `start` and `rules` keep them alive meanwhile)
    regexes = [""] * len(terms)
    for rx, i in terms.items():
        regexes[i] = rx
    # terminals built directly are made now (a later process loading this grammar from disk has no
    # builder for them); the regex ones compile when the parser first predicts them
    known = {i: terminal_dfa(r) for i, r in enumerate(regexes) if r in _ATOM_BUILDERS or r in _BUILDERS}
    return build_cfg(raw, names, [f"T{i}" for i in range(len(regexes))], LazyDFAs(regexes, terminal_dfa, known),
                     start_body, term_regexes=regexes)
