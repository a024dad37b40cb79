"""The lexical layer of JSON-schema constraints: terminal regexes (strings, numbers, formats, patterns,
property names) and the automata built directly where the regex compiler would be slow.

Everything here is a sound subset of what its schema keyword allows: e.g. a number range yields the
integers in it and the decimals whose whole unit interval lies in it; a `pattern` is translated into
JSON string text (characters JSON must escape never appear raw) and fully matched; a name that must
differ from listed property names is spelt in printable ASCII without escapes.
"""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Optional

import numpy as np

from sglang.runtime.constrained.errors import ConstraintError
from sglang.runtime.constrained.regex_fsm import ByteDFA, literal_then, parse_regex, regex_to_dfa
from sglang.runtime.constrained.schema_ir import Node, T, atom, solid, terminal_dfa

STRING_CHAR = r'([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
STRING = f'"{STRING_CHAR}*"'
INTEGER = r"-?(0|[1-9][0-9]*)"
NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
BOOLEAN = r"(true|false)"
NULL = r"null"
_SAFE = r'[^"\\\x00-\x1f]'  # a JSON string character that needs no escape
_HOST = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_H16 = r"[0-9a-fA-F]{1,4}"
# real calendar days (February stops at 28: a subset, as leap years would need the year's digits)
_DATE = r"[0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_URI_CHAR = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"
FORMATS = {
    "date": f'"{_DATE}"',
    "time": f'"{_TIME}"',
    "date-time": f'"{_DATE}T{_TIME}"',
    "duration": r'"P([0-9]+Y)?([0-9]+M)?([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+S)?)?"',
    "uuid": r'"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"',
    "email": r'"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,}"',
    "idn-email": r'"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,}"',
    "hostname": f'"{_HOST}"',
    "idn-hostname": f'"{_HOST}"',
    "ipv4": f'"{_OCTET}(\\.{_OCTET}){{3}}"',
    "ipv6": f'"({_H16}:){{7}}{_H16}"',
    "uri": f'"[a-zA-Z][a-zA-Z0-9+.-]*:{_URI_CHAR}+"',
    "iri": f'"[a-zA-Z][a-zA-Z0-9+.-]*:{_URI_CHAR}+"',
    "uri-reference": f'"{_URI_CHAR}*"',
    "iri-reference": f'"{_URI_CHAR}*"',
    "uri-template": f'"{_URI_CHAR}*"',
    "json-pointer": r'"(/([^"\\\x00-\x1f~/]|~[01])*)*"',
}
# formats that are free text (nothing to enforce beyond "a string"), accepted without a warning
FREE_FORMATS = {"regex", "password", "binary", "byte", "textarea", "color", "int32", "int64", "float", "double"}


@functools.lru_cache(maxsize=1)
def _string_char_dfa() -> ByteDFA:
    dfa = regex_to_dfa(STRING_CHAR)
    assert int(dfa.accepting.sum()) == 1 and not dfa.trans[dfa.accepting].any()
    return dfa


def bounded_string_dfa(lo: int, hi: Optional[int]) -> ByteDFA:
    """The DFA of a JSON string literal of lo..hi characters, built directly: one copy of the one-character
    DFA per count (the regex compiler needs seconds for `{0,1000}` of a UTF-8/escape-aware character).
    Already trimmed: every reachable state can still close the string."""
    unit = _string_char_dfa()  # minimal: exactly one accepting state, with no way on
    acc_u = int(np.flatnonzero(unit.accepting)[0])  # the state after one whole character (no way on)
    inner = [q for q in range(1, unit.num_states) if q != acc_u]  # character-internal states
    pos = {q: i for i, q in enumerate(inner)}
    k, top = len(inner), (hi if hi is not None else lo)
    n = 2 + (top + 1) * k + 1  # dead, before the quote, (count, inner state) blocks, after the quote
    final = n - 1
    trans = np.zeros((n, 256), dtype=np.int32)
    trans[1, ord('"')] = 2 + pos[unit.start]
    row = unit.trans[inner]  # [k, 256] successors of each inner state
    local = np.zeros(unit.num_states, dtype=np.int64)
    local[inner] = np.arange(k)
    inside = (row != 0) & (row != acc_u)
    done = row == acc_u  # a character ends: the next count's start state
    counts = np.arange(top + 1)[:, None, None]
    base = 2 + counts * k
    nxt = 2 + np.minimum(counts + 1, top) * k + pos[unit.start]
    blocks = np.where(inside[None], base + local[row][None], 0)
    can_grow = (counts < top) | (hi is None)
    blocks = np.where(done[None] & can_grow, nxt, blocks)
    if hi is not None:
        blocks[top] = 0  # `hi` characters written: no character may even start (only the closing quote)
    trans[2:2 + (top + 1) * k] = blocks.reshape(-1, 256)
    closes = 2 + np.arange(lo, top + 1) * k + pos[unit.start]
    trans[closes, ord('"')] = final
    if hi is not None:  # the last block's mid-character states are unreachable: let them close too, so
        trans[2 + top * k:2 + (top + 1) * k, ord('"')] = final  # the table needs no trimming pass
    accepting = np.zeros(n, dtype=bool)
    accepting[final] = True
    blocks = (2, k, lo, top) if hi is not None else None  # unbounded: the counts above lo are one block
    return ByteDFA(trans=trans, accepting=accepting, start=1, count_blocks=blocks)


def any_value_regex(ws: str, depth: int) -> str:
    scalars = [STRING, NUMBER, BOOLEAN, NULL]
    if depth <= 0:
        return "(" + "|".join(scalars) + ")"
    inner = any_value_regex(ws, depth - 1)
    arr = rf"\[{ws}({inner}({ws},{ws}{inner})*)?{ws}\]"
    obj = rf"\{{{ws}({STRING}{ws}:{ws}{inner}({ws},{ws}{STRING}{ws}:{ws}{inner})*)?{ws}\}}"
    return "(" + "|".join(scalars + [arr, obj]) + ")"


def number_range_regex(lo: Optional[float], lo_x: bool, hi: Optional[float], hi_x: bool) -> Optional[str]:
    """Regex of JSON numbers inside the range: every integer in it, and the decimals i.ddd whose whole
    unit interval lies in it (a sound subset: no exponents, no decimals in the partial end intervals)."""
    ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
    ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
    parts = []
    if ilo is None or ihi is None or ilo <= ihi:
        parts.append(int_range_regex(ilo, ihi))
    frac = r"\.[0-9]+"
    # positive i.ddd in [i, i+1): i >= lo (strictly when exclusive, as i.0 == i) and i + 1 <= hi
    a = 0 if lo is None else max(0, math.floor(lo) + 1 if lo_x else math.ceil(lo))
    b = None if hi is None else math.floor(hi) - 1
    if b is None or a <= b:
        parts.append(int_range_regex(a, b) + frac)
    # negative -i.ddd in (-(i+1), -i]: -(i+1) >= lo and -i <= hi (strictly when exclusive)
    c = 0 if hi is None else max(0, math.floor(-hi) + 1 if hi_x else math.ceil(-hi))
    d = None if lo is None else math.floor(-lo) - 1
    if d is None or c <= d:
        parts.append("-" + int_range_regex(c, d) + frac)
    if not parts and lo is not None and hi is not None:  # a range narrower than its unit intervals
        mid = round((lo + hi) / 2, 6)
        if (mid > lo if lo_x else mid >= lo) and (mid < hi if hi_x else mid <= hi):
            parts.append(re.escape(repr(float(mid))))
    return "(" + "|".join(parts) + ")" if parts else None


def string_excluding_regex(names: list[str]) -> str:
    """A JSON string literal that is none of `names`. With names to avoid, keys are spelt in printable
    ASCII without escapes (a subset of the strings allowed), so a listed name cannot be written another
    way and the automaton stays small (a trie of the names over an ASCII alphabet)."""
    names = [n for n in dict.fromkeys(names)]
    if not names:
        return f'"{_SAFE}*"'
    key_char = r"[ !#-\[\]-~]"  # printable ASCII but '"' and '\\'

    def node(prefix: str) -> str:
        nexts = sorted({n[len(prefix)] for n in names if n.startswith(prefix) and len(n) > len(prefix)})
        nexts = [c for c in nexts if " " <= c <= "~" and c not in '"\\']
        alts = ["" if prefix not in names else None]
        other = _ascii_class_without(nexts)
        if other:
            alts.append(f"{other}{key_char}*")
        for c in nexts:
            alts.append(re.escape(c) + node(prefix + c))
        kept = [a for a in alts if a is not None]
        return "(" + "|".join(kept) + ")" if kept else "(?!)"

    return f'"{node("")}"'


def json_literal(value: object) -> str:
    """The regex of one JSON value written compactly (keys, enum members, consts)."""
    return re.escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def key_terminal(name: str, ws: str) -> Node:
    """The terminal of property `name` with its colon (`"name" : `): kept apart from the value so the
    value's terminal is shared across schemas; its DFA is the key's bytes chained onto the (shared)
    whitespace-colon automaton."""
    tail = f"{ws}:{ws}"
    data = json.dumps(name, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return atom(json_literal(name) + tail, functools.partial(_key_dfa, data, tail))


def _key_dfa(data: bytes, tail: str) -> ByteDFA:
    return literal_then(data, terminal_dfa(tail))


def key_excluding(names: list[str]) -> Node:
    """The terminal of an additional property name (none of `names`); a trie automaton built directly
    when there are many names."""
    rx = string_excluding_regex(names)
    if len(names) <= 8:
        return T(rx)
    return solid(rx, functools.partial(excluding_dfa, tuple(dict.fromkeys(names))))


def excluding_dfa(names: tuple[str, ...]) -> ByteDFA:
    """DFA of `string_excluding_regex(names)`: one state per name prefix (over printable ASCII), a free state
    once the key left every name, and the closing quote wherever the key is not a name."""
    prefixes = {"": 0}
    for n in names:
        for i in range(1, len(n) + 1):
            if not all(" " <= c <= "~" and c not in '"\\' for c in n[:i]):
                break
            prefixes.setdefault(n[:i], len(prefixes))
    m = len(prefixes)
    start, free, final = 1, 2 + m, 3 + m
    trans = np.zeros((4 + m, 256), dtype=np.int32)
    key_bytes = np.array([b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C)])
    trans[start, 0x22] = 2
    trans[2:2 + m, key_bytes[:, None].T] = free
    trans[free, key_bytes] = free
    trans[free, 0x22] = final
    name_set = set(names)
    for p, i in prefixes.items():
        if p:
            trans[2 + prefixes[p[:-1]], ord(p[-1])] = 2 + i
        if p not in name_set:
            trans[2 + i, 0x22] = final
    accepting = np.zeros(4 + m, dtype=bool)
    accepting[final] = True
    return ByteDFA(trans=trans, accepting=accepting, start=start)


def _ascii_class_without(chars: list[str]) -> str:
    """A class of printable ASCII but '"', '\\' and `chars` ("" when nothing is left)."""
    out = set(range(0x20, 0x7F)) - {0x22, 0x5C} - {ord(c) for c in chars}
    if not out:
        return ""
    ranges, run = [], None
    for cp in sorted(out):
        if run and cp == run[1] + 1:
            run[1] = cp
        else:
            run = [cp, cp]
            ranges.append(run)
    return "[" + "".join(_class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}" for a, b in ranges) + "]"


def json_string_regex(pattern: str) -> str:
    """A regex over JSON string *text* (between the quotes) for the strings that fully match `pattern`
    (ECMA/Python syntax): literal characters are escaped as JSON requires, classes and `.` keep only
    characters JSON writes unescaped. Raises ConstraintError for constructs a DFA cannot express."""
    import re._constants as C  # noqa: N812 - the parser's opcode names

    tree = parse_regex(pattern)
    _NEGATED = {C.CATEGORY_NOT_DIGIT: "0-9", C.CATEGORY_NOT_WORD: "a-zA-Z0-9_", C.CATEGORY_NOT_SPACE: " "}  # noqa: N806

    def lit(cp: int) -> str:
        ch = chr(cp)
        if ch == '"':
            return r'\\"'
        if ch == "\\":
            return r"\\\\"
        if cp < 0x20:
            return re.escape(json.dumps(ch)[1:-1])
        return re.escape(ch)

    def cls(items: list, negate: bool = False) -> str:
        if len(items) == 1 and items[0][0] is C.CATEGORY and items[0][1] in _NEGATED:
            return "[^" + '"\\\\\\x00-\\x1f' + _NEGATED[items[0][1]] + "]"
        body = []
        for op, av in items:
            if op is C.NEGATE:
                negate = True
            elif op is C.LITERAL:
                if av >= 0x20 and chr(av) not in '"\\':
                    body.append(_class_char(av))
            elif op is C.RANGE:
                for lo, hi in _json_safe_ranges(*av):
                    body.append(f"{_class_char(lo)}-{_class_char(hi)}")
            elif op is C.CATEGORY:
                body.append({C.CATEGORY_DIGIT: "0-9", C.CATEGORY_WORD: "a-zA-Z0-9_", C.CATEGORY_SPACE: " ",
                             C.CATEGORY_NOT_DIGIT: None, C.CATEGORY_NOT_WORD: None,
                             C.CATEGORY_NOT_SPACE: None}.get(av) or _unsupported(f"class {av}"))
            else:
                _unsupported(str(op))
        if negate:
            return "[^" + '"\\\\\\x00-\\x1f' + "".join(body) + "]"
        return "[" + "".join(body) + "]" if body else "(?!)"

    def emit(items, top: bool = False) -> str:
        out = []
        n = len(items)
        for i, (op, av) in enumerate(items):
            if op is C.AT:
                if (av in (C.AT_BEGINNING, C.AT_BEGINNING_STRING) and i == 0 and top) or \
                        (av in (C.AT_END, C.AT_END_STRING) and i == n - 1 and top):
                    continue
                _unsupported("anchor inside the pattern")
            elif op is C.LITERAL:
                out.append(lit(av))
            elif op is C.NOT_LITERAL:
                out.append(cls([(C.LITERAL, av)], negate=True))
            elif op is C.ANY:
                out.append(_SAFE)
            elif op is C.IN:
                out.append(cls(list(av)))
            elif op is C.BRANCH:
                out.append("(" + "|".join(emit(list(b), top) for b in av[1]) + ")")
            elif op is C.SUBPATTERN:
                out.append("(" + emit(list(av[-1]), top and len(items) == 1) + ")")
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
                lo, hi, sub = av
                hi_s = "" if hi == C.MAXREPEAT else str(hi)
                out.append(f"({emit(list(sub))}){{{lo},{hi_s}}}")
            else:
                _unsupported(str(op).lower())
        return "".join(out)

    rx = emit(list(tree), top=True)
    if "(?!)" in rx:
        _unsupported("an empty character class")
    return rx


def _json_safe_ranges(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi] without the characters JSON must escape (controls, quote, backslash)."""
    out, lo = [], max(lo, 0x20)
    for cut in (0x22, 0x5C):
        if lo <= cut <= hi:
            if lo < cut:
                out.append((lo, cut - 1))
            lo = cut + 1
    if lo <= hi:
        out.append((lo, hi))
    return out


def _class_char(cp: int) -> str:
    ch = chr(cp)
    return "\\" + ch if ch in "]\\^-[" else ch


def _unsupported(what: str) -> str:
    raise ConstraintError(f"unsupported regex construct: {what}")


def _digits_range(lo: str, hi: str) -> str:
    """Regex for the decimal strings of equal length n from lo to hi (lo <= hi, no leading-zero rules)."""
    if lo == hi:
        return lo
    if lo == "0" * len(lo) and hi == "9" * len(hi):  # every digit string: without this shortcut the
        return f"[0-9]{{{len(lo)}}}"  # recursion below doubles the regex per digit (28k chars for 2^31)
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return lo[0] + "(" + _digits_range(lo[1:], hi[1:]) + ")"
    n = len(lo) - 1
    parts = [lo[0] + "(" + _digits_range(lo[1:], "9" * n) + ")"]
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}][0-9]{{{n}}}")
    parts.append(hi[0] + "(" + _digits_range("0" * n, hi[1:]) + ")")
    return "(" + "|".join(parts) + ")"


def _nonneg_range(lo: int, hi: Optional[int]) -> str:
    """Canonical decimal (no leading zeros) of lo..hi, hi None = unbounded."""
    parts = []
    n_lo = len(str(lo))
    top = len(str(hi)) if hi is not None else n_lo
    for n in range(n_lo, top + 1):
        a = max(lo, 10 ** (n - 1) if n > 1 else 0)
        b = min(hi, 10 ** n - 1) if hi is not None else 10 ** n - 1
        if a <= b:
            parts.append(_digits_range(str(a), str(b)))
    if hi is None:
        parts.append(f"[1-9][0-9]{{{n_lo},}}")
    return "(" + "|".join(parts) + ")"


def int_range_regex(lo: Optional[int], hi: Optional[int]) -> str:
    """Regex of the canonical JSON integers in [lo, hi] (None = unbounded)."""
    parts = []
    if hi is None or hi >= 0:
        parts.append(_nonneg_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        # negatives: -(1..|lo|), bounded above by hi when hi < 0
        nlo = 1 if hi is None or hi >= 0 else -hi
        nhi = None if lo is None else -lo
        parts.append("-" + _nonneg_range(nlo, nhi))
    return "(" + "|".join(parts) + ")"
