"""Constant folding and text merging.

Folds every expression with no free names (`1 + 2`, `str(3)`, `"a" + "b"`), turns an interpolation
that became a constant into Text, a Select whose choices became a constant list into literal choices,
a Fork whose count became a constant into a per-branch fork, then canonicalizes, which merges adjacent
Text ops and drops empty ones.
"""
from __future__ import annotations

from sglang.lang import ir
from sglang.lang.ir import expr as X
from sglang.compiler.ir_edit import all_nodes, replace_op


def _fold(e: X.Expr) -> X.Expr:
    return X.substitute(e, {})


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    for node in all_nodes(fn):
        op = fn.op(node)
        new = ir.map_op_exprs(op, lambda e: X.fold(e))
        if isinstance(new, ir.Interp) and isinstance(new.expr, X.Const):
            new = ir.Text("" if new.expr.value is None else str(new.expr.value))
        elif isinstance(new, ir.Select) and isinstance(new.choices, X.Const) and isinstance(new.choices.value, tuple):
            new = ir.Select(new.name, tuple(str(c) for c in new.choices.value), new.choices_method, new.temperature)
        elif isinstance(new, ir.Select) and isinstance(new.choices, X.ListExpr) and \
                all(isinstance(i, X.Const) for i in new.choices.items):
            new = ir.Select(new.name, tuple(str(i.value) for i in new.choices.items), new.choices_method,
                            new.temperature)
        elif isinstance(new, ir.Fork) and isinstance(new.n, X.Const) and isinstance(new.n.value, int):
            new = ir.Fork(new.n.value, new.shared_body, new.index_var)
        if new != op:
            ctx.log.append(f"const-fold: node {node}: {ir.label(op)} -> {ir.label(new)}")
            replace_op(fn, node, new)
    before = len(fn)
    out = ir.canonicalize(fn)
    if len(out) != before:
        ctx.log.append(f"const-fold: text merging {before} -> {len(out)} nodes")
    return out
