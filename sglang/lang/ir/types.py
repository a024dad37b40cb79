"""Static types of the program IR: the rules for expressions (`infer_expr`) and the checker of a whole
function (`check_types`), shared by the `.sgl` lowering (which reports at the exact expression) and
`compile_ir` (every frontend: `.sgl`, traced Python, before serving).

Types are what a value holds at run time, as the executors keep it (`lang/gen_rules.py`): a gen or select
variable holds its generated text, so it is `str` whatever its dtype. `Ty.dtype` records that the text
parses as an int/float/bool (a gen with `dtype=`), which lets a declared `-> int` return it (converted
when the program returns, `coerce_return`); `Ty.values` records the strings a value can be (a select's
choices, a string constant), so `verdict == "maybe"` against choices yes/no is an error: it never holds.

Errors are `TypeMismatch` (expressions: the message and the failing sub-expression) and `IRError`
(the checker: node and source location), never a Python traceback at run time instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from sglang.lang.ir.expr import Binary, CallExpr, Const, Expr, Index, ListExpr, Name, Unary, expr_to_str
from sglang.lang.ir.ops import Branch, Fork, Gen, Image, IRError, Join, Loop, Return, Select, Video, op_exprs

# what a declared parameter / return type means as a value type (image / video arguments are paths or URLs)
DECLARED = {"str": "str", "int": "int", "float": "float", "bool": "bool", "list": "list", "dict": "dict",
            "image": "str", "video": "str", "any": "any"}
_NUMBERS = ("int", "float", "bool")  # bool is an int, as in Python


@dataclass(frozen=True)
class Ty:
    name: str  # str int float bool list dict none any
    dtype: Optional[str] = None  # str only: the type its text parses as (a gen with dtype=)
    values: Optional[tuple[str, ...]] = None  # str only: every string it can be (select choices, a constant)

    def __str__(self) -> str:
        return self.name


ANY, STR, INT, FLOAT, BOOL, LIST, DICT, NONE = (Ty(n) for n in ("any", "str", "int", "float", "bool", "list",
                                                                 "dict", "none"))


class TypeMismatch(Exception):
    """An ill-typed expression: `message` says why, `expr` is the failing sub-expression."""

    def __init__(self, message: str, expr: Any = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.expr, self.hint = message, expr, hint


def declared(name: str | None) -> Ty:
    """The value type of a declared type name (`list[str]` is a list)."""
    if not name:
        return ANY
    return Ty(DECLARED.get(name.split("[", 1)[0], "any"))


def gen_type(op: Gen) -> Ty:
    return Ty("str", dtype=op.dtype if op.dtype in ("int", "float", "bool") else None)


def select_type(op: Select) -> Ty:
    return Ty("str", values=tuple(op.choices) if isinstance(op.choices, tuple) else None)


def value_type(v: Any) -> Ty:
    if v is None:
        return NONE
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, str):
        return Ty("str", values=(v,))
    if isinstance(v, (tuple, list)):
        return LIST
    return {int: INT, float: FLOAT, dict: DICT}.get(type(v), ANY)


def join(a: Ty, b: Ty) -> Ty:
    """The type of a value that is `a` on some paths and `b` on others."""
    if a == b:
        return a
    if a.name != b.name:
        return ANY
    values = tuple(dict.fromkeys(a.values + b.values)) if a.values is not None and b.values is not None else None
    return Ty(a.name, a.dtype if a.dtype == b.dtype else None, values)


# ---------------------------------------------------------------- expression rules
def _is_num(t: Ty) -> bool:
    return t.name in _NUMBERS


def _num(a: Ty, b: Ty) -> Ty:
    return FLOAT if "float" in (a.name, b.name) else INT


def _hint_for(op: str, a: Ty, b: Ty) -> str | None:
    if {a.name, b.name} == {"str", "int"} or {a.name, b.name} == {"str", "float"}:
        text = next(t for t in (a, b) if t.name == "str")
        if text.dtype:
            return f"the str holds generated text (dtype={text.dtype}); convert it with {text.dtype}(...)"
        return "convert one side: str(...) to join text, or int(...) / float(...) to compute"
    return None


def binary_type(op: str, a: Ty, b: Ty) -> Ty:
    """The result type of `a op b`, or TypeMismatch (Python would raise, or the test can never hold)."""
    if op in ("and", "or"):
        return join(a, b)
    if op in ("==", "!="):
        _check_equality(op, a, b)
        return BOOL
    if "any" in (a.name, b.name):
        return BOOL if op in ("<", "<=", ">", ">=", "in", "not in") else (a if b.name == "any" and op == "+" and
                                                                        a.name in ("str", "list") else ANY)
    if op in ("in", "not in"):
        if b.name == "str" and a.name == "str" or b.name in ("list", "dict"):
            return BOOL
        if b.name == "str":
            raise TypeMismatch(f"'{op}' looks for a str inside a str, not a {a}", hint=_hint_for(op, a, b))
        raise TypeMismatch(f"'{op}' needs a str, list or dict on the right, not a {b}")
    if op in ("<", "<=", ">", ">="):
        if _is_num(a) and _is_num(b) or a.name == b.name and a.name in ("str", "list"):
            return BOOL
        raise TypeMismatch(f"cannot compare {a} with {b} ('{op}')", hint=_hint_for(op, a, b))
    if _is_num(a) and _is_num(b):
        return FLOAT if op == "/" else _num(a, b)
    if op == "+" and a.name == b.name and a.name in ("str", "list"):
        return Ty(a.name)
    if op == "*" and {a.name, b.name} in ({"str", "int"}, {"list", "int"}):
        return Ty("str" if "str" in (a.name, b.name) else "list")
    if op == "%" and a.name == "str":
        return STR
    verb = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "//": "divide", "%": "take % of"}
    raise TypeMismatch(f"cannot {verb.get(op, 'apply ' + op + ' to')} {a} and {b} ('{op}')",
                       hint=_hint_for(op, a, b))


def _check_equality(op: str, a: Ty, b: Ty) -> None:
    never = "true" if op == "!=" else "false"
    if "any" not in (a.name, b.name) and a.name != b.name and not (_is_num(a) and _is_num(b)) \
            and "none" not in (a.name, b.name):
        raise TypeMismatch(f"'{op}' compares {a} with {b}: it is always {never}", hint=_hint_for(op, a, b))
    if a.values is not None and b.values is not None and not set(a.values) & set(b.values):
        few, many = (a, b) if len(a.values) <= len(b.values) else (b, a)
        raise TypeMismatch(f"'{op}' is always {never}: {few.values[0]!r} is not one of "
                           f"{', '.join(map(repr, many.values))}")


def unary_type(op: str, a: Ty) -> Ty:
    if op == "not":
        return BOOL
    if a.name == "any" or _is_num(a):
        return a if a.name != "bool" else INT
    raise TypeMismatch(f"cannot negate {a} ('-')")


def index_type(base: Ty, index: Ty) -> Ty:
    if base.name == "str":
        if index.name not in ("int", "bool", "any"):
            raise TypeMismatch(f"a str is indexed by an int, not {index}")
        return STR
    if base.name in ("list", "dict", "any"):
        return ANY
    raise TypeMismatch(f"cannot index {base} ([...])")


# builtin -> (argument kinds or None for any, result); "num" is int/float/bool, "seq" str/list/dict
_CALLS: dict[str, tuple[Optional[tuple[str, ...]], Ty]] = {
    "len": (("seq",), INT), "int": (None, INT), "float": (None, FLOAT), "str": (None, STR), "bool": (None, BOOL),
    "abs": (("num",), ANY), "min": (None, ANY), "max": (None, ANY), "round": (("num", "num"), ANY),
    "range": (("num", "num", "num"), LIST), "lower": (("str",), STR), "upper": (("str",), STR),
    "strip": (("str",), STR), "startswith": (("str", "str"), BOOL), "endswith": (("str", "str"), BOOL),
    "contains": (("str", "str"), BOOL),
}
_KIND_OK = {"num": _NUMBERS, "seq": ("str", "list", "dict"), "str": ("str",)}


def call_type(func: str, args: list[Ty]) -> Ty:
    kinds, result = _CALLS.get(func, (None, ANY))
    for i, t in enumerate(args):
        if kinds is not None and i < len(kinds) and t.name != "any" and t.name not in _KIND_OK[kinds[i]]:
            raise TypeMismatch(f"{func}() takes {'a number' if kinds[i] == 'num' else 'a ' + kinds[i]} "
                               f"as argument {i + 1}, got {t}")
    if func in ("abs", "min", "max"):  # the type of its arguments when they agree
        names = {t.name for t in args}
        return Ty(names.pop()) if len(names) == 1 else ANY
    if func == "round":
        return INT if len(args) == 1 else ANY
    if func == "int" and args and args[0].name == "str" and args[0].values is not None:
        _check_parses(args[0], int, "int")
    return result


def _check_parses(t: Ty, conv: Callable[[str], Any], name: str) -> None:
    for v in t.values or ():
        try:
            conv(v)
        except ValueError:
            raise TypeMismatch(f"{name}({v!r}) fails: {v!r} is not a number") from None


def infer_expr(e: Expr, lookup: Callable[[Name], Ty], memo: dict[int, tuple[Any, Ty]] | None = None) -> Ty:
    """The type of `e` (names typed by `lookup`); TypeMismatch for the first ill-typed sub-expression.
    `memo` (id -> (expr, type)) lets a caller that builds expressions bottom-up type each node once."""
    if memo is not None and id(e) in memo:
        return memo[id(e)][1]
    t = _infer(e, lookup, memo)
    if memo is not None:
        memo[id(e)] = (e, t)  # the expression is kept alive, so its id is not reused
    return t


def _infer(e: Expr, lookup: Callable[[Name], Ty], memo: Any) -> Ty:
    if isinstance(e, Const):
        return value_type(e.value)
    if isinstance(e, Name):
        return lookup(e)
    try:
        if isinstance(e, Binary):
            return binary_type(e.op, infer_expr(e.left, lookup, memo), infer_expr(e.right, lookup, memo))
        if isinstance(e, Unary):
            return unary_type(e.op, infer_expr(e.operand, lookup, memo))
        if isinstance(e, Index):
            return index_type(infer_expr(e.base, lookup, memo), infer_expr(e.index, lookup, memo))
        if isinstance(e, ListExpr):
            for item in e.items:
                infer_expr(item, lookup, memo)
            return LIST
        if isinstance(e, CallExpr):
            return call_type(e.func, [infer_expr(a, lookup, memo) for a in e.args])
    except TypeMismatch as m:
        if m.expr is None:  # the innermost failing expression names itself
            m.expr = e
        raise
    return ANY


def describe_mismatch(m: TypeMismatch) -> str:
    return f"{m.message} in `{expr_to_str(m.expr)}`" if m.expr is not None else m.message


# ---------------------------------------------------------------- return values
def return_problem(have: Ty, want: str | None) -> str | None:
    """Why a value of type `have` cannot be returned as the declared `want` (None: it can)."""
    w = declared(want).name
    if w == "any" or have.name == "any":
        return None
    if have.name == w or w == "float" and have.name in ("int", "bool"):
        return None
    if have.name == "str" and have.dtype is not None and (have.dtype == w or w == "float" and have.dtype == "int"):
        return None  # generated under that dtype: converted when the program returns
    if have.name == "str" and w in ("int", "float", "bool"):
        return (f"the function declares -> {want} but returns generated text (str); give the gen dtype={w}, "
                f"or return {w}(...)")
    return f"the function declares -> {want} but returns {have}"


def coerce_return(value: Any, want: str | None) -> Any:
    """A returned value as its declared type: the text of a typed gen becomes the number / bool it spells."""
    w = declared(want).name
    if not isinstance(value, str) or w not in ("int", "float", "bool"):
        return value
    text = value.strip()
    try:
        if w == "bool":
            return {"true": True, "false": False}[text.lower()]
        return int(text) if w == "int" else float(text)
    except (KeyError, ValueError):
        raise ValueError(f"returns {value!r}, which is not a {w} (declared -> {want})") from None


# ---------------------------------------------------------------- the function checker
class _Checker:
    def __init__(self, fn: Any, param_types: dict[str, str], returns: str | None) -> None:
        self.fn, self.returns = fn, returns
        self.params = {p: declared(param_types.get(p)) for p in fn.params}
        self.forks: dict[int, list[dict[str, Ty]]] = {}

    def fail(self, node: int | None, msg: str) -> None:
        op = self.fn.op(node) if node is not None else None
        loc = self.fn.loc_of(node) if node is not None else self.fn.loc
        raise IRError(msg, node=node, op=op, loc=loc, function=self.fn.name)

    def infer(self, node: int, e: Expr, scope: dict[str, Ty], local: dict[str, Ty]) -> Ty:
        def lookup(n: Name) -> Ty:
            if n.fork is not None:
                branches = self.forks.get(n.fork, [{}])
                return branches[min(n.branch or 0, len(branches) - 1)].get(n.name, ANY)
            if n.name in local:
                return local[n.name]
            return scope.get(n.name, self.params.get(n.name, ANY))

        try:
            return infer_expr(e, lookup)
        except TypeMismatch as m:
            self.fail(node, describe_mismatch(m) + (f" (hint: {m.hint})" if m.hint else ""))
            raise  # pragma: no cover - fail raises

    def region(self, parent: int | None, arm: int, scope: dict[str, Ty], local: dict[str, Ty]) -> dict[str, Ty]:
        for node in self.fn.region(parent, arm):
            self.op(node, self.fn.op(node), scope, local)
        return scope

    def op(self, node: int, op: Any, scope: dict[str, Ty], local: dict[str, Ty]) -> None:
        if isinstance(op, Return):
            self.ret(node, op, scope, local)
            return
        types = [self.infer(node, e, scope, local) for e in op_exprs(op)]
        if isinstance(op, Gen) and op.name:
            scope[op.name] = gen_type(op)
        elif isinstance(op, Select):
            if types and types[0].name not in ("list", "any"):
                self.fail(node, f"select choices must be a list, got {types[0]}")
            if op.name:
                scope[op.name] = select_type(op)
        elif isinstance(op, (Image, Video)) and types[0].name not in ("str", "any"):
            self.fail(node, f"{type(op).__name__.lower()} needs a path or URL (str), got {types[0]}")
        elif isinstance(op, Branch):
            self.branch(node, op, scope, local)
        elif isinstance(op, Loop):
            self.loop(node, op, types, scope, local)
        elif isinstance(op, Fork):
            self.fork(node, op, types, scope, local)
        elif isinstance(op, Join) and op.mode == "gather_variable":
            for name in {n for b in self.forks.get(op.fork, []) for n in b if n not in scope}:
                scope[name] = LIST  # each branch's value, gathered

    def branch(self, node: int, op: Branch, scope: dict[str, Ty], local: dict[str, Ty]) -> None:
        outs = [self.region(node, a, dict(scope), local) for a in range(len(op.conds))]
        for name in {n for o in outs for n in o}:
            t: Ty | None = scope.get(name)
            for o in outs:
                if name in o:
                    t = o[name] if t is None else join(t, o[name])
            scope[name] = t  # type: ignore[assignment]

    def loop(self, node: int, op: Loop, types: list[Ty], scope: dict[str, Ty], local: dict[str, Ty]) -> None:
        inner = dict(local)
        if op.iterable is not None:
            it = types[0]
            if it.name in ("float", "bool", "none"):
                self.fail(node, f"cannot loop over a {it} (a list, str, int or dict can be)")
            if op.var:
                inner[op.var] = {"str": STR, "int": INT}.get(it.name, ANY)
        out = self.region(node, 0, dict(scope), inner)
        for name, t in out.items():  # the body may run zero times
            scope[name] = join(scope[name], t) if name in scope else t

    def fork(self, node: int, op: Fork, types: list[Ty], scope: dict[str, Ty], local: dict[str, Ty]) -> None:
        if types and types[0].name not in ("int", "any"):
            self.fail(node, f"a fork count must be an int, got {types[0]}")
        inner = dict(local, **({op.index_var: INT} if op.index_var else {}))
        arms = 1 if op.shared_body or not isinstance(op.n, int) else op.n
        self.forks[node] = [self.region(node, a, dict(scope), inner) for a in range(arms)]

    def ret(self, node: int, op: Return, scope: dict[str, Ty], local: dict[str, Ty]) -> None:
        if op.value is None:
            have = NONE
        else:
            have = self.infer(node, op.value, scope, local)
            kind = self.fn.attrs.get("return_kind")
            have = DICT if kind == "dict" else LIST if kind == "tuple" else have
        if self.returns:
            problem = return_problem(have, self.returns) if op.value is not None else \
                f"the function declares -> {self.returns} but returns nothing"
            if problem:
                self.fail(node, problem)


def _returns(fn: Any) -> bool:
    return any(isinstance(fn.op(n), Return) and fn.op(n).value is not None for n in fn.graph.nodes)


def check_types(fn: Any) -> None:
    """Type-check an `IRFunction` (parameter types from `fn.attrs["param_types"]`, the declared return type
    from `fn.attrs["returns"]`); the first problem is an IRError at its node's source location."""
    returns = fn.attrs.get("returns")
    checker = _Checker(fn, dict(fn.attrs.get("param_types", {})), returns)
    checker.region(None, 0, {}, {})
    if returns and declared(returns).name not in ("any", "none") and not _returns(fn):
        checker.fail(None, f"the function declares -> {returns} but never returns a value")


__all__ = ["ANY", "DECLARED", "Ty", "TypeMismatch", "binary_type", "call_type", "check_types", "coerce_return",
           "declared", "describe_mismatch", "gen_type", "index_type", "infer_expr", "join", "return_problem",
           "select_type", "unary_type", "value_type"]
