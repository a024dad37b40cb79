"""The canonical form of an `IRFunction`, agreed between tracing and the compiler.

`canonicalize(fn)` returns a new function where adjacent Text is merged, empty Text dropped, Interp of
a constant -> Text, Interp of an argument -> Arg, Interp of a generated variable -> VarRef, constant
sub-expressions folded, shared-body forks with a literal n expanded, node ids renumbered 0..n-1 in
region pre-order (a structured op, then its arms in order, then its successor) and node references
inside ops (``fork=``) remapped. `structural_equal(a, b)` compares canonical JSON without locations.
Dropping the arms of a branch whose condition folds to a constant is a compiler pass (dead-branch), not
canonicalization.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from sglang.lang.ir.expr import Const, Name, fold
from sglang.lang.ir.graph import Cursor, IRFunction
from sglang.lang.ir.ops import NODE_REF_FIELDS, Arg, Fork, Interp, Text, VarRef, defines, map_op_exprs, num_arms


def canonicalize(fn: IRFunction) -> IRFunction:
    """The canonical form described in this module's docstring, as a new function."""
    out = IRFunction(fn.name, fn.params, fn.defaults, fn.loc, fn.attrs)
    generated = {defines(fn.op(n)) for n in fn.graph.nodes} - {None}
    _Canon(fn, out, generated).region(None, 0, out.cursor(), {}, {})
    out.add_data_edges()
    return out


class _Canon:
    def __init__(self, src: IRFunction, dst: IRFunction, generated: set[Any]) -> None:
        self.src, self.dst, self.generated = src, dst, generated

    def region(self, parent: int | None, arm: int, cur: Cursor, ids: dict[int, int], env: dict[str, Any]) -> None:
        pending: list[tuple[str, Any]] = []  # Text pieces waiting to merge: (value, loc of first)

        def flush() -> None:
            text = "".join(p[0] for p in pending)
            if text:
                cur.append(Text(text), pending[0][1])
            pending.clear()

        for node in self.src.region(parent, arm):
            op, loc = self.rewrite(self.src.op(node), ids, env), self.src.loc_of(node)
            if isinstance(op, Text):
                pending.append((op.value, loc))
                continue
            flush()
            if isinstance(op, Fork) and op.shared_body and isinstance(op.n, int):
                new = cur.append(Fork(op.n), loc)
                ids[node] = new
                for b in range(op.n):
                    inner_env = dict(env, **({op.index_var: b} if op.index_var else {}))
                    self.region(node, 0, cur.arm_cursor(new, b), dict(ids), inner_env)
                continue
            new = cur.append(op, loc)
            ids[node] = new
            for a in range(num_arms(op)):
                self.region(node, a, cur.arm_cursor(new, a), dict(ids), env)
        flush()

    def rewrite(self, op: Any, ids: dict[int, int], env: dict[str, Any]) -> Any:
        def fix(e: Any) -> Any:
            if isinstance(e, Name) and e.fork is not None:
                return Name(e.name, ids.get(e.fork, e.fork), e.branch)
            return e

        op = map_op_exprs(op, fix)
        # bind fork index variables, then fold constant sub-expressions
        op = map_op_exprs(op, lambda e: Const(env[e.name]) if isinstance(e, Name) and e.fork is None
                          and e.name in env else fold(e))
        refs = {f: ids.get(getattr(op, f), getattr(op, f)) for f in NODE_REF_FIELDS
                if hasattr(op, f) and getattr(op, f) is not None}
        if refs:
            op = dataclasses.replace(op, **refs)
        if isinstance(op, Interp):
            e = op.expr
            if isinstance(e, Const):
                return Text("" if e.value is None else str(e.value))
            if isinstance(e, Name) and e.fork is not None:
                return VarRef(e.name, e.fork, e.branch)
            if isinstance(e, Name) and e.name in self.generated and e.name not in env:
                return VarRef(e.name)
            if isinstance(e, Name) and e.name in self.src.params:
                return Arg(e.name)
        return op


def structural_equal(a: IRFunction, b: IRFunction) -> bool:
    """Same program up to locations, node numbering, and canonical rewrites."""
    return canonicalize(a).dumps(locs=False) == canonicalize(b).dumps(locs=False)
