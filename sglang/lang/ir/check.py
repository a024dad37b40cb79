"""Validation and data-edge derivation of `lang.ir.graph.IRFunction` (its `check()` and `add_data_edges()`).

One scope walk serves validation and data edges: it visits regions in program order with the set
of variables that may be defined at each point (Gen/Select names -> defining node ids; branches
and loops merge as "may define"), the loop/fork index variables in scope, and the forks started
so far with each branch's variables (a fork started inside a per-branch fork's branch included: its
branches are read after the outer fork, as the root of a tree of thought does). Reads (Arg, VarRef,
names in expressions) are resolved against it; an unresolved read is an `IRError` naming the variable, node and source location.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sglang.lang.ir.expr import check_expr, expr_to_str, names_in
from sglang.lang.gen_rules import gen_problems
from sglang.lang.ir.ops import (CHOICES_METHODS, JOIN_MODES, ROLES, STRUCTURED, Arg, Branch, Call, Fork, Gen, IRError,
                                Join, Loop, Return, RoleBegin, RoleEnd, Select, Text, VarRef, Video, defines, num_arms,
                                op_exprs)

if TYPE_CHECKING:  # graph.py calls this module: a run-time import back would be a circle
    from sglang.lang.ir.graph import IRFunction

@dataclass
class _Scope:
    vars: dict[str, set[int]] = field(default_factory=dict)  # variable -> nodes that may define it
    locals: set[str] = field(default_factory=set)  # loop / fork index variables
    forks: dict[int, list[dict[str, set[int]]]] = field(default_factory=dict)  # fork -> per-branch vars
    role: str | None = None  # open role on this stream

    def copy(self) -> "_Scope":
        return _Scope({k: set(v) for k, v in self.vars.items()}, set(self.locals), dict(self.forks), self.role)

    def merge(self, other: "_Scope") -> None:
        for k, v in other.vars.items():
            self.vars.setdefault(k, set()).update(v)
        self.forks.update(other.forks)


class _Walker:
    def __init__(self, fn: IRFunction, strict: bool) -> None:
        self.fn, self.strict = fn, strict
        self.edges: set[tuple[int, int]] = set()
        self.visited: set[int] = set()

    def fail(self, node: int | None, msg: str) -> None:
        if self.strict:
            op = self.fn.op(node) if node is not None else None
            loc = self.fn.loc_of(node) if node is not None else self.fn.loc
            raise IRError(msg, node=node, op=op, loc=loc, function=self.fn.name)

    # -- reads
    def read_var(self, node: int, scope: _Scope, name: str, fork: int | None, branch: int | None) -> None:
        if fork is None:
            if name in scope.locals:
                return
            if name in scope.vars:
                self.edges.update((d, node) for d in scope.vars[name])
                return
            if name in self.fn.params:
                return
            self.fail(node, f"variable {name!r} is read but no gen/select before it defines it "
                            f"(and it is not an argument of {self.fn.name!r})")
            return
        branches = scope.forks.get(fork)
        if branches is None:
            self.fail(node, f"variable {name!r} is read from fork node {fork}, which has not run before this point")
            return
        b = branch or 0
        if len(branches) > 1 and not 0 <= b < len(branches):
            self.fail(node, f"fork node {fork} has {len(branches)} branches; branch {b} does not exist")
            return
        defs = branches[0 if len(branches) == 1 else b]
        if name not in defs:
            self.fail(node, f"variable {name!r} is not defined by branch {b} of fork node {fork}")
            return
        self.edges.update((d, node) for d in defs[name])

    def read_expr(self, node: int, scope: _Scope, expr: Any) -> None:
        try:
            check_expr(expr)
        except ValueError as exc:
            self.fail(node, f"bad expression {expr_to_str(expr)}: {exc}")
        for n in names_in(expr):
            self.read_var(node, scope, n.name, n.fork, n.branch)

    # -- regions
    def region(self, parent: int | None, arm: int, scope: _Scope) -> _Scope:
        nodes = self.fn.region(parent, arm)
        for i, node in enumerate(nodes):
            if node in self.visited:
                self.fail(node, "node belongs to two regions")
                continue
            self.visited.add(node)
            op = self.fn.op(node)
            self.check_op(node, op, scope)
            if isinstance(op, Return) and i != len(nodes) - 1:
                self.fail(nodes[i + 1], "op after Return is unreachable")
            if isinstance(op, STRUCTURED):
                self.structured(node, op, scope)
            name = defines(op)
            if name is not None:
                scope.vars[name] = {node}
        return scope

    def structured(self, node: int, op: Any, scope: _Scope) -> None:
        arms = num_arms(op)
        for _, _, d in self.fn.graph.out_edges(node, data=True):
            if d["kind"] == "body" and d["arm"] >= arms:
                self.fail(node, f"body edge to arm {d['arm']} but the op has {arms} arm(s)")
        if isinstance(op, Branch):
            merged = scope.copy() if op.conds[-1] is not None else _Scope(role=scope.role)
            for a in range(arms):
                out = self.region(node, a, scope.copy())
                self.same_role(node, scope, out)
                merged.merge(out)
            scope.vars, scope.forks = merged.vars, merged.forks
        elif isinstance(op, Loop):
            inner = scope.copy()
            if op.var:
                inner.locals.add(op.var)
            out = self.region(node, 0, inner)
            self.same_role(node, scope, out)
            scope.merge(out)
        elif isinstance(op, Fork):
            branches = []
            for a in range(arms):
                inner = scope.copy()
                if op.index_var:
                    inner.locals.add(op.index_var)
                out = self.region(node, a, inner)
                self.same_role(node, scope, out)
                branches.append(out.vars)
                if not op.shared_body and isinstance(op.n, int):
                    # forks started inside a branch stay readable after it (tree of thought: the root reads
                    # a nested fork's branches); not from a shared body, whose nested fork runs once per branch
                    scope.forks.update((f, b) for f, b in out.forks.items() if f not in scope.forks)
            scope.forks[node] = branches

    def same_role(self, node: int, before: _Scope, after: _Scope) -> None:
        if before.role != after.role:
            self.fail(node, f"a region of this op leaves role {after.role!r} open (it began with {before.role!r})")

    # -- one op
    def check_op(self, node: int, op: Any, scope: _Scope) -> None:
        for e in op_exprs(op):
            self.read_expr(node, scope, e)
        if isinstance(op, Arg) and op.name not in self.fn.params:
            self.fail(node, f"argument {op.name!r} is not a parameter of {self.fn.name!r} "
                            f"(parameters: {', '.join(self.fn.params) or 'none'})")
        elif isinstance(op, VarRef):
            self.read_var(node, scope, op.name, op.fork, op.branch)
        elif isinstance(op, Text) and not isinstance(op.value, str):
            self.fail(node, f"Text value must be a string, got {type(op.value).__name__}")
        elif isinstance(op, Gen):
            self.check_gen(node, op)
        elif isinstance(op, Select):
            if isinstance(op.choices, tuple) and (not op.choices or not all(isinstance(c, str) for c in op.choices)):
                self.fail(node, "select needs a non-empty list of string choices")
            if op.choices_method not in CHOICES_METHODS:
                self.fail(node, f"choices_method must be one of {', '.join(CHOICES_METHODS)}, got {op.choices_method!r}")
        elif isinstance(op, RoleBegin):
            if op.role not in ROLES:
                self.fail(node, f"role must be one of {', '.join(ROLES)}, got {op.role!r}")
            if scope.role is not None:
                self.fail(node, f"role {op.role!r} begins inside role {scope.role!r}")
            scope.role = op.role
        elif isinstance(op, RoleEnd):
            if scope.role != op.role:
                self.fail(node, f"role {op.role!r} ends but the open role is {scope.role!r}")
            scope.role = None
        elif isinstance(op, Branch):
            if not op.conds or any(c is None for c in op.conds[:-1]):
                self.fail(node, "a branch needs conditions, with `else` (None) only last")
        elif isinstance(op, Loop):
            if (op.var is None or op.iterable is None) and op.cond is None:
                self.fail(node, "a loop needs `var` and `iterable` (for) or `cond` (while)")
        elif isinstance(op, Fork):
            if isinstance(op.n, int) and op.n < 1:
                self.fail(node, f"fork needs n >= 1, got {op.n}")
        elif isinstance(op, Join):
            if op.fork not in scope.forks:
                self.fail(node, f"join of fork node {op.fork}, which has not run before this point")
            if op.mode not in JOIN_MODES:
                self.fail(node, f"join mode must be one of {', '.join(JOIN_MODES)}, got {op.mode!r}")
        elif isinstance(op, Video) and op.num_frames < 1:
            self.fail(node, f"video needs num_frames >= 1, got {op.num_frames}")
        elif isinstance(op, Call) and not op.func:
            self.fail(node, "call needs a function name")

    def check_gen(self, node: int, op: Gen) -> None:
        for msg in gen_problems(op):  # one owner of the gen rules; the location is ours
            self.fail(node, msg)


def _walk(fn: IRFunction, strict: bool) -> _Walker:
    w = _Walker(fn, strict)
    out = w.region(None, 0, _Scope())
    if out.role is not None:
        w.fail(None, f"role {out.role!r} is never ended")
    orphans = sorted(set(fn.graph.nodes) - w.visited)
    if orphans:
        w.fail(orphans[0], f"{len(orphans)} node(s) are not reachable from the function entry")
    return w


def _set_data_edges(fn: IRFunction, edges: set[tuple[int, int]]) -> None:
    stale = [(u, v) for u, v, k in fn.graph.edges(keys=True) if k == "data"]
    fn.graph.remove_edges_from([(u, v, "data") for u, v in stale])
    for u, v in sorted(edges):
        fn.add_edge(u, v, "data")


def check_function(fn: IRFunction) -> None:
    for n in fn.graph.nodes:
        if sum(1 for _, _, k in fn.graph.out_edges(n, keys=True) if k == "order") > 1:
            raise IRError("more than one successor", node=n, op=fn.op(n), loc=fn.loc_of(n), function=fn.name)
        if sum(1 for _, _, k in fn.graph.in_edges(n, keys=True) if k != "data") > 1:
            raise IRError("more than one predecessor", node=n, op=fn.op(n), loc=fn.loc_of(n), function=fn.name)
    _set_data_edges(fn, _walk(fn, strict=True).edges)


def compute_data_edges(fn: IRFunction) -> None:
    _set_data_edges(fn, _walk(fn, strict=False).edges)
