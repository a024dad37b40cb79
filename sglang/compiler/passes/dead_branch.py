"""Dead-branch elimination for literal conditions.

An arm whose condition folded to a false constant is dropped; the first arm whose condition is a true
constant replaces the whole Branch (later arms are unreachable); a Branch with no arm left disappears.
A loop over a constant empty list disappears. Data-dependent conditions stay (resolved at run time).
"""
from __future__ import annotations

from sglang.lang import ir
from sglang.lang.ir import expr as X
from sglang.compiler.ir_edit import all_nodes, remove, splice_arm


_FREE = (0.0, "a constant condition: nothing that could run is removed")  # no trade-off: always done


def _prune(fn: ir.IRFunction, node: int, ctx) -> None:
    op = fn.op(node)
    conds = [X.fold(c) if c is not None else None for c in op.conds]
    keep: list[int] = []
    for i, c in enumerate(conds):
        if isinstance(c, X.Const) and not c.value:
            continue
        if c is None or isinstance(c, X.Const):  # else, or always true: nothing after it can run
            if not keep:
                ctx.log.append(f"dead-branch: node {node}: only arm {i} can run")
                ctx.decide("dead-branch", fn, node, f"only arm {i} of the branch can run", _FREE, always=True)
                splice_arm(fn, node, i)
                return
            keep.append(i)
            conds[i] = None  # an always-true arm after run-time ones acts as else
            break
        keep.append(i)
    if not keep:
        ctx.log.append(f"dead-branch: node {node}: no arm can run")
        ctx.decide("dead-branch", fn, node, "no arm of the branch can run", _FREE, always=True)
        remove(fn, node)
        return
    if len(keep) == len(op.conds):
        return
    ctx.log.append(f"dead-branch: node {node}: arms {keep} of {len(op.conds)} kept")
    ctx.decide("dead-branch", fn, node, f"arms {keep} of {len(op.conds)} kept", _FREE, always=True)
    entries = {i: fn.body_entry(node, i) for i in range(len(op.conds))}
    for i in range(len(op.conds)):  # drop every arm edge, delete dead arms, re-add kept ones renumbered
        if entries[i] is not None:
            fn.graph.remove_edge(node, entries[i], key=f"body{i}")
    dropped = [i for i in range(len(op.conds)) if i not in keep]
    for i in dropped:
        n = entries[i]
        while n is not None:
            nxt = fn.next(n)
            from sglang.compiler.ir_edit import subtree

            fn.graph.remove_nodes_from(subtree(fn, n))
            n = nxt
    fn.graph.nodes[node]["op"] = ir.Branch(tuple(conds[i] for i in keep))
    for new_arm, i in enumerate(keep):
        if entries[i] is not None:
            fn.add_edge(node, entries[i], "body", new_arm)


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    for node in reversed(all_nodes(fn)):  # inner first, so nested dead code goes before its parent is spliced
        if node not in fn.graph:
            continue
        op = fn.op(node)
        if isinstance(op, ir.Branch):
            _prune(fn, node, ctx)
        elif isinstance(op, ir.Loop) and op.iterable is not None:
            it = X.fold(op.iterable)
            if isinstance(it, X.Const) and isinstance(it.value, (tuple, str)) and len(it.value) == 0:
                ctx.log.append(f"dead-branch: node {node}: loop over an empty constant")
                ctx.decide("dead-branch", fn, node, "loop over an empty constant removed", _FREE, always=True)
                remove(fn, node)
    return ir.canonicalize(fn)
