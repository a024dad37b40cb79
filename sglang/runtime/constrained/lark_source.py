"""Grammar text (Lark or GBNF) → a lark parser object, shared by the regex inliner (grammar.py) and the
exact CFG engine (cfg.py), so neither imports the other's internals.

GBNF (`root ::= ...`, llama.cpp / xgrammar's EBNF) is translated to Lark syntax first; lark's common
terminals written with look-behind are replaced by look-around-free regexes of the same language.
"""
from __future__ import annotations

import re
from typing import Any

from sglang.runtime.constrained.errors import GrammarError

# lark's common terminals written with look-behind → the same language without it
KNOWN_TERMINALS = {
    r'".*?(?<!\\)(\\\\)*?"': r'"([^"\\\n]|\\[^\n])*"',  # ESCAPED_STRING
}


def gbnf_to_lark(src: str) -> str:
    """Translate GBNF rules (`name ::= body`) to Lark syntax; character classes become regex terminals."""
    out = []
    for line in src.splitlines():
        m = re.match(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*::=(.*)$", line)
        if m:
            name = m.group(1).replace("-", "_").lower()
            out.append(("start" if name == "root" else name) + ":" + _gbnf_body(m.group(2)))
        else:
            out.append("    " + _gbnf_body(line) if line.strip() else "")
    return "\n".join(out)


def _gbnf_body(body: str) -> str:
    parts, i = [], 0
    while i < len(body):
        c = body[i]
        if c == '"':
            j = i + 1
            while j < len(body) and body[j] != '"':
                j += 2 if body[j] == "\\" else 1
            parts.append(body[i:j + 1])
            i = j + 1
        elif c == "[":
            j = i + 1
            while j < len(body) and body[j] != "]":
                j += 2 if body[j] == "\\" else 1
            cls = body[i:j + 1].replace("/", "\\/")
            parts.append(f"/{cls}/")
            i = j + 1
        elif c == "#":
            break
        elif c.isalpha():
            m = re.match(r"[A-Za-z][A-Za-z0-9_-]*", body[i:])
            name = m.group(0).replace("-", "_").lower()
            parts.append("start" if name == "root" else name)
            i += len(m.group(0))
        else:
            parts.append(c)
            i += 1
    return "".join(parts)


def load_grammar(src: str, start: str) -> Any:
    try:
        from lark import Lark
        from lark.exceptions import LarkError
    except ImportError as exc:  # pragma: no cover - lark is a dependency
        raise GrammarError("grammar constraints need the 'lark' package") from exc
    if not isinstance(src, str) or not src.strip():
        raise GrammarError(f"grammar must be a non-empty string, got {src!r}")
    text = gbnf_to_lark(src) if "::=" in src else src
    try:
        return Lark(text, start=start, parser="earley", lexer="dynamic")
    except LarkError as exc:
        raise GrammarError(f"invalid grammar: {exc}") from None



def terminal_regex(terminal: Any) -> str:
    """The regex of a lark terminal definition, with look-behind forms of known terminals rewritten."""
    rx = terminal.pattern.to_regexp()
    return KNOWN_TERMINALS.get(rx, rx)
