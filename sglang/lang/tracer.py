"""`fn.trace()`: run an `@sgl.function` body on a `TracingState` that records IR instead of executing.

Arguments are `Symbol`s (Arg ops) unless given as constants; `s["x"]` is a Symbol (VarRef). Python
control flow over constants simply unrolls (loops over a literal range, `for f in forks`); control
flow over symbols raises TraceError. The result is the canonical, checked IR (lang/ir/graph.py), which
the `.sgl` compiler produces too for the same program.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Optional

from sglang.lang.ir import (Arg, Cursor, Fork, Image, IRFunction, Join, JOIN_MODES, Loc, Return, Text,
                 VarRef, Video, canonicalize)
from sglang.lang.ir.expr import Const, ListExpr, Name
from sglang.lang.primitives import (SglExpr, StateBase, StateGroup, Symbol, TraceError, caller_loc, release_symbols,
                         split_markers)


class TracingState(StateBase):
    def __init__(self, fn: IRFunction, cursor: Cursor, program: str, branch: Optional[tuple[int, int]] = None) -> None:
        self.fn, self.cursor, self.program, self.branch = fn, cursor, program, branch
        self.ret_value: Any = None

    # -- appending (`+=` and the role methods come from StateBase)
    def _append(self, expr: SglExpr, loc: Optional[Loc]) -> None:
        for op, op_loc in zip(expr.ops, expr.locs):
            op_loc = op_loc or loc
            if isinstance(op, Text):
                for piece in split_markers(op.value):
                    if isinstance(piece, Symbol):
                        self.cursor.append(self._local(piece.ops[0]), op_loc)
                    elif piece:
                        self.cursor.append(Text(piece), op_loc)
            elif isinstance(op, VarRef):
                self.cursor.append(self._local(op), op_loc)
            elif isinstance(op, (Image, Video)):
                self.cursor.append(type(op)(self._src(op.src), *([op.num_frames] if isinstance(op, Video) else [])),
                                   op_loc)
            else:
                self.cursor.append(op, op_loc)

    def _local(self, op: Any) -> Any:
        """A variable of this very branch is read plainly; of another branch, with its fork reference."""
        if isinstance(op, VarRef) and op.fork is not None and (op.fork, op.branch) == self.branch:
            return VarRef(op.name)
        return op

    def _src(self, src: Any) -> Any:
        if isinstance(src, Const) and isinstance(src.value, str):
            pieces = split_markers(src.value)
            if len(pieces) == 1 and isinstance(pieces[0], Symbol):
                op = self._local(pieces[0].ops[0])
                return Name(op.name, getattr(op, "fork", None), getattr(op, "branch", None))
            if any(isinstance(p, Symbol) for p in pieces):
                raise TraceError("an image/video path mixing text and traced values cannot be traced")
        return src

    # -- reading
    def __getitem__(self, name: str) -> Symbol:
        if self.branch is None:
            return Symbol(VarRef(name), f"variable {name!r}", caller_loc())
        fork, branch = self.branch
        return Symbol(VarRef(name, fork, branch), f"variable {name!r} of fork branch {branch}", caller_loc())

    get_var = __getitem__

    def _unavailable(self, what: str) -> Any:
        raise TraceError(f"program {self.program!r}: {what} has no value while tracing (use fn.run to execute)")

    def __setitem__(self, name: str, value: Any) -> None:
        self._unavailable(f"s[{name!r}] = ...")

    def text(self) -> str:
        return self._unavailable("s.text()")

    def messages(self) -> list:
        return self._unavailable("s.messages()")

    def get_meta_info(self, name: str) -> Any:
        return self._unavailable(f"s.get_meta_info({name!r})")

    def sync(self) -> "TracingState":
        return self

    # -- structure
    def fork(self, size: int = 1) -> "TracingGroup":
        if not isinstance(size, int) or size < 1:
            raise TraceError(f"fork size must be a positive int while tracing, got {size!r}")
        node = self.cursor.append(Fork(size), caller_loc())
        states = [TracingState(self.fn, self.cursor.arm_cursor(node, i), self.program, (node, i))
                  for i in range(size)]
        return TracingGroup(states, self, node)

    def copy(self) -> "TracingState":
        return self.fork(1)[0]

class TracingGroup(StateGroup):
    def __init__(self, states: list[TracingState], parent: TracingState, node: int) -> None:
        super().__init__(states, parent)
        self.node = node

    def join(self, mode: str = "gather_variable") -> None:
        if mode not in JOIN_MODES:
            raise ValueError(f"join mode must be one of {', '.join(JOIN_MODES)}, got {mode!r}")
        self.parent.cursor.append(Join(self.node, mode), caller_loc())


def _json_default(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def trace_program(sfn: Any, constants: dict[str, Any]) -> IRFunction:
    func = sfn.func
    code = getattr(func, "__code__", None)
    loc = Loc(code.co_filename, code.co_firstlineno, None) if code is not None else None
    unknown = sorted(set(constants) - set(sfn.arg_names))
    if unknown:
        raise TypeError(f"program {sfn.name!r}: trace got unknown argument(s) {', '.join(unknown)} "
                        f"(parameters: {', '.join(sfn.arg_names) or 'none'})")
    fixed = {**sfn.bind_arguments, **constants}
    params = tuple(n for n in sfn.arg_names if n not in fixed)
    defaults = {p.name: _json_default(p.default) for p in list(sfn.signature.parameters.values())[1:]
                if p.default is not inspect.Parameter.empty and p.name in params}
    attrs = {"num_api_spec_tokens": sfn.num_api_spec_tokens} if sfn.num_api_spec_tokens else {}
    ir = IRFunction(sfn.name, params, defaults, loc, attrs)
    state = TracingState(ir, ir.cursor(), sfn.name)
    first_key = Symbol._next
    try:
        args = {n: fixed[n] if n in fixed else Symbol(Arg(n), f"argument {n!r}") for n in sfn.arg_names}
        ret = func(state, **args)
        if ret is not None:
            ir.cursor().append(Return(_ret_expr(ret, sfn.name)), caller_loc())
            if isinstance(ret, tuple):  # a plan returns lists; the compiled path gives the tuple back
                ir.attrs["py_return"] = "tuple"
    finally:
        release_symbols(first_key)
    return canonicalize(ir.check()).check()


def _ret_expr(value: Any, program: str) -> Any:
    if isinstance(value, (list, tuple)):  # a list expression; the caller records a tuple's type
        return ListExpr(tuple(_ret_expr(v, program) for v in value))
    if isinstance(value, Symbol):
        op = value.ops[0]
        return Name(op.name, getattr(op, "fork", None), getattr(op, "branch", None))
    if value is None or isinstance(value, (str, int, float, bool)):
        if isinstance(value, str) and "\x00sgl" in value:
            raise TraceError(f"program {program!r}: a returned string mixing text and traced values cannot be traced")
        return Const(value)
    raise TraceError(f"program {program!r}: cannot trace a return value of type {type(value).__name__}")
