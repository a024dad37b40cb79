"""Small in-place edits of `lang.ir.IRFunction` regions, shared by the passes.

A region is a chain of "order" edges entered by the function entry or a structured op's "body" edge;
these helpers keep that shape (one predecessor, one successor) and leave data edges to `fn.check()`.
"""
from __future__ import annotations

from typing import Any

from sglang.lang import ir


def incoming(fn: ir.IRFunction, node: int) -> tuple[int | None, str | None, int | None]:
    """(predecessor, edge kind 'order'|'body', arm) or (None, None, None) for the function entry."""
    for u, _, d in fn.graph.in_edges(node, data=True):
        if d["kind"] in ("order", "body"):
            return u, d["kind"], d.get("arm")
    return None, None, None


def _link(fn: ir.IRFunction, pred: tuple[int | None, str | None, int | None], target: int | None) -> None:
    """Make `target` follow `pred` (as returned by `incoming`), or end the region when target is None."""
    u, kind, arm = pred
    if target is None:
        if u is None:
            fn.entry = None
        return
    if u is None:
        fn.entry = target
    else:
        fn.add_edge(u, target, kind or "order", arm)


def subtree(fn: ir.IRFunction, node: int) -> list[int]:
    """The node and every node in its nested regions."""
    out = [node]
    for a in range(ir.num_arms(fn.op(node))):
        for n in fn.region(node, a):
            out.extend(subtree(fn, n))
    return out


def remove(fn: ir.IRFunction, node: int) -> None:
    """Remove a node (and its nested regions), linking its predecessor to its successor."""
    pred = incoming(fn, node)
    nxt = fn.next(node)
    fn.graph.remove_nodes_from(subtree(fn, node))
    _link(fn, pred, nxt)


def insert_before(fn: ir.IRFunction, node: int, op: Any, loc: ir.Loc | None = None) -> int:
    pred = incoming(fn, node)
    u, kind, arm = pred
    if u is not None:
        key = "order" if kind == "order" else f"body{arm}"
        fn.graph.remove_edge(u, node, key=key)
    new = fn.add_node(op, loc)
    _link(fn, pred, new)
    fn.add_edge(new, node, "order")
    return new


def splice_arm(fn: ir.IRFunction, node: int, arm: int | None) -> None:
    """Replace a structured op by the contents of one of its arms (None: by nothing)."""
    pred = incoming(fn, node)
    nxt = fn.next(node)
    keep = fn.region(node, arm) if arm is not None else []
    if keep:
        fn.graph.remove_edge(node, keep[0], key=f"body{arm}")
    doomed = [node]
    for a in range(ir.num_arms(fn.op(node))):
        if a != arm:
            for n in fn.region(node, a):
                doomed.extend(subtree(fn, n))
    fn.graph.remove_nodes_from(doomed)
    if keep:
        _link(fn, pred, keep[0])
        if nxt is not None:
            fn.add_edge(keep[-1], nxt, "order")
    else:
        _link(fn, pred, nxt)


def replace_op(fn: ir.IRFunction, node: int, op: Any) -> None:
    fn.graph.nodes[node]["op"] = op


def all_nodes(fn: ir.IRFunction) -> list[int]:
    return [n for n, _ in fn.walk()]
