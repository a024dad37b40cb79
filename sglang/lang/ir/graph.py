"""The program IR shared by tracing (`fn.trace()`) and the `.sgl` compiler.

An `IRFunction` wraps a `networkx.MultiDiGraph`. Each node has an int id, an `op` (one of the frozen
dataclasses in `ops`) and an optional source `loc` (`Loc(file, line, col)`, kept outside the op so
that ops compare by meaning only). Edges have a key = kind:

* ``"order"``  program order inside one region: A then B on the same stream (program state).
* ``"body"``   from a structured op (Branch, Loop, Fork) to the FIRST node of its region number
               ``arm`` (edge attribute). A region is the chain of "order" edges from that node.
               A region with no body edge is empty. Control continues after the structured op
               along the op's own "order" edge (structured, as in MLIR regions: no merge nodes).
* ``"data"``   from the Gen/Select that (may) define a variable to each node that reads it.
               Derived: `add_data_edges()` recomputes them (`check()` and `from_json` do).

The top-level region starts at `fn.entry` (None = empty function).

Structured ops and their regions:
* ``Branch(conds)``: if/elif/else; arm i runs when conds[i] is the first true condition; a
  ``None`` condition (last only) is ``else``. Conditions are expressions (`lang.ir.expr`) over
  arguments and generated variables, evaluated at run time.
* ``Loop(var, iterable)`` (for) or ``Loop(cond=...)`` (while, bounded by ``max_iters``): arm 0.
* ``Fork(n)``: n child streams, each starting from a copy of the parent state; arm i is branch i
  (per-branch form, canonical). ``Fork(n, shared_body=True, index_var="i")`` runs arm 0 in every
  branch with ``i`` bound to the branch index; `canonicalize()` expands it when n is a literal.
  The parent reads a branch's variable with ``VarRef(name, fork=<fork node id>, branch=i)``;
  ``Join(fork, mode)`` marks where the parent waits for all branches ("gather_variable") or
  also appends their new text ("concate_and_append").

Straight-line ops: Text (constant string), Arg (interpolate a program argument), VarRef
(interpolate a generated variable), Interp (interpolate any expression), Gen, Select,
RoleBegin/RoleEnd, Image, Video, Call (run another function on this stream), Return.
``gen(choices=...)`` is a Select; ``gen(dtype=int)`` keeps ``dtype`` (executors map it to the runtime's
regex). Tracing and the `.sgl` lowering both inline calls of other programs; Call is for functions
resolved later (not produced by either today).

Op types and per-op helpers are in `ops`; validation and data edges in `check` (which this module
calls); the canonical form in `canon` (which builds on this module).
"""
from __future__ import annotations

import json
from typing import Any, Iterator

import networkx as nx

from sglang.lang.ir.check import check_function, compute_data_edges
from sglang.lang.ir.ops import OP_TYPES, IRError, Loc, label, num_arms, op_from_json, op_to_json

IR_FORMAT = "sglang-ir/1"


class IRFunction:
    """One program: name, parameters (with JSON-able defaults) and the op graph."""

    def __init__(self, name: str, params: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
                 loc: Loc | None = None, attrs: dict[str, Any] | None = None) -> None:
        self.name = name
        self.params = tuple(params)
        self.defaults = dict(defaults or {})
        self.loc = loc
        self.attrs = dict(attrs or {})  # e.g. num_api_spec_tokens
        self.graph = nx.MultiDiGraph()
        self.entry: int | None = None
        self._next_id = 0

    # -- building
    def add_node(self, op: Any, loc: Loc | None = None) -> int:
        if type(op).__name__ not in OP_TYPES or type(op) is not OP_TYPES[type(op).__name__]:
            raise TypeError(f"not an IR op: {op!r}")
        nid = self._next_id
        self._next_id += 1
        self.graph.add_node(nid, op=op, loc=loc)
        return nid

    def add_edge(self, src: int, dst: int, kind: str, arm: int | None = None) -> None:
        if kind not in ("order", "body", "data"):
            raise ValueError(f"unknown IR edge kind {kind!r}")
        for n in (src, dst):
            if n not in self.graph:
                raise IRError(f"edge {kind} {src}->{dst} names a missing node", node=n, function=self.name)
        if kind == "body":
            self.graph.add_edge(src, dst, key=f"body{arm}", kind=kind, arm=int(arm or 0))
        else:
            self.graph.add_edge(src, dst, key=kind, kind=kind)

    def cursor(self, parent: int | None = None, arm: int = 0) -> "Cursor":
        """An appender for the region (parent, arm); parent None = top level."""
        return Cursor(self, parent, arm)

    # -- reading
    def op(self, node: int) -> Any:
        return self.graph.nodes[node]["op"]

    def loc_of(self, node: int) -> Loc | None:
        return self.graph.nodes[node].get("loc")

    def next(self, node: int) -> int | None:
        for _, dst, key in self.graph.out_edges(node, keys=True):
            if key == "order":
                return dst
        return None

    def body_entry(self, node: int, arm: int) -> int | None:
        for _, dst, key in self.graph.out_edges(node, keys=True):
            if key == f"body{arm}":
                return dst
        return None

    def region(self, parent: int | None = None, arm: int = 0) -> list[int]:
        """Node ids of one region in program order (top level when parent is None)."""
        node = self.entry if parent is None else self.body_entry(parent, arm)
        out: list[int] = []
        seen: set[int] = set()
        while node is not None:
            if node in seen:
                raise IRError("cycle of order edges", node=node, op=self.op(node), function=self.name)
            seen.add(node)
            out.append(node)
            node = self.next(node)
        return out

    def walk(self, parent: int | None = None, arm: int = 0, depth: int = 0) -> Iterator[tuple[int, int]]:
        """(node, depth) in pre-order: each op, then its arms' regions, then its successor."""
        for node in self.region(parent, arm):
            yield node, depth
            for a in range(num_arms(self.op(node))):
                yield from self.walk(node, a, depth + 1)

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def data_edges(self) -> list[tuple[int, int]]:
        return sorted((u, v) for u, v, k in self.graph.edges(keys=True) if k == "data")

    # -- validation and derived edges
    def check(self) -> "IRFunction":
        """Validate structure and variable use, then (re)compute data edges. Raises IRError."""
        check_function(self)
        return self

    def add_data_edges(self) -> None:
        compute_data_edges(self)

    # -- forms
    def to_json(self, locs: bool = True) -> dict[str, Any]:
        nodes = []
        for nid in sorted(self.graph.nodes):
            entry: dict[str, Any] = {"id": nid, **op_to_json(self.op(nid))}
            loc = self.loc_of(nid)
            if locs and loc is not None:
                entry["loc"] = [loc.file, loc.line, loc.col]
            nodes.append(entry)
        edges = sorted(([u, v, d["kind"], d["arm"]] if d["kind"] == "body" else [u, v, d["kind"]]
                        for u, v, d in self.graph.edges(data=True) if d["kind"] != "data"), key=repr)
        out: dict[str, Any] = {"format": IR_FORMAT, "name": self.name, "params": list(self.params),
                               "defaults": self.defaults, "attrs": self.attrs, "entry": self.entry,
                               "nodes": nodes, "edges": edges}
        if locs and self.loc is not None:
            out["loc"] = [self.loc.file, self.loc.line, self.loc.col]
        return out

    def dumps(self, locs: bool = True) -> str:
        return json.dumps(self.to_json(locs), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> "IRFunction":
        if isinstance(data, str):
            data = json.loads(data)
        if data.get("format") != IR_FORMAT:
            raise ValueError(f"not an {IR_FORMAT} document (format={data.get('format')!r})")
        loc = Loc(*data["loc"]) if data.get("loc") else None
        fn = cls(data["name"], tuple(data.get("params", ())), data.get("defaults"), loc, data.get("attrs"))
        for n in data["nodes"]:
            n = dict(n)
            nid, nloc = n.pop("id"), n.pop("loc", None)
            fn.graph.add_node(nid, op=op_from_json(n), loc=Loc(*nloc) if nloc else None)
            fn._next_id = max(fn._next_id, nid + 1)
        for e in data["edges"]:
            fn.add_edge(e[0], e[1], e[2], e[3] if len(e) > 3 else None)
        fn.entry = data.get("entry")
        fn.add_data_edges()
        return fn

    def to_dot(self) -> str:
        lines = [f'digraph "{_dot_escape(self.name)}" {{', "  node [shape=box, fontname=monospace];"]
        for nid in sorted(self.graph.nodes):
            lines.append(f'  n{nid} [label="{nid}: {_dot_escape(label(self.op(nid)))}"];')
        style = {"order": "", "body": ' [style=dashed, label="arm %d"]', "data": " [color=blue, style=dotted]"}
        for u, v, d in sorted(self.graph.edges(data=True), key=lambda e: (e[0], e[1], e[2]["kind"])):
            attr = style[d["kind"]] % d["arm"] if d["kind"] == "body" else style[d["kind"]]
            lines.append(f"  n{u} -> n{v}{attr};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"IRFunction({self.name!r}, params={self.params}, nodes={len(self)})"

    def pretty(self) -> str:
        """An indented listing, one op per line (for debugging and error reports)."""
        return "\n".join("  " * d + f"{n}: {label(self.op(n))}" for n, d in self.walk())


class Cursor:
    """Appends ops at the end of one region, linking order/body edges."""

    def __init__(self, fn: IRFunction, parent: int | None, arm: int) -> None:
        self.fn, self.parent, self.arm = fn, parent, arm
        existing = fn.region(parent, arm)
        self.last: int | None = existing[-1] if existing else None

    def append(self, op: Any, loc: Loc | None = None) -> int:
        nid = self.fn.add_node(op, loc)
        if self.last is not None:
            self.fn.add_edge(self.last, nid, "order")
        elif self.parent is None:
            self.fn.entry = nid
        else:
            self.fn.add_edge(self.parent, nid, "body", self.arm)
        self.last = nid
        return nid

    def arm_cursor(self, node: int, arm: int) -> "Cursor":
        return Cursor(self.fn, node, arm)


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
