"""Prefix hoisting.

1. All paths: when every arm of an exhaustive Branch (one with `else`) starts with constant text, the
   common prefix moves in front of the Branch, so it joins the constant prefix computed before the
   run-time decision (exactly one arm runs, so the program text is unchanged).
2. All batch items: the leading run of constant ops of the function (Text and role markers, up to the
   first argument, generated value or control op) is the prompt prefix shared by every batch item.
   Its length is recorded as `fn.attrs["hoisted_prefix_ops"]`; the executor prefills that text once
   before dispatching a batch, so every item's first call hits the prefix cache.

Both act only where the cost model predicts a saving (text shared by the batch; a warm-up call that spares
more prefill than it costs).
"""
from __future__ import annotations

import os

from sglang.lang import ir
from sglang.compiler.cost import ROLE_TOKENS
from sglang.compiler.ir_edit import all_nodes, insert_before, remove, replace_op

_CONSTANT_OPS = (ir.Text, ir.RoleBegin, ir.RoleEnd)


def _hoist_branch(fn: ir.IRFunction, node: int, ctx) -> bool:
    op = fn.op(node)
    if op.conds[-1] is not None:  # not exhaustive: on the fall-through path nothing is appended
        return False
    firsts = [fn.body_entry(node, a) for a in range(len(op.conds))]
    if any(f is None or not isinstance(fn.op(f), ir.Text) for f in firsts):
        return False
    texts = [fn.op(f).value for f in firsts]
    common = os.path.commonprefix(texts)
    if not common or not ctx.decide("prefix-hoist", fn, node, f"{common!r} moved before the branch",
                                    ctx.cost.hoist_saving(ctx.cost.count(common))):
        return False
    for f, t in zip(firsts, texts):
        rest = t[len(common):]
        if rest:
            replace_op(fn, f, ir.Text(rest))
        else:
            remove(fn, f)
    insert_before(fn, node, ir.Text(common), fn.loc_of(node))
    ctx.log.append(f"prefix-hoist: {common!r} moved before branch node {node}")
    return True


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    changed = True
    while changed:  # a hoisted prefix may make an enclosing branch hoistable
        changed = False
        for node in reversed(all_nodes(fn)):
            if node in fn.graph and isinstance(fn.op(node), ir.Branch) and _hoist_branch(fn, node, ctx):
                changed = True
    fn = ir.canonicalize(fn)
    count, tokens = 0, 0
    for node in fn.region():
        op = fn.op(node)
        if not isinstance(op, _CONSTANT_OPS):
            break
        count += 1
        tokens += ctx.cost.count(op.value) if isinstance(op, ir.Text) else ROLE_TOKENS
    if count and not ctx.decide("prefix-hoist", fn, fn.region()[0], f"{count} leading constant op(s) prefilled "
                                "once for all batch items", ctx.cost.warmup_saving(tokens, ctx.cost.batch)):
        count = 0
    fn.attrs["hoisted_prefix_ops"] = count
    if count:
        ctx.log.append(f"prefix-hoist: {count} leading constant op(s) shared by all batch items")
    return fn
