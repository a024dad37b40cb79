"""Expressions of the IR: conditions, loop iterables, interpolations, call arguments.

A tiny, side-effect-free language shared by tracing, the `.sgl` lowering and the plan executor:
constants, names (program arguments, generated variables, loop/fork index variables, or a variable
of one fork branch), unary/binary operators, indexing, list literals and calls of a fixed set of
pure builtins (`FUNCTIONS`). Every class is a frozen dataclass, so expressions hash and compare by
value; `expr_to_json` / `expr_from_json` give a stable JSON form, `expr_to_str` a Python-like one
for messages and dot labels, and `eval_expr` evaluates against an environment.
"""
from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Union


@dataclass(frozen=True)
class Const:
    value: Any  # str | int | float | bool | None | tuple of those


@dataclass(frozen=True)
class Name:
    """A variable. With `fork` (a Fork node id) and `branch`, the variable of that fork branch."""

    name: str
    fork: int | None = None
    branch: int | None = None


@dataclass(frozen=True)
class Unary:
    op: str  # "not" | "-"
    operand: "Expr"


@dataclass(frozen=True)
class Binary:
    op: str  # see BINARY_OPS
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Index:
    base: "Expr"
    index: "Expr"


@dataclass(frozen=True)
class ListExpr:
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class CallExpr:
    func: str  # a key of FUNCTIONS
    args: tuple["Expr", ...]


Expr = Union[Const, Name, Unary, Binary, Index, ListExpr, CallExpr]
EXPR_TYPES: dict[str, type] = {c.__name__: c for c in (Const, Name, Unary, Binary, Index, ListExpr, CallExpr)}


# An expression's values come from a program's arguments (a served program: from a request), so the
# operations that allocate in proportion to a number refuse sizes no prompt could use, before allocating.
MAX_SEQUENCE = 1 << 20


def _mul(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
            raise ValueError(f"a repetition of {len(seq)} x {n} items is longer than {MAX_SEQUENCE}")
    return operator.mul(a, b)


def _range(*args: int) -> tuple[int, ...]:
    r = range(*args)
    if len(r) > MAX_SEQUENCE:
        raise ValueError(f"range() of {len(r)} values is longer than {MAX_SEQUENCE}")
    return tuple(r)


def _and(a: Any, b: Any) -> Any:
    return a and b


def _or(a: Any, b: Any) -> Any:
    return a or b


BINARY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": _mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
    "and": _and, "or": _or,
}
UNARY_OPS: dict[str, Callable[[Any], Any]] = {"not": operator.not_, "-": operator.neg}

# Pure functions an expression may call (string helpers take the string first).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "int": int, "float": float, "str": str, "bool": bool, "abs": abs, "min": min,
    "max": max, "round": round, "range": _range,
    "lower": str.lower, "upper": str.upper, "strip": str.strip,
    "startswith": str.startswith, "endswith": str.endswith, "contains": lambda s, x: x in s,
}


def is_expr(x: Any) -> bool:
    return type(x).__name__ in EXPR_TYPES and type(x) is EXPR_TYPES[type(x).__name__]


def check_expr(e: Expr) -> None:
    """Raise ValueError naming the problem for an ill-formed expression."""
    for sub in walk_expr(e):
        if isinstance(sub, Binary) and sub.op not in BINARY_OPS:
            raise ValueError(f"unknown binary operator {sub.op!r}")
        if isinstance(sub, Unary) and sub.op not in UNARY_OPS:
            raise ValueError(f"unknown unary operator {sub.op!r}")
        if isinstance(sub, CallExpr) and sub.func not in FUNCTIONS:
            raise ValueError(f"unknown function {sub.func!r} in expression (allowed: {', '.join(FUNCTIONS)})")
        if not is_expr(sub):
            raise ValueError(f"not an IR expression: {sub!r}")


def walk_expr(e: Expr) -> Iterator[Expr]:
    """Pre-order walk over an expression and its sub-expressions."""
    yield e
    if isinstance(e, Unary):
        yield from walk_expr(e.operand)
    elif isinstance(e, Binary):
        yield from walk_expr(e.left)
        yield from walk_expr(e.right)
    elif isinstance(e, Index):
        yield from walk_expr(e.base)
        yield from walk_expr(e.index)
    elif isinstance(e, (ListExpr, CallExpr)):
        for item in (e.items if isinstance(e, ListExpr) else e.args):
            yield from walk_expr(item)


def names_in(e: Expr) -> list[Name]:
    return [x for x in walk_expr(e) if isinstance(x, Name)]


def map_expr(e: Expr, fn: Callable[[Expr], Expr]) -> Expr:
    """Rebuild bottom-up, applying `fn` to every node (children first)."""
    if isinstance(e, Unary):
        e = Unary(e.op, map_expr(e.operand, fn))
    elif isinstance(e, Binary):
        e = Binary(e.op, map_expr(e.left, fn), map_expr(e.right, fn))
    elif isinstance(e, Index):
        e = Index(map_expr(e.base, fn), map_expr(e.index, fn))
    elif isinstance(e, ListExpr):
        e = ListExpr(tuple(map_expr(i, fn) for i in e.items))
    elif isinstance(e, CallExpr):
        e = CallExpr(e.func, tuple(map_expr(a, fn) for a in e.args))
    return fn(e)


def substitute(e: Expr, values: Mapping[str, Any]) -> Expr:
    """Replace plain Names found in `values` by constants, then fold constant sub-trees."""

    def sub(x: Expr) -> Expr:
        if isinstance(x, Name) and x.fork is None and x.name in values:
            return Const(values[x.name])
        return fold(x)

    return map_expr(e, sub)


def fold(e: Expr) -> Expr:
    """Evaluate `e` when it has no names (one level: children are assumed already folded)."""
    if isinstance(e, Const) or any(isinstance(x, Name) for x in walk_expr(e)):
        return e
    try:
        return Const(_freeze(eval_expr(e, {})))
    except Exception:  # a runtime error stays for run time, with its source location
        return e


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def eval_expr(e: Expr, env: Mapping[str, Any], lookup_fork: Callable[[int, int, str], Any] | None = None) -> Any:
    """Evaluate; plain names come from `env`, fork-branch names from `lookup_fork(fork, branch, name)`."""
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Name):
        if e.fork is not None:
            if lookup_fork is None:
                raise NameError(f"fork variable {e.name!r} of fork {e.fork} has no value here")
            return lookup_fork(e.fork, e.branch if e.branch is not None else 0, e.name)
        if e.name not in env:
            raise NameError(f"variable {e.name!r} has no value")
        return env[e.name]
    if isinstance(e, Unary):
        return UNARY_OPS[e.op](eval_expr(e.operand, env, lookup_fork))
    if isinstance(e, Binary):
        left = eval_expr(e.left, env, lookup_fork)
        if e.op == "and" and not left or e.op == "or" and left:  # short-circuit as Python does
            return left
        return BINARY_OPS[e.op](left, eval_expr(e.right, env, lookup_fork))
    if isinstance(e, Index):
        return eval_expr(e.base, env, lookup_fork)[eval_expr(e.index, env, lookup_fork)]
    if isinstance(e, ListExpr):
        return [eval_expr(i, env, lookup_fork) for i in e.items]
    if isinstance(e, CallExpr):
        if e.func not in FUNCTIONS:
            raise ValueError(f"unknown function {e.func!r} in expression")
        return FUNCTIONS[e.func](*(eval_expr(a, env, lookup_fork) for a in e.args))
    raise TypeError(f"not an IR expression: {e!r}")


_PREC = {"or": 1, "and": 2, "not": 3, "in": 4, "not in": 4, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4,
         ">=": 4, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6}


def expr_to_str(e: Expr, prec: int = 0) -> str:
    """Python-like rendering, parenthesized where precedence needs it."""
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Name):
        return e.name if e.fork is None else f"fork{e.fork}[{e.branch}][{e.name!r}]"
    if isinstance(e, Unary):
        p = 3 if e.op == "not" else 7
        s = f"not {expr_to_str(e.operand, p)}" if e.op == "not" else f"-{expr_to_str(e.operand, p)}"
    elif isinstance(e, Binary):
        p = _PREC[e.op]
        s = f"{expr_to_str(e.left, p)} {e.op} {expr_to_str(e.right, p + 1)}"
    elif isinstance(e, Index):
        return f"{expr_to_str(e.base, 9)}[{expr_to_str(e.index)}]"
    elif isinstance(e, ListExpr):
        return "[" + ", ".join(expr_to_str(i) for i in e.items) + "]"
    elif isinstance(e, CallExpr):
        return f"{e.func}(" + ", ".join(expr_to_str(a) for a in e.args) + ")"
    else:
        return repr(e)
    return f"({s})" if p < prec else s


def expr_to_json(e: Expr) -> dict[str, Any]:
    out: dict[str, Any] = {"expr": type(e).__name__}
    for f in dataclasses.fields(e):
        v = getattr(e, f.name)
        if isinstance(e, Name) and v is None and f.name != "name":
            continue  # omit unset fork/branch for compact artifacts
        out[f.name] = _value_to_json(v)
    return out


def _value_to_json(v: Any) -> Any:
    if is_expr(v):
        return expr_to_json(v)
    if isinstance(v, tuple):
        return [_value_to_json(x) for x in v]
    return v


def expr_from_json(d: Mapping[str, Any]) -> Expr:
    kind = d.get("expr")
    cls = EXPR_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown expression kind {kind!r} in IR JSON")
    kwargs = {k: value_from_json(v) for k, v in d.items() if k != "expr"}
    return cls(**kwargs)


def value_from_json(v: Any) -> Any:
    """Inverse of the JSON encoding of node fields: lists become tuples, expression dicts Exprs."""
    if isinstance(v, list):
        return tuple(value_from_json(x) for x in v)
    if isinstance(v, dict):
        if "expr" not in v:
            raise ValueError(f"unexpected object in IR JSON: {v!r}")
        return expr_from_json(v)
    return v
