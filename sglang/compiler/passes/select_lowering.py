"""Select lowering.

A select scores every choice by its likelihood after the prompt. Unlowered, that is one scoring call
per choice. Lowered, the executor sends all choices of a select (and of every ready select of every
batch item) as ONE batched prefill-only call with input logprobs, after a prefill of the shared
prompt so each choice only extends it. Recorded as `fn.attrs["select_batched"] = [node ids]`; the
choice texts are checked here (non-empty, distinct), since a duplicate would make the scores tie. A select
with one choice saves no call and stays unlowered (the cost model's `scoring_saving`).
"""
from __future__ import annotations

from sglang.lang import ir
from sglang.compiler.ir_edit import all_nodes


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    marked = []
    for node in all_nodes(fn):
        op = fn.op(node)
        if not isinstance(op, ir.Select):
            continue
        if isinstance(op.choices, tuple) and len(set(op.choices)) != len(op.choices):
            loc = fn.loc_of(node)
            raise ir.IRError(f"select {op.name!r} has duplicate choices", node=node, op=op, loc=loc, function=fn.name)
        k = len(op.choices) if isinstance(op.choices, tuple) else 2  # run-time choices: at least two, presumably
        if not ctx.decide("select-lowering", fn, node, f"select {op.name!r}: choices scored in one batched call",
                          ctx.cost.scoring_saving(k)):
            continue
        marked.append(node)
        ctx.log.append(f"select-lowering: select node {node} -> one batched scoring call")
    fn.attrs["select_batched"] = marked
    return fn
