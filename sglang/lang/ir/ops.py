"""The IR's vocabulary: op node types, source locations, `IRError`, and per-op helpers.

Ops are frozen dataclasses that compare by meaning only (a node's source `Loc` is kept on the graph,
outside the op). This module knows single ops, never the graph: `graph.IRFunction` links ops into
regions, `check` validates a whole function. What each op means is in `graph`'s docstring.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Union

from sglang.lang.gen_rules import CHOICES_METHODS, NATIVE_GEN_FIELDS, frontend_name  # noqa: F401 (re-exported)

from sglang.lang.ir.expr import Expr, Name, expr_to_json, expr_to_str, is_expr, map_expr, value_from_json

ROLES = ("system", "user", "assistant")
JOIN_MODES = ("gather_variable", "concate_and_append")


@dataclass(frozen=True)
class Loc:
    file: Optional[str] = None
    line: Optional[int] = None
    col: Optional[int] = None

    def __str__(self) -> str:
        parts = [self.file or "<unknown>"] + [str(x) for x in (self.line, self.col) if x is not None]
        return ":".join(parts)


class IRError(ValueError):
    """An invalid IR (or program), naming the node, its op and its source location."""

    def __init__(self, message: str, node: int | None = None, op: Any = None, loc: Loc | None = None,
                 function: str | None = None) -> None:
        self.node, self.op, self.loc, self.function, self.reason = node, op, loc, function, message
        where = f"{loc}: " if loc is not None else ""
        what = []
        if function:
            what.append(f"function {function!r}")
        if node is not None:
            what.append(f"node {node} ({describe(op)})" if op is not None else f"node {node}")
        super().__init__(f"{where}{message}" + (f" [{', '.join(what)}]" if what else ""))


# ---------------------------------------------------------------- node types (ops)
@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class Arg:
    name: str


@dataclass(frozen=True)
class VarRef:
    name: str
    fork: Optional[int] = None  # Fork node id when reading a fork branch's variable
    branch: Optional[int] = None


@dataclass(frozen=True)
class Interp:
    expr: Expr


@dataclass(frozen=True)
class Gen:
    """Generate into variable `name` (None: append only). None fields inherit the run defaults."""

    name: Optional[str] = None
    max_tokens: Optional[int] = None
    min_tokens: Optional[int] = None
    stop: Optional[tuple[str, ...]] = None
    stop_token_ids: Optional[tuple[int, ...]] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    ignore_eos: Optional[bool] = None
    regex: Optional[str] = None
    json_schema: Optional[str] = None  # a JSON string (gen_rules.json_schema_text: key order kept)
    dtype: Optional[str] = None  # "int" | "str" | "float" | "bool"
    return_logprob: Optional[bool] = None
    logprob_start_len: Optional[int] = None
    top_logprobs_num: Optional[int] = None
    return_text_in_logprobs: Optional[bool] = None

    def sampling_params(self) -> dict[str, Any]:
        """The native `sampling_params` keys this gen sets (docs/ARCHITECTURE.md)."""
        out: dict[str, Any] = {}
        for native in NATIVE_GEN_FIELDS:  # the names and renames have one owner: lang/gen_rules.py
            v = getattr(self, frontend_name(native), None)
            if v is not None:
                out[native] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass(frozen=True)
class Select:
    name: Optional[str]
    choices: Union[tuple[str, ...], Expr]  # literal strings, or an expression giving a list
    choices_method: str = "token_length_normalized"
    temperature: float = 0.0


@dataclass(frozen=True)
class RoleBegin:
    role: str


@dataclass(frozen=True)
class RoleEnd:
    role: str


@dataclass(frozen=True)
class Image:
    src: Expr  # path / URL / base64 string


@dataclass(frozen=True)
class Video:
    src: Expr
    num_frames: int = 8


@dataclass(frozen=True)
class Branch:
    conds: tuple[Optional[Expr], ...]


@dataclass(frozen=True)
class Loop:
    var: Optional[str] = None
    iterable: Optional[Expr] = None
    cond: Optional[Expr] = None
    max_iters: Optional[int] = None


@dataclass(frozen=True)
class Fork:
    n: Union[int, Expr]
    shared_body: bool = False
    index_var: Optional[str] = None


@dataclass(frozen=True)
class Join:
    fork: int
    mode: str = "gather_variable"


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[tuple[str, Expr], ...] = ()


@dataclass(frozen=True)
class Return:
    value: Optional[Expr] = None


OP_TYPES: dict[str, type] = {c.__name__: c for c in (Text, Arg, VarRef, Interp, Gen, Select, RoleBegin, RoleEnd,
                                                       Image, Video, Branch, Loop, Fork, Join, Call, Return)}
STRUCTURED = (Branch, Loop, Fork)
NODE_REF_FIELDS = ("fork",)  # op fields holding node ids (remapped on renumbering)


def describe(op: Any) -> str:
    name = getattr(op, "name", None)
    label = type(op).__name__
    return f"{label} {name!r}" if isinstance(name, str) and not isinstance(op, Name) else label


def num_arms(op: Any) -> int:
    if isinstance(op, Branch):
        return len(op.conds)
    if isinstance(op, Fork):
        return 1 if op.shared_body or not isinstance(op.n, int) else op.n
    if isinstance(op, Loop):
        return 1
    return 0


def defines(op: Any) -> Optional[str]:
    """The variable an op writes on its stream."""
    return op.name if isinstance(op, (Gen, Select)) else None


def op_exprs(op: Any) -> list[Expr]:
    """Expressions an op evaluates (its reads of arguments/variables, except VarRef/Arg)."""
    out: list[Expr] = []
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if is_expr(v):
            out.append(v)
        elif isinstance(v, tuple):
            for x in v:
                if is_expr(x):
                    out.append(x)
                elif isinstance(x, tuple) and len(x) == 2 and is_expr(x[1]):
                    out.append(x[1])
    return out


def map_op_exprs(op: Any, fn) -> Any:
    """Rebuild `op` with every expression field passed through `map_expr(e, fn)`."""
    changes = {}
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if is_expr(v):
            changes[f.name] = map_expr(v, fn)
        elif isinstance(v, tuple) and any(is_expr(x) or (isinstance(x, tuple) and len(x) == 2 and is_expr(x[1]))
                                          for x in v):
            changes[f.name] = tuple(map_expr(x, fn) if is_expr(x) else
                                    (x[0], map_expr(x[1], fn)) if isinstance(x, tuple) else x for x in v)
    return dataclasses.replace(op, **changes) if changes else op


def op_to_json(op: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": type(op).__name__}
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if f.default is not dataclasses.MISSING and v == f.default and type(v) is type(f.default):
            continue  # defaults omitted: compact, and stable when fields with defaults are added
        out[f.name] = _to_json(v)
    return out


def _to_json(v: Any) -> Any:
    if is_expr(v):
        return expr_to_json(v)
    if isinstance(v, tuple):
        return [_to_json(x) for x in v]
    return v


def op_from_json(d: dict[str, Any]) -> Any:
    cls = OP_TYPES.get(d.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown IR op {d.get('op')!r} in IR JSON")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {"op"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} for IR op {cls.__name__}")
    kwargs = {k: value_from_json(v) for k, v in d.items() if k != "op"}
    if cls is Select and "choices" not in kwargs:
        raise ValueError("IR op Select needs 'choices'")
    return cls(**kwargs)


def label(op: Any) -> str:
    """A one-line human rendering of an op."""
    if isinstance(op, Text):
        return f"Text {op.value!r}"
    if isinstance(op, Interp):
        return f"Interp {{{expr_to_str(op.expr)}}}"
    if isinstance(op, VarRef):
        return f"VarRef {op.name!r}" + (f" of fork {op.fork} branch {op.branch}" if op.fork is not None else "")
    if isinstance(op, Branch):
        return "Branch " + " | ".join("else" if c is None else expr_to_str(c) for c in op.conds)
    fields = []
    for k, v in op_to_json(op).items():
        if k == "op":
            continue
        value = getattr(op, k)
        fields.append(f"{k}={expr_to_str(value)}" if is_expr(value) else f"{k}={v!r}")
    return f"{type(op).__name__}(" + ", ".join(fields) + ")"
