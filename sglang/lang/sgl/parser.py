"""Parse `.sgl` source into the AST (lang/sgl/nodes.py), with friendly errors.

LALR(1) over lang/sgl.lark. Syntax errors become `SglSyntaxError` with file:line:col, the source line,
a caret, the expected tokens and, when the error looks like a known mistake (lark's `match_examples`
over a table of bad snippets), a specific hint. String interpolation `"{expr}"` is parsed with the
same grammar's `expr` start symbol, so errors inside `{...}` point at the right column too.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
                             VisitError)

from sglang.lang.sgl import nodes as A
from sglang.lang.sgl.errors import SglSyntaxError, SourcePos
from sglang.lang.sgl.source import check_nesting, read_source, strip_bom

GRAMMAR_PATH = Path(__file__).with_name("sgl.lark")

# Known mistakes: hint -> snippets that produce the same parser state (lark match_examples).
_EXAMPLES: dict[str, list[str]] = {
    "statements must be inside a function: def NAME(params) { ... }": [
        '"hello"', "gen x", "x = 1", "user { }", "if x { }", "return x",
    ],
    "a block starts with '{' (Python's ':' and indentation are not .sgl syntax)": [
        "def f():", "def f() { if x: }", "def f() { for x in y: }", "def f() { user: }",
        'def f() { if x == "a": }', "def f() { if x == 1: }", "def f() { for x in range(3): }",
        "def f() { elif x: }", "def f() { if x { } else: }",
        'def f() "x"', "def f() { if x 'a' }", "def f() { for x in y 'a' }",
    ],
    "'elif' and 'else' must directly follow the '}' of an if block": [
        "def f() { else { } }", "def f() { elif x { } }",
    ],
    "gen needs a variable name first: gen NAME(max_tokens=..., ...)": [
        "def f() { gen(max_tokens=3) }", 'def f() { gen "x" }', "def f() { gen 1 }",
    ],
    "select needs a variable name and choices: select NAME(choices=[...])": [
        'def f() { select(["a"]) }', 'def f() { select "x" }', "def f() { select x }",
        "def f() { select x gen y }",
    ],
    "there is no `s += ...` in .sgl: a bare string, variable, gen or select statement appends to the state": [
        'def f() { s += "x" }', "def f() { s += x }", "def f() { state += x }",
    ],
    "this is the Python API; in .sgl write `gen NAME(...)`, `select NAME(choices=[...])`, `user { ... }`": [
        'def f() { sgl.gen("x") }', 'def f() { sgl.select("x") }', "def f() { sgl.user(q) }",
        'def f() { s += sgl.gen("x") }',
    ],
    "missing ',' between arguments": [
        "def f() { gen x(max_tokens=3 stop=1) }", 'def f() { gen x(stop="a" max_tokens=3) }',
        "def f(a b) { }", "def f() { g(a b) }",
    ],
    "missing '}' to close a block": [
        'def f() { "a"', "def f() { user { gen x }", "def f() {",
    ],
    "fork needs a name and a count or branches: fork NAME[n] as i { ... } or fork NAME { branch { ... } }": [
        "def f() { fork 2 { } }", "def f() { fork x { } }", "def f() { fork { } }", "def f() { fork x(2) { } }",
    ],
    "incomplete expression": [
        "def f() { let x = }", "def f() { x = 1 + }", "def f() { if { } }", "def f() { gen x(max_tokens=) }",
    ],
}

_FRIENDLY = {"NAME": "a name", "STRING": "a string", "NUMBER": "a number", "ROLE": "a role (system/user/assistant)",
             "$END": "end of file", "_NL": "newline"}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(), parser="lalr", start=["start", "expr"], propagate_positions=True,
                maybe_placeholders=True)


def _pos_of(meta_or_tok: Any) -> A.Pos:
    line = getattr(meta_or_tok, "line", None)
    col = getattr(meta_or_tok, "column", None)
    return A.Pos(line or 0, col or 0)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'", "b": "\b", "f": "\f",
            "v": "\v", "a": "\a", "\n": ""}


def _unescape(s: str, file: str, text: str, line: int, col: int) -> str:
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n in _ESCAPES:
            out.append(_ESCAPES[n])
            i += 2
        elif n in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[n]
            digits = s[i + 2:i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise SglSyntaxError(f"bad \\{n} escape in string: expected {width} hex digits",
                                     SourcePos.of(text, file, line, col))
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:  # unknown escapes stay as written (regexes like "\d+" keep their backslash)
            out.append(c + n)
            i += 2
    return "".join(out)


class _Builder(Transformer):
    """Lark tree → AST. Holds the source to parse interpolations and to report positions."""

    def __init__(self, text: str, file: str):
        super().__init__()
        self.text = text
        self.file = file

    # ---- helpers ----
    def _err(self, msg: str, line: int, col: int, hint: str | None = None) -> SglSyntaxError:
        return SglSyntaxError(msg, SourcePos.of(self.text, self.file, line, col), hint)

    def _string(self, tok: Token) -> A.Str:
        raw = str(tok)
        is_raw = raw[0] in "rR"
        body = raw[1:] if is_raw else raw
        q = 3 if body[:3] in ('"""', "'''") else 1
        content = body[q:-q]
        start_off = tok.start_pos + (1 if is_raw else 0) + q
        pos = A.Pos(tok.line, tok.column)
        if is_raw:
            return A.Str([content] if content else [], pos)
        parts: list[Any] = []
        lit: list[str] = []
        i = 0
        while i < len(content):
            c = content[i]
            if c == "\\" and i + 1 < len(content):
                lit.append(content[i:i + 2])
                i += 2
                continue
            if c in "{}" and content[i + 1:i + 2] == c:
                lit.append(c)
                i += 2
                continue
            if c == "}":
                ln, cl = self._linecol(start_off + i)
                raise self._err("single '}' in string", ln, cl, "write '}}' for a literal brace")
            if c == "{":
                end = self._match_brace(content, i)
                ln, cl = self._linecol(start_off + i)
                if end < 0:
                    raise self._err("unclosed '{' in string", ln, cl,
                                    "write '{{' for a literal brace, or use a raw string r\"...\" (e.g. for regexes)")
                inner = content[i + 1:end]
                if lit:
                    parts.append(_unescape("".join(lit), self.file, self.text, tok.line, tok.column))
                    lit = []
                parts.append(self._interp(inner, start_off + i + 1))
                i = end + 1
                continue
            lit.append(c)
            i += 1
        if lit:
            parts.append(_unescape("".join(lit), self.file, self.text, tok.line, tok.column))
        return A.Str(parts, pos)

    @staticmethod
    def _match_brace(s: str, i: int) -> int:
        depth, quote, j = 0, None, i
        while j < len(s):
            c = s[j]
            if quote:
                if c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return j
            j += 1
        return -1

    def _linecol(self, offset: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, offset) + 1
        col = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return line, col

    def _interp(self, inner: str, offset: int) -> A.Expr:
        ln, cl = self._linecol(offset)
        if not inner.strip():
            raise self._err("empty '{}' in string", ln, cl, "write '{{}}' for literal braces")
        if re.fullmatch(r"\s*\d+\s*(,\s*\d*\s*)?", inner):
            raise self._err(f"'{{{inner}}}' in a string looks like a regex repetition, not a variable", ln, cl,
                            "use a raw string r\"...\" for regexes (no interpolation), or write '{{' and '}}'")
        # Parse the inner expression at its real position: pad with the source before it.
        padded = re.sub(r"[^\n]", " ", self.text[:offset]) + inner
        try:
            tree = _parser().parse(padded, start="expr")
        except UnexpectedInput as e:
            raise _syntax_error(e, padded, self.file, self.text,
                                hint="inside '{...}' in a string; use '{{' for a literal brace") from None
        return _Builder(self.text, self.file).transform(tree)

    # ---- top level ----
    def start(self, items: list[Any]) -> A.Module:
        items = [i for i in items if i is not None and not isinstance(i, Token)]
        return A.Module([i for i in items if isinstance(i, A.Import)],
                        [i for i in items if isinstance(i, A.FuncDef)], self.file)

    @v_args(meta=True)
    def import_module(self, meta: Any, ch: list[Any]) -> A.Import:
        ref, alias = ch
        return A.Import(ref[0], ref[1], str(alias) if alias else None, [], _pos_of(meta))

    @v_args(meta=True)
    def import_from(self, meta: Any, ch: list[Any]) -> A.Import:
        ref, *names = [c for c in ch if c is not None]
        return A.Import(ref[0], ref[1], None, [str(n) for n in names], _pos_of(meta))

    def module_path(self, ch: list[Any]) -> tuple[str | None, str | None]:
        s = self._string(ch[0])
        if any(not isinstance(p, str) for p in s.parts):
            raise self._err("an import path cannot interpolate variables", ch[0].line, ch[0].column)
        return "".join(s.parts), None

    def module_name(self, ch: list[Any]) -> tuple[str | None, str | None]:
        return None, ".".join(str(c) for c in ch)

    @v_args(meta=True)
    def func_def(self, meta: Any, ch: list[Any]) -> A.FuncDef:
        name, params, ret, body = ch
        return A.FuncDef(str(name), params or [], ret, body, _pos_of(meta))

    def params(self, ch: list[Any]) -> list[A.Param]:
        return [c for c in ch if c is not None]

    @v_args(meta=True)
    def param(self, meta: Any, ch: list[Any]) -> A.Param:
        name, typ, default = ch
        return A.Param(str(name), typ, default, _pos_of(meta))

    @v_args(meta=True)
    def type_ref(self, meta: Any, ch: list[Any]) -> A.TypeRef:
        return A.TypeRef(str(ch[0]), [c for c in ch[1:] if c is not None], _pos_of(meta))

    def block(self, ch: list[Any]) -> list[A.Stmt]:
        return [c for c in ch if c is not None and not isinstance(c, Token)]

    # ---- statements ----
    @v_args(meta=True)
    def gen_stmt(self, meta: Any, ch: list[Any]) -> A.Gen:
        return A.Gen(str(ch[0]), ch[1] or [], _pos_of(meta))

    @v_args(meta=True)
    def select_stmt(self, meta: Any, ch: list[Any]) -> A.Select:
        return A.Select(str(ch[0]), ch[1] or [], _pos_of(meta))

    @v_args(meta=True)
    def role_stmt(self, meta: Any, ch: list[Any]) -> A.Role:
        return A.Role(str(ch[0]), ch[1], _pos_of(meta))

    @v_args(meta=True)
    def fork_n(self, meta: Any, ch: list[Any]) -> A.ForkN:
        name, count, idx, body = ch
        return A.ForkN(str(name), count, str(idx) if idx else None, body, _pos_of(meta))

    @v_args(meta=True)
    def fork_branches(self, meta: Any, ch: list[Any]) -> A.ForkBranches:
        return A.ForkBranches(str(ch[0]), list(ch[1:]), _pos_of(meta))

    def branch(self, ch: list[Any]) -> list[A.Stmt]:
        return ch[0]

    @v_args(meta=True)
    def join_stmt(self, meta: Any, ch: list[Any]) -> A.Join:
        name, mode = ch
        if mode is not None and str(mode) not in ("concat", "gather"):
            raise self._err(f"unknown join mode {str(mode)!r}", mode.line, mode.column,
                            "use 'join NAME' (wait, keep branch variables) or 'join NAME as concat'")
        return A.Join(str(name), None if mode is None or str(mode) == "gather" else "concat", _pos_of(meta))

    @v_args(meta=True)
    def if_stmt(self, meta: Any, ch: list[Any]) -> A.If:
        cond, body, *rest = ch
        orelse = rest.pop() if rest else None
        arms = [A.IfArm(cond, body, _pos_of(meta))] + [r for r in rest if r is not None]
        return A.If(arms, orelse, _pos_of(meta))

    @v_args(meta=True)
    def elif_clause(self, meta: Any, ch: list[Any]) -> A.IfArm:
        return A.IfArm(ch[0], ch[1], _pos_of(meta))

    def else_clause(self, ch: list[Any]) -> list[A.Stmt]:
        return ch[0]

    @v_args(meta=True)
    def for_stmt(self, meta: Any, ch: list[Any]) -> A.For:
        return A.For(str(ch[0]), ch[1], ch[2], _pos_of(meta))

    @v_args(meta=True)
    def while_stmt(self, meta: Any, ch: list[Any]) -> A.While:
        cond, limit, body = ch
        if limit is not None and ("." in str(limit) or "e" in str(limit).lower() or int(str(limit)) < 1):
            raise self._err(f"while ... max needs a whole number >= 1, got {limit}", limit.line, limit.column)
        return A.While(cond, int(str(limit)) if limit is not None else None, body, _pos_of(meta))

    @v_args(meta=True)
    def assign_stmt(self, meta: Any, ch: list[Any]) -> A.Assign:
        return A.Assign(str(ch[0]), ch[1], _pos_of(meta))

    @v_args(meta=True)
    def return_stmt(self, meta: Any, ch: list[Any]) -> A.Return:
        return A.Return([c for c in ch if c is not None], _pos_of(meta))

    @v_args(meta=True)
    def expr_stmt(self, meta: Any, ch: list[Any]) -> A.ExprStmt:
        return A.ExprStmt(ch[0], _pos_of(meta))

    # ---- expressions ----
    def args(self, ch: list[Any]) -> list[A.Arg]:
        return [c for c in ch if c is not None]

    @v_args(meta=True)
    def pos_arg(self, meta: Any, ch: list[Any]) -> A.Arg:
        return A.Arg(None, ch[0], _pos_of(meta))

    @v_args(meta=True)
    def kw_arg(self, meta: Any, ch: list[Any]) -> A.Arg:
        return A.Arg(str(ch[0]), ch[1], _pos_of(meta))

    @v_args(meta=True)
    def or_(self, meta: Any, ch: list[Any]) -> A.BinOp:
        return A.BinOp("or", ch[0], ch[1], _pos_of(meta))

    @v_args(meta=True)
    def and_(self, meta: Any, ch: list[Any]) -> A.BinOp:
        return A.BinOp("and", ch[0], ch[1], _pos_of(meta))

    @v_args(meta=True)
    def not_(self, meta: Any, ch: list[Any]) -> A.UnaryOp:
        return A.UnaryOp("not", ch[0], _pos_of(meta))

    @v_args(meta=True)
    def neg(self, meta: Any, ch: list[Any]) -> A.Expr:
        return A.UnaryOp("-", ch[0], _pos_of(meta))

    @v_args(meta=True)
    def compare(self, meta: Any, ch: list[Any]) -> A.BinOp:
        return A.BinOp(ch[1], ch[0], ch[2], _pos_of(meta))

    binop = compare

    def comp_op(self, ch: list[Any]) -> str:
        return " ".join(str(c) for c in ch)

    def add_op(self, ch: list[Any]) -> str:
        return str(ch[0])

    mul_op = add_op

    @v_args(meta=True)
    def index(self, meta: Any, ch: list[Any]) -> A.Index:
        return A.Index(ch[0], ch[1], _pos_of(meta))

    @v_args(meta=True)
    def attr(self, meta: Any, ch: list[Any]) -> A.Attr:
        return A.Attr(ch[0], str(ch[1]), _pos_of(meta))

    @v_args(meta=True)
    def call(self, meta: Any, ch: list[Any]) -> A.Call:
        func, args = ch
        name = _dotted(func)
        if name is None:
            raise self._err("only functions can be called (a name or module.name before '(')",
                            meta.line, meta.column)
        return A.Call(name, args or [], _pos_of(meta))

    def var(self, ch: list[Any]) -> A.Name:
        return A.Name(str(ch[0]), _pos_of(ch[0]))

    def number(self, ch: list[Any]) -> A.Const:
        s = str(ch[0])
        return A.Const(float(s) if any(c in s for c in ".eE") else int(s), _pos_of(ch[0]))

    def string(self, ch: list[Any]) -> A.Str:
        return self._string(ch[0])

    def true(self, ch: list[Any]) -> A.Const:
        return A.Const(True)

    def false(self, ch: list[Any]) -> A.Const:
        return A.Const(False)

    def none(self, ch: list[Any]) -> A.Const:
        return A.Const(None)

    @v_args(meta=True)
    def list_lit(self, meta: Any, ch: list[Any]) -> A.ListLit:
        return A.ListLit([c for c in ch if c is not None], _pos_of(meta))

    @v_args(meta=True)
    def dict_lit(self, meta: Any, ch: list[Any]) -> A.DictLit:
        return A.DictLit([c for c in ch if c is not None], _pos_of(meta))

    def pair(self, ch: list[Any]) -> tuple[A.Expr, A.Expr]:
        return ch[0], ch[1]


def _dotted(e: Any) -> str | None:
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Attr):
        base = _dotted(e.obj)
        return f"{base}.{e.name}" if base else None
    return None


def _expected_text(expected: Any) -> str:
    names = []
    parser = _parser()
    for t in sorted(expected or ()):
        if t in _FRIENDLY:
            names.append(_FRIENDLY[t])
            continue
        try:
            pat = parser.get_terminal(t).pattern
            names.append(repr(pat.value) if pat.type == "str" else t.lower())
        except KeyError:
            names.append(t)
    names = sorted(set(names))
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


KEYWORDS = frozenset("def gen select fork join branch if elif else for while in return import from as and or not "
                     "true false none let system user assistant".split())


@functools.lru_cache(maxsize=1)
def _known_mistakes() -> list[tuple[Any, str, str]]:
    """(parser state, offending token type, hint) for each snippet of _EXAMPLES."""
    out = []
    for label, snippets in _EXAMPLES.items():
        for snippet in snippets:
            try:
                _parser().parse(snippet, start="start")
            except UnexpectedToken as ut:
                out.append((_top_state(ut.state), ut.token.type, label))
            except UnexpectedInput:
                pass
    return out


def _top_state(state: Any) -> Any:
    # the LALR state on top of the stack: the stack's depth differs with what came before (an empty
    # parameter list, say) while the mistake is the same
    stack = getattr(state, "state_stack", None)
    return stack[-1] if stack else state


def _match_known_mistake(e: UnexpectedToken) -> str | None:
    # Same parser state AND same kind of offending token: a match on state alone is too loose
    # (every statement-start error shares one state).
    here = _top_state(e.state)
    for state, tok_type, label in _known_mistakes():
        if state == here and tok_type == e.token.type:
            return label
    return None


def _syntax_error(e: UnexpectedInput, parsed: str, file: str, text: str, hint: str | None = None) -> SglSyntaxError:
    line, col = getattr(e, "line", 0) or 0, getattr(e, "column", 0) or 0
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = parsed.rstrip().splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    if isinstance(e, UnexpectedCharacters):
        ch = parsed[e.pos_in_stream] if e.pos_in_stream < len(parsed) else ""
        if ch in "\"'":
            msg = "unterminated string"
            e.allowed = None  # the expected-token list would only distract here
            hint = hint or "close the quote on the same line, or use \"\"\"...\"\"\" for multi-line text"
        else:
            msg = f"unexpected character {ch!r}"
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        what = "end of file" if tok.type == "$END" else repr(str(tok))
        msg = f"unexpected {what}"
    else:
        msg = "unexpected end of file"
    label = _match_known_mistake(e) if isinstance(e, UnexpectedToken) else None
    if label is None and isinstance(e, UnexpectedToken) and str(e.token) in KEYWORDS \
            and "NAME" in (e.expected or ()):
        label = f"'{e.token}' is a reserved word and cannot be used as a name"
    expected = getattr(e, "expected", None) or getattr(e, "allowed", None)
    exp_txt = _expected_text(expected) if expected else ""
    parts = [p for p in (label, hint) if p]
    if exp_txt:
        parts.append(f"expected {exp_txt}")
    return SglSyntaxError(msg, SourcePos.of(text, file, line, col), "; ".join(parts) or None)


def _parse(text: str, file: str, start: str) -> Any:
    """Parse `text` from grammar rule `start` and build the AST; errors surface as SglSyntaxError."""
    check_nesting(text, file)
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, file, text) from None
    except RecursionError:
        raise _too_deep(file) from None
    try:
        return _Builder(text, file).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, SglSyntaxError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise _too_deep(file) from None
        raise
    except RecursionError:
        raise _too_deep(file) from None


def _too_deep(file: str) -> SglSyntaxError:
    # the AST builder recurses once per nesting level (blocks, and each operator of a long chain)
    return SglSyntaxError(f"{file}: the program nests too deeply to parse (deep blocks or a very long operator "
                          "chain)", hint="split it into `let` variables or functions; `sglc` and `sglang run` "
                                         "accept deeper programs than library calls")


def parse_source(text: str, file: str = "<string>") -> A.Module:
    """Parse a whole `.sgl` source; raises SglSyntaxError (never a lark or Python error) on bad input."""
    return _parse(strip_bom(text), file, "start")


def parse_expr(text: str, file: str = "<expr>") -> A.Expr:
    return _parse(text, file, "expr")


def parse_file(path: str | Path) -> A.Module:
    return parse_source(read_source(path), str(path))
