"""AST of the `.sgl` language (see lang/sgl.lark and docs/language.md).

Plain dataclasses; `pos` (line, col) never takes part in equality so that parse → pretty-print → parse
round-trips compare equal. `pretty(module)` prints a module back as canonical `.sgl` source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Pos:
    line: int = 0
    col: int = 0


def _pos() -> Any:
    return field(default_factory=Pos, compare=False, repr=False)


# ---------------- expressions ----------------
@dataclass
class Const:
    value: Any  # int | float | bool | None
    pos: Pos = _pos()


@dataclass
class Str:
    """A string literal; `parts` alternate literal text (str) and interpolated expressions."""

    parts: list[Any]
    pos: Pos = _pos()


@dataclass
class Name:
    id: str
    pos: Pos = _pos()


@dataclass
class ListLit:
    items: list["Expr"]
    pos: Pos = _pos()


@dataclass
class DictLit:
    pairs: list[tuple["Expr", "Expr"]]
    pos: Pos = _pos()


@dataclass
class BinOp:
    op: str  # + - * / // % == != < > <= >= in "not in" and or
    left: "Expr"
    right: "Expr"
    pos: Pos = _pos()


@dataclass
class UnaryOp:
    op: str  # not | -
    operand: "Expr"
    pos: Pos = _pos()


@dataclass
class Index:
    obj: "Expr"
    index: "Expr"
    pos: Pos = _pos()


@dataclass
class Attr:
    obj: "Expr"
    name: str
    pos: Pos = _pos()


@dataclass
class Arg:
    name: str | None  # None for a positional argument
    value: "Expr"
    pos: Pos = _pos()


@dataclass
class Call:
    func: str  # "f" or "module.f"
    args: list[Arg]
    pos: Pos = _pos()


Expr = Union[Const, Str, Name, ListLit, DictLit, BinOp, UnaryOp, Index, Attr, Call]


# ---------------- statements ----------------
@dataclass
class Gen:
    name: str
    args: list[Arg]
    pos: Pos = _pos()


@dataclass
class Select:
    name: str
    args: list[Arg]
    pos: Pos = _pos()


@dataclass
class Role:
    role: str  # system | user | assistant
    body: list["Stmt"]
    pos: Pos = _pos()


@dataclass
class ForkN:
    name: str
    count: Expr
    index_var: str | None
    body: list["Stmt"]
    pos: Pos = _pos()


@dataclass
class ForkBranches:
    name: str
    branches: list[list["Stmt"]]
    pos: Pos = _pos()


@dataclass
class Join:
    name: str
    mode: str | None  # None (gather variables) | "concat"
    pos: Pos = _pos()


@dataclass
class IfArm:
    cond: Expr
    body: list["Stmt"]
    pos: Pos = _pos()


@dataclass
class If:
    arms: list[IfArm]  # if + elifs
    orelse: list["Stmt"] | None
    pos: Pos = _pos()


@dataclass
class For:
    var: str
    iter: Expr
    body: list["Stmt"]
    pos: Pos = _pos()


@dataclass
class While:
    cond: Expr
    max_iters: int | None
    body: list["Stmt"]
    pos: Pos = _pos()


@dataclass
class Assign:
    name: str
    value: Expr
    pos: Pos = _pos()


@dataclass
class Return:
    values: list[Expr]
    pos: Pos = _pos()


@dataclass
class ExprStmt:
    expr: Expr
    pos: Pos = _pos()


Stmt = Union[Gen, Select, Role, ForkN, ForkBranches, Join, If, For, While, Assign, Return, ExprStmt]


# ---------------- top level ----------------
@dataclass
class TypeRef:
    name: str
    args: list["TypeRef"] = field(default_factory=list)
    pos: Pos = _pos()

    def __str__(self) -> str:
        return self.name + (f"[{', '.join(map(str, self.args))}]" if self.args else "")


@dataclass
class Param:
    name: str
    type: TypeRef | None
    default: Expr | None
    pos: Pos = _pos()


@dataclass
class FuncDef:
    name: str
    params: list[Param]
    returns: TypeRef | None
    body: list[Stmt]
    pos: Pos = _pos()


@dataclass
class Import:
    """`import X [as A]` (names empty) or `from X import a, b`. X is a path (quoted) or a module name."""

    path: str | None
    module: str | None
    alias: str | None
    names: list[str]
    pos: Pos = _pos()


@dataclass
class Module:
    imports: list[Import]
    functions: list[FuncDef]
    file: str = field(default="<string>", compare=False)

    def function(self, name: str) -> FuncDef | None:
        return next((f for f in self.functions if f.name == name), None)


# ---------------- pretty printer ----------------
_PREC = {"or": 1, "and": 2, "not": 3, "==": 4, "!=": 4, "<": 4, ">": 4, "<=": 4, ">=": 4, "in": 4,
         "not in": 4, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}


def _quote(parts: list[Any]) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            s = json.dumps(p, ensure_ascii=False)[1:-1]  # escapes quotes, backslashes, newlines
            out.append(s.replace("{", "{{").replace("}", "}}"))
        else:
            out.append("{" + pretty_expr(p) + "}")
    return '"' + "".join(out) + '"'


def pretty_expr(e: Expr, prec: int = 0) -> str:
    if isinstance(e, Const):
        return {True: "true", False: "false", None: "none"}.get(e.value, repr(e.value)) \
            if e.value is None or isinstance(e.value, bool) else repr(e.value)
    if isinstance(e, Str):
        return _quote(e.parts)
    if isinstance(e, Name):
        return e.id
    if isinstance(e, ListLit):
        return "[" + ", ".join(pretty_expr(i) for i in e.items) + "]"
    if isinstance(e, DictLit):
        return "{" + ", ".join(f"{pretty_expr(k)}: {pretty_expr(v)}" for k, v in e.pairs) + "}"
    if isinstance(e, Index):
        return f"{pretty_expr(e.obj, 9)}[{pretty_expr(e.index)}]"
    if isinstance(e, Attr):
        return f"{pretty_expr(e.obj, 9)}.{e.name}"
    if isinstance(e, Call):
        return f"{e.func}({pretty_args(e.args)})"
    if isinstance(e, UnaryOp):
        p = 3 if e.op == "not" else 7
        s = f"not {pretty_expr(e.operand, p)}" if e.op == "not" else f"-{pretty_expr(e.operand, p)}"
    elif isinstance(e, BinOp):
        p = _PREC[e.op]
        s = f"{pretty_expr(e.left, p)} {e.op} {pretty_expr(e.right, p + 1)}"
    else:
        raise TypeError(f"not an expression: {e!r}")
    return f"({s})" if p < prec else s


def pretty_args(args: list[Arg]) -> str:
    return ", ".join((f"{a.name}={pretty_expr(a.value)}" if a.name else pretty_expr(a.value)) for a in args)


def _block(body: list[Stmt], ind: int) -> str:
    if not body:
        return "{ }"
    inner = "\n".join(pretty_stmt(s, ind + 1) for s in body)
    return "{\n" + inner + "\n" + "    " * ind + "}"


def pretty_stmt(s: Stmt, ind: int = 0) -> str:
    pad = "    " * ind
    if isinstance(s, Gen):
        return f"{pad}gen {s.name}" + (f"({pretty_args(s.args)})" if s.args else "")
    if isinstance(s, Select):
        return f"{pad}select {s.name}({pretty_args(s.args)})"
    if isinstance(s, Role):
        return f"{pad}{s.role} {_block(s.body, ind)}"
    if isinstance(s, ForkN):
        idx = f" as {s.index_var}" if s.index_var else ""
        return f"{pad}fork {s.name}[{pretty_expr(s.count)}]{idx} {_block(s.body, ind)}"
    if isinstance(s, ForkBranches):
        br = "\n".join(f"{pad}    branch {_block(b, ind + 1)}" for b in s.branches)
        return f"{pad}fork {s.name} {{\n{br}\n{pad}}}"
    if isinstance(s, Join):
        return f"{pad}join {s.name}" + (f" as {s.mode}" if s.mode else "")
    if isinstance(s, If):
        out = f"{pad}if {pretty_expr(s.arms[0].cond)} {_block(s.arms[0].body, ind)}"
        for arm in s.arms[1:]:
            out += f" elif {pretty_expr(arm.cond)} {_block(arm.body, ind)}"
        if s.orelse is not None:
            out += f" else {_block(s.orelse, ind)}"
        return out
    if isinstance(s, For):
        return f"{pad}for {s.var} in {pretty_expr(s.iter)} {_block(s.body, ind)}"
    if isinstance(s, While):
        limit = f" max {s.max_iters}" if s.max_iters is not None else ""
        return f"{pad}while {pretty_expr(s.cond)}{limit} {_block(s.body, ind)}"
    if isinstance(s, Assign):
        return f"{pad}let {s.name} = {pretty_expr(s.value)}"
    if isinstance(s, Return):
        return f"{pad}return" + (" " + ", ".join(pretty_expr(v) for v in s.values) if s.values else "")
    if isinstance(s, ExprStmt):
        return f"{pad}{pretty_expr(s.expr)};"  # ';' keeps a following '(' or '[' from joining it
    raise TypeError(f"not a statement: {s!r}")


def pretty(module: Module) -> str:
    out = []
    for imp in module.imports:
        ref = json.dumps(imp.path) if imp.path is not None else imp.module
        if imp.names:
            out.append(f"from {ref} import {', '.join(imp.names)}")
        else:
            out.append(f"import {ref}" + (f" as {imp.alias}" if imp.alias else ""))
    for f in module.functions:
        params = ", ".join(
            p.name + (f": {p.type}" if p.type else "") + (f" = {pretty_expr(p.default)}" if p.default else "")
            for p in f.params)
        ret = f" -> {f.returns}" if f.returns else ""
        out.append(f"\ndef {f.name}({params}){ret} {_block(f.body, 0)}")
    return "\n".join(out).lstrip("\n") + "\n"
