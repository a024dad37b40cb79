"""Speculation: send a gen before the decision that picks it has come back, where the cost model says it pays.

Two places have a decision whose possible continuations are known in full before it resolves:

1. A select with literal choices followed (after constant text or role markers only) by a gen: the gen's
   prompt is the prompt so far + the chosen text + that constant text, one per choice. The executor sends
   each choice's gen together with the scoring call and keeps the answer that matches the choice taken.
2. A branch whose condition reads a fork branch's variable: the parent's text does not depend on it, so
   each arm that starts with constant text and then a gen can send that gen while the branches still run.

A prefetched answer is used only when the real request would be the same (prompt, sampling parameters,
media), so a program's output is a sample of the same distribution either way. The cost model
(`CostModel.speculation_saving`) weighs the round trip overlapped against the decode of the continuations
thrown away. Recorded as `fn.attrs["speculate"][str(node)]`: for a select, the node ids from after it to
the gen; for a branch, one such list per arm (empty: that arm is not prefetched).
"""
from __future__ import annotations

from typing import Any

from sglang.lang import ir
from sglang.lang.ir.expr import names_in
from sglang.compiler.cost import DEFAULT_GEN_TOKENS
from sglang.compiler.ir_edit import all_nodes

_CONSTANT = (ir.Text, ir.RoleBegin, ir.RoleEnd)


def _gen_tokens(op: ir.Gen) -> int:
    return op.max_tokens if op.max_tokens is not None else DEFAULT_GEN_TOKENS


def continuation(fn: ir.IRFunction, first: int | None) -> list[int]:
    """Node ids from `first` through the first gen when only constant text comes before it, else []."""
    out = []
    node = first
    while node is not None:
        op = fn.op(node)
        out.append(node)
        if isinstance(op, ir.Gen):
            return out
        if not isinstance(op, _CONSTANT):
            return []
        node = fn.next(node)
    return []


def _fork_work_s(fn: ir.IRFunction, fork: int, ctx: Any) -> float:
    """Seconds the fork's branches take to make their variables: their gens one after another, about."""
    cal = ctx.cost.cal
    gens = [fn.op(n) for a in range(ir.num_arms(fn.op(fork))) for n, _ in fn.walk(fork, a)
            if isinstance(fn.op(n), ir.Gen)]
    per_branch = max(1, ir.num_arms(fn.op(fork)))
    return sum(cal.call_overhead_s + _gen_tokens(g) * cal.decode_token_s for g in gens) / per_branch


def _select_site(fn: ir.IRFunction, node: int, op: ir.Select, ctx: Any) -> list[int] | None:
    if not isinstance(op.choices, tuple):
        return None
    ids = continuation(fn, fn.next(node))
    if not ids:
        return None
    choice_tokens = sum(ctx.cost.count(c) for c in op.choices)
    saving = ctx.cost.speculation_saving(len(op.choices), _gen_tokens(fn.op(ids[-1])), ctx.cost.prefill_s(choice_tokens))
    what = f"select {op.name!r}: each choice's continuation (gen {fn.op(ids[-1]).name!r}) sent with the scoring"
    return ids if ctx.decide("speculation", fn, node, what, saving) else None


def _branch_site(fn: ir.IRFunction, node: int, op: ir.Branch, ctx: Any) -> list[list[int]] | None:
    forks = {n.fork for c in op.conds if c is not None for n in names_in(c) if n.fork is not None}
    if not forks:
        return None  # the condition reads this stream's own variables: resolved by the time the stream gets here
    arms = [continuation(fn, fn.body_entry(node, a)) for a in range(len(op.conds))]
    live = [ids for ids in arms if ids]
    if not live:
        return None
    tokens = max(_gen_tokens(fn.op(ids[-1])) for ids in live)
    resolves = max(_fork_work_s(fn, f, ctx) for f in forks if f in fn.graph)
    saving = ctx.cost.speculation_saving(len(live), tokens, resolves)
    what = f"branch on a fork's variable: {len(live)} arm(s)' first gen sent before the condition resolves"
    return arms if ctx.decide("speculation", fn, node, what, saving) else None


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    marks: dict[str, Any] = {}
    for node in all_nodes(fn):
        op = fn.op(node)
        site = _select_site(fn, node, op, ctx) if isinstance(op, ir.Select) else \
            _branch_site(fn, node, op, ctx) if isinstance(op, ir.Branch) else None
        if site is not None:
            marks[str(node)] = site
            ctx.log.append(f"speculation: node {node}: continuation(s) prefetched")
    fn.attrs["speculate"] = marks
    return fn
