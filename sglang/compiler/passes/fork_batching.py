"""Fork batching.

Marks every Fork so the executor (1) prefills the parent state once, then (2) issues the branches'
first gens together as one batch that shares the parent's cached KV: one parent prefill and n extends
instead of n full prefills. When all branches start with the same constant text, that text is
prefilled with the parent (`warm_suffix`) so it too is computed once; the parent's own text is not
changed. Recorded as `fn.attrs["fork_batching"][str(node)] = {"warm_suffix": str}`.
"""
from __future__ import annotations

import os

from sglang.lang import ir
from sglang.compiler.ir_edit import all_nodes


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    marks: dict[str, dict] = {}
    for node in all_nodes(fn):
        op = fn.op(node)
        if not isinstance(op, ir.Fork):
            continue
        firsts = [fn.body_entry(node, a) for a in range(ir.num_arms(op))]
        texts = [fn.op(f).value if f is not None and isinstance(fn.op(f), ir.Text) else "" for f in firsts]
        warm = os.path.commonprefix(texts) if texts and not op.shared_body else ""
        marks[str(node)] = {"warm_suffix": warm}
        ctx.log.append(f"fork-batching: fork node {node}: parent prefill" + (f" + {warm!r}" if warm else "")
                       + ", branches batched")
    fn.attrs["fork_batching"] = marks
    return fn
