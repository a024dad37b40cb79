"""Lark / GBNF grammar → regex (the grammar's regular part exactly; nesting unrolled to a bounded depth).

Lark parses and normalizes the grammar (rules become BNF alternatives, `x*`/`x+`/`[x]` become helper
rules), then every rule is inlined into one regex:
- list recursion (R: B | R S, or R: B | P R, lark's own `*`/`+` helpers included) becomes `B(S)*` /
  `(P)*B`, so repetition stays unbounded;
- any other recursion (nested brackets, expressions) is unrolled `max_depth` levels deep and the deeper
  alternatives are dropped, so generated text is always in the grammar's language, though nesting
  beyond the limit cannot be produced (the limit is the one approximation; it is reported, never silent:
  `grammar_info(...)["unrolled"]` lists the rules cut).
- `%ignore` terminals may appear between any two symbols.

GBNF (`root ::= ...`, as llama.cpp / xgrammar write EBNF) is translated to Lark first (lark_source.py).
`grammar_constraint(src)` says whether the regex is exact; when it is not, sampling-params grammars run on
the exact context-free engine instead (cfg.py / cfg_state.py), so nesting depth is unbounded there.
"""
from __future__ import annotations

from typing import Any, Optional

from sglang.runtime.constrained.errors import ConstraintError, GrammarError
from sglang.runtime.constrained.lark_source import load_grammar, terminal_regex
from sglang.runtime.constrained.regex_fsm import regex_to_dfa


class GrammarTooLarge(GrammarError):
    """The grammar's inlined regex would be too large (the exact CFG engine, cfg.py, can still run it)."""


class _Inliner:
    def __init__(self, parser: Any, max_depth: int) -> None:
        self.rules: dict[str, list[list[Any]]] = {}
        for r in parser.rules:
            self.rules.setdefault(r.origin.name, []).append(list(r.expansion))
        self.terms: dict[str, str] = {}
        for t in parser.terminals:
            rx = terminal_regex(t)
            try:
                regex_to_dfa(rx)  # terminals are small; this catches look-arounds etc. with positions
            except ConstraintError as exc:
                raise GrammarError(f"terminal {t.name}: {exc}") from None
            self.terms[t.name] = rx
        ign = [self.terms[n] for n in getattr(parser, "ignore_tokens", []) if n in self.terms]
        self.ignore = f"(({')|('.join(ign)}))*" if ign else ""
        self.max_depth = max_depth
        self.unrolled: set[str] = set()
        self._memo: dict[tuple, Optional[str]] = {}

    def symbol(self, sym: Any, stack: tuple[str, ...]) -> Optional[str]:
        if sym.is_term:
            return f"({self.terms[sym.name]})"
        return self.rule(sym.name, stack)

    def seq(self, syms: list[Any], stack: tuple[str, ...]) -> Optional[str]:
        parts = []
        for s in syms:
            p = self.symbol(s, stack)
            if p is None:
                return None
            parts.append(p)
        return self.ignore.join(parts)

    def rule(self, name: str, stack: tuple[str, ...]) -> Optional[str]:
        """Regex of `name` below `stack`; it depends on the stack only through how often each rule is on
        it, which keys the memo (without it, inlining is exponential in the nesting depth)."""
        if name not in self.rules:
            raise GrammarError(f"rule {name!r} is used but not defined")
        if stack.count(name) >= self.max_depth:
            self.unrolled.add(name)
            return None
        key = (name, tuple(sorted((n, stack.count(n)) for n in set(stack))))
        if key not in self._memo:
            self._memo[key] = self._rule(name, stack + (name,))
        return self._memo[key]

    def _rule(self, name: str, stack: tuple[str, ...]) -> Optional[str]:
        exps = self.rules[name]
        base = [e for e in exps if not any((not s.is_term) and s.name == name for s in e)]
        rec = [e for e in exps if e not in base]
        left = [e[1:] for e in rec if e and e[0].name == name and all(s.name != name for s in e[1:])]
        right = [e[:-1] for e in rec if e and e[-1].name == name and all(s.name != name for s in e[:-1])]
        ig = self.ignore
        if rec and len(left) == len(rec):  # R: B | R S  →  B (S)*
            b, s = self._alts(base, stack), self._alts(left, stack)
            if b is None:
                return None
            if s == b:
                return f"({b})+" if not ig else f"({b}({ig}{b})*)"
            return b if s is None else f"({b}({ig}{s})*)"
        if rec and len(right) == len(rec):  # R: B | P R  →  (P)* B
            b, p = self._alts(base, stack), self._alts(right, stack)
            if b is None:
                return None
            return b if p is None else f"(({p}{ig})*{b})"
        return self._alts(exps, stack)

    def _alts(self, exps: list[list[Any]], stack: tuple[str, ...]) -> Optional[str]:
        """Alternatives with common leading symbols factored out (`a b | a` → `a(b)?`), so that lark's
        expansions of `[x]` / `x*` do not copy the shared part once per alternative."""
        if not exps:
            return None
        groups: dict[Any, list[list[Any]]] = {}
        for e in exps:
            groups.setdefault(e[0] if e else None, []).append(e[1:] if e else [])
        by_tail: dict[tuple[Optional[str], str], list[str]] = {}  # (tail, "?"|"") -> heads
        empty = False
        for head, rests in groups.items():
            if head is None:
                empty = True
                continue
            h = self.symbol(head, stack)
            if h is None:
                continue
            nonempty = [r for r in rests if r]
            tail = self._alts(nonempty, stack) if nonempty else None
            if tail is None:
                if len(nonempty) < len(rests):
                    by_tail.setdefault((None, ""), []).append(h)
                continue
            by_tail.setdefault((tail, "?" if len(nonempty) < len(rests) else ""), []).append(h)
        parts: list[str] = []
        for (tail, opt), heads in by_tail.items():  # `+ t | - t` -> `(+|-) t`: one copy of t
            h = heads[0] if len(heads) == 1 else "(" + "|".join(dict.fromkeys(heads)) + ")"
            parts.append(h if tail is None else f"{h}({self.ignore}{tail}){opt}")
        if not parts:
            return "" if empty else None
        body = "|".join(dict.fromkeys(parts))
        return f"(({body})?)" if empty else f"({body})"


def grammar_info(src: str, start: str = "start", max_depth: int = 3) -> dict[str, Any]:
    """{"regex": str, "unrolled": [rules whose recursion was cut at max_depth]}."""
    if "::=" in src and start == "start":
        start = "start"  # GBNF's root is renamed start
    parser = load_grammar(src, start)
    inl = _Inliner(parser, max_depth)
    body = inl.rule(start, ())
    if body is None:
        raise GrammarError(f"grammar derives no finite string within nesting depth {max_depth}")
    rx = f"{inl.ignore}{body}{inl.ignore}"
    if len(rx) > 2_000_000:
        raise GrammarTooLarge("grammar too large to inline as a regex; lower max_depth")
    return {"regex": rx, "unrolled": sorted(inl.unrolled)}


def grammar_constraint(src: str) -> tuple[str, bool]:
    """(regex, exact): the grammar's regex, and whether it is exact (no recursion was cut). When it is not,
    callers use the context-free engine (cfg_state.py) with the grammar itself; regex is then the
    depth-limited approximation, or "" when even that is too large."""
    try:
        info = grammar_info(src)
    except GrammarTooLarge:
        from sglang.runtime.constrained.cfg import compile_cfg

        compile_cfg(src)  # the grammar itself must still be valid
        return "", False
    return info["regex"], not info["unrolled"]


def grammar_to_regex(src: str, start: str = "start", max_depth: int = 3) -> str:
    return grammar_info(src, start, max_depth)["regex"]
