"""Program pieces: what `sgl.gen(...)`, `"text" + sgl.select(...)`, `sgl.user(...)` evaluate to.

A piece (`SglExpr`) is a tuple of IR ops (lang/ir/graph.py) with their source locations, so the eager
interpreter executes exactly the ops that tracing records: one representation for both. `+`
concatenates pieces and strings. `Symbol` is a piece standing for a value unknown while tracing
(a program argument, a generated variable): formatting it yields a marker string that the tracer
expands back into Arg/VarRef ops, so f-strings and `+` work on it; using it in Python control
flow is an error that says why.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Iterable, Iterator, Optional

from sglang.lang.ir import Loc, RoleBegin, RoleEnd, Text

_MARK = "\x00sgl{}\x00"


_INTERNAL = tuple(__file__.rsplit("/", 2)[0] + "/" + d + "/" for d in ("lang", "runtime", "compiler"))


def caller_loc(depth: int = 2) -> Optional[Loc]:
    """Source location of the nearest user frame `depth` or more frames up (this package's frames
    are skipped, so helpers may call it at any depth)."""
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return None
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame = frame.f_back
    if frame is None:
        return None
    return Loc(frame.f_code.co_filename, frame.f_lineno, None)


class SglExpr:
    """An immutable sequence of IR ops (with locations) that can be appended to a program state."""

    __slots__ = ("ops", "locs")

    def __init__(self, ops: Iterable[Any], locs: Iterable[Optional[Loc]] | None = None) -> None:
        self.ops = tuple(ops)
        self.locs = tuple(locs) if locs is not None else (None,) * len(self.ops)

    def __add__(self, other: Any) -> "SglExpr":
        o = to_expr(other)
        return SglExpr(self.ops + o.ops, self.locs + o.locs)

    def __radd__(self, other: Any) -> "SglExpr":
        o = to_expr(other)
        return SglExpr(o.ops + self.ops, o.locs + self.locs)

    def __repr__(self) -> str:
        return f"SglExpr({list(self.ops)!r})"


def to_expr(x: Any, loc: Optional[Loc] = None) -> SglExpr:
    if isinstance(x, SglExpr):
        return x
    if isinstance(x, str):
        return SglExpr((Text(x),), (loc,))
    raise TypeError(f"only str and sgl expressions (gen, select, roles, ...) can be added to a program, "
                    f"got {type(x).__name__}: {x!r}")


def role_expr(role: str, expr: Any, loc: Optional[Loc]) -> SglExpr:
    """`expr` (None: nothing) bracketed by RoleBegin/RoleEnd of `role`: a whole chat turn."""
    body = SglExpr(()) if expr is None else to_expr(expr, loc)
    return SglExpr((RoleBegin(role),) + body.ops + (RoleEnd(role),), (loc,) + body.locs + (loc,))


class StateBase:
    """What the interpreter's ProgramState and the tracer's TracingState share: `+=` and the role methods
    (`s.user("...")` appends a whole turn; `with s.user():` brackets what is appended inside), all through
    `_append`, which each defines (execute vs record)."""

    def _append(self, expr: SglExpr, loc: Optional[Loc]) -> None:
        raise NotImplementedError

    def __iadd__(self, other: Any) -> Any:
        loc = caller_loc()
        self._append(to_expr(other, loc), loc)
        return self

    def _role(self, role: str, expr: Any) -> Any:
        loc = caller_loc()
        if expr is not None:
            self._append(role_expr(role, expr, loc), loc)
            return None
        return RoleBlock(self, role)

    def system(self, expr: Any = None) -> Any:
        return self._role("system", expr)

    def user(self, expr: Any = None) -> Any:
        return self._role("user", expr)

    def assistant(self, expr: Any = None) -> Any:
        return self._role("assistant", expr)


class RoleBlock:
    """`with s.user():` appends RoleBegin on entry and RoleEnd on exit."""

    def __init__(self, state: StateBase, role: str) -> None:
        self.state, self.role = state, role

    def __enter__(self) -> Any:
        loc = caller_loc()
        self.state._append(SglExpr((RoleBegin(self.role),), (loc,)), loc)
        return self.state

    def __exit__(self, *exc: Any) -> None:
        loc = caller_loc()
        self.state._append(SglExpr((RoleEnd(self.role),), (loc,)), loc)


class StateGroup:
    """What `s.fork(n)` returns, for both the interpreter and the tracer: index it, iterate it, `+=` to
    every state. Subclasses say how to `join()`."""

    def __init__(self, states: list[Any], parent: Any) -> None:
        self.states, self.parent = states, parent

    def __getitem__(self, i: int) -> Any:
        return self.states[i]

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.states)

    def __iadd__(self, other: Any) -> "StateGroup":
        loc = caller_loc()
        for s in self.states:
            s._append(to_expr(other, loc), loc)
        return self


class TraceError(RuntimeError):
    """A Python construct that tracing cannot turn into IR."""


class Symbol(SglExpr):
    """A traced value: an argument or a generated variable (its ops are one Arg or VarRef)."""

    __slots__ = ("describe", "key")
    _registry: dict[int, "Symbol"] = {}
    _lock = threading.Lock()
    _next = 0

    def __init__(self, op: Any, describe: str, loc: Optional[Loc] = None) -> None:
        super().__init__((op,), (loc,))
        self.describe = describe
        with Symbol._lock:
            self.key = Symbol._next
            Symbol._next += 1
            Symbol._registry[self.key] = self

    def __str__(self) -> str:
        return _MARK.format(self.key)

    def __format__(self, spec: str) -> str:
        if spec:
            raise TraceError(f"cannot apply format spec {spec!r} to {self.describe} while tracing")
        return str(self)

    def _no(self, what: str) -> Any:
        raise TraceError(f"{what} on {self.describe} is Python control flow on a value that is unknown while "
                         f"tracing; run the program eagerly (fn.run) or write it in the .sgl language")

    def __bool__(self) -> bool:
        return self._no("truth test (if/while/and/or)")

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        return self._no("comparison ==")

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        return self._no("comparison !=")

    __hash__ = SglExpr.__hash__

    def __len__(self) -> int:
        return self._no("len()")

    def __index__(self) -> int:
        return self._no("use as an integer (range(), indexing)")

    def __int__(self) -> int:
        return self._no("int()")

    def __float__(self) -> float:
        return self._no("float()")

    def __getitem__(self, key: Any) -> Any:
        return self._no("indexing")

    def __contains__(self, item: Any) -> bool:
        return self._no("`in`")

    def __iter__(self) -> Any:
        return self._no("iteration")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._no(f"attribute .{name}")


def release_symbols(first_key: int) -> None:
    """Forget the symbols made since `first_key` (the tracer calls this when a trace ends)."""
    with Symbol._lock:
        for k in [k for k in Symbol._registry if k >= first_key]:
            del Symbol._registry[k]


def split_markers(text: str) -> list[Any]:
    """Split a string containing Symbol markers into str pieces and Symbols."""
    if "\x00sgl" not in text:
        return [text]
    out: list[Any] = []
    parts = text.split("\x00")
    buf, after_marker = parts[0], False
    for part in parts[1:]:
        if not after_marker and part.startswith("sgl") and part[3:].isdigit() and int(part[3:]) in Symbol._registry:
            if buf:
                out.append(buf)
            out.append(Symbol._registry[int(part[3:])])
            buf, after_marker = "", True
        else:
            buf += part if after_marker else "\x00" + part  # after a marker this NUL closed it
            after_marker = False
    if buf:
        out.append(buf)
    return out
