"""Fork batching.

Marks every Fork so the executor (1) prefills the parent state once, then (2) issues the branches'
first gens together as one batch that shares the parent's cached KV: one parent prefill and n extends
instead of n full prefills. When all branches start with the same constant text, that text is
prefilled with the parent (`warm_suffix`) so it too is computed once; the parent's own text is not
changed. Recorded as `fn.attrs["fork_batching"][str(node)] = {"warm_suffix": str}`.

A fork is marked only where the cost model predicts that the parent's warm-up prefill spares more than the
call it adds (`CostModel.warmup_saving`): the shared text is what the engine has not cached yet, the text
after the last gen/select before the fork (the engine keeps what a response covered), plus `warm_suffix`.
"""
from __future__ import annotations

import os

from sglang.lang import ir
from sglang.compiler.cost import ROLE_TOKENS, UNKNOWN_TOKENS
from sglang.compiler.ir_edit import all_nodes, incoming


def uncached_tokens(fn: ir.IRFunction, node: int, count) -> float:
    """Estimated tokens of the text before `node` that no earlier response covered (back to the last gen or
    select, or a control op whose text is not known here)."""
    total = 0.0
    pred, kind, _ = incoming(fn, node)
    while pred is not None:
        op = fn.op(pred)
        if kind == "order" and isinstance(op, (ir.Gen, ir.Select, ir.Branch, ir.Loop, ir.Fork, ir.Join, ir.Call)):
            break  # a response covered everything up to here, or what came before is not known
        if kind == "order":
            total += count(op.value) if isinstance(op, ir.Text) else ROLE_TOKENS if isinstance(
                op, (ir.RoleBegin, ir.RoleEnd)) else UNKNOWN_TOKENS if isinstance(op, (ir.Arg, ir.VarRef, ir.Interp)) else 0
        pred, kind, _ = incoming(fn, pred)  # a body edge: the region's text follows its parent op's
    return total


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    marks: dict[str, dict] = {}
    for node in all_nodes(fn):
        op = fn.op(node)
        if not isinstance(op, ir.Fork):
            continue
        firsts = [fn.body_entry(node, a) for a in range(ir.num_arms(op))]
        texts = [fn.op(f).value if f is not None and isinstance(fn.op(f), ir.Text) else "" for f in firsts]
        warm = os.path.commonprefix(texts) if texts and not op.shared_body else ""
        n = op.n if isinstance(op.n, int) else 2  # a run-time count: at least two branches, presumably
        shared = uncached_tokens(fn, node, ctx.cost.count) + (ctx.cost.count(warm) if warm else 0)
        if not ctx.decide("fork-batching", fn, node, f"fork of {n}: parent prefilled once before its branches",
                          ctx.cost.fork_warmup_saving(shared, n)):
            continue
        marks[str(node)] = {"warm_suffix": warm}
        ctx.log.append(f"fork-batching: fork node {node}: parent prefill" + (f" + {warm!r}" if warm else "")
                       + ", branches batched")
    fn.attrs["fork_batching"] = marks
    return fn
