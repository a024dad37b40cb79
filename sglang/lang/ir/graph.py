"""The program IR shared by tracing (`fn.trace()`) and the `.sgl` compiler.

An `IRFunction` wraps a `networkx.MultiDiGraph`. Each node has an int id, an `op` (one of the frozen
dataclasses below) and an optional source `loc` (`Loc(file, line, col)`, kept outside the op so
that ops compare by meaning only). Edges have a key = kind:

* ``"order"``  program order inside one region: A then B on the same stream (program state).
* ``"body"``   from a structured op (Branch, Loop, Fork) to the FIRST node of its region number
               ``arm`` (edge attribute). A region is the chain of "order" edges from that node.
               A region with no body edge is empty. Control continues after the structured op
               along the op's own "order" edge (structured, as in MLIR regions: no merge nodes).
* ``"data"``   from the Gen/Select that (may) define a variable to each node that reads it.
               Derived: `add_data_edges()` recomputes them (done by `check()`/`finish()`).

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

Canonical form (`canonicalize`), agreed between tracing and the compiler: adjacent Text merged,
empty Text dropped, Interp of a constant -> Text, Interp of an argument -> Arg, Interp of a
generated variable -> VarRef, constant sub-expressions folded, shared-body forks with literal n expanded, node ids renumbered
0..n-1 in region pre-order (a structured op, then its arms in order, then its successor), and
node references inside ops (``fork=``) remapped. `structural_equal(a, b)` compares canonical
JSON without locations. Constant folding of literal branch conditions is a compiler pass, not
canonicalization.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import networkx as nx

from sglang.lang.ir.expr import (Binary, CallExpr, Const, Expr, Index, ListExpr, Name, Unary, check_expr,  # noqa: F401
                      eval_expr, expr_from_json, expr_to_json, expr_to_str, is_expr, map_expr, names_in,
                      substitute, value_from_json)

IR_FORMAT = "sglang-ir/1"
ROLES = ("system", "user", "assistant")
CHOICES_METHODS = ("token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized")
JOIN_MODES = ("gather_variable", "concate_and_append")


@dataclass(frozen=True)
class Loc:
    file: Optional[str] = None
    line: Optional[int] = None
    col: Optional[int] = None

    def __str__(self) -> str:
        parts = [self.file or "<unknown>"] + [str(x) for x in (self.line, self.col) if x is not None]
        return ":".join(parts)


class IRError(ValueError):
    """An invalid IR (or program), naming the node, its op and its source location."""

    def __init__(self, message: str, node: int | None = None, op: Any = None, loc: Loc | None = None,
                 function: str | None = None) -> None:
        self.node, self.op, self.loc, self.function, self.reason = node, op, loc, function, message
        where = f"{loc}: " if loc is not None else ""
        what = []
        if function:
            what.append(f"function {function!r}")
        if node is not None:
            what.append(f"node {node} ({describe(op)})" if op is not None else f"node {node}")
        super().__init__(f"{where}{message}" + (f" [{', '.join(what)}]" if what else ""))


# ---------------------------------------------------------------- node types (ops)
@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class Arg:
    name: str


@dataclass(frozen=True)
class VarRef:
    name: str
    fork: Optional[int] = None  # Fork node id when reading a fork branch's variable
    branch: Optional[int] = None


@dataclass(frozen=True)
class Interp:
    expr: Expr


@dataclass(frozen=True)
class Gen:
    """Generate into variable `name` (None: append only). None fields inherit the run defaults."""

    name: Optional[str] = None
    max_tokens: Optional[int] = None
    min_tokens: Optional[int] = None
    stop: Optional[tuple[str, ...]] = None
    stop_token_ids: Optional[tuple[int, ...]] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    frequency_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    ignore_eos: Optional[bool] = None
    regex: Optional[str] = None
    json_schema: Optional[str] = None  # a JSON string (dicts are canonicalized with sorted keys)
    dtype: Optional[str] = None  # "int" | "str" | "float" | "bool"
    return_logprob: Optional[bool] = None
    logprob_start_len: Optional[int] = None
    top_logprobs_num: Optional[int] = None
    return_text_in_logprobs: Optional[bool] = None

    def sampling_params(self) -> dict[str, Any]:
        """The native `sampling_params` keys this gen sets (docs/ARCHITECTURE.md)."""
        out: dict[str, Any] = {}
        for f in _SAMPLING_FIELDS:
            v = getattr(self, f)
            if v is not None:
                out[_NATIVE_NAMES.get(f, f)] = list(v) if isinstance(v, tuple) else v
        return out


_SAMPLING_FIELDS = ("max_tokens", "min_tokens", "stop", "stop_token_ids", "temperature", "top_p", "top_k",
                    "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty", "ignore_eos",
                    "regex", "json_schema")
_NATIVE_NAMES = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}


@dataclass(frozen=True)
class Select:
    name: Optional[str]
    choices: Union[tuple[str, ...], Expr]  # literal strings, or an expression giving a list
    choices_method: str = "token_length_normalized"
    temperature: float = 0.0


@dataclass(frozen=True)
class RoleBegin:
    role: str


@dataclass(frozen=True)
class RoleEnd:
    role: str


@dataclass(frozen=True)
class Image:
    src: Expr  # path / URL / base64 string


@dataclass(frozen=True)
class Video:
    src: Expr
    num_frames: int = 8


@dataclass(frozen=True)
class Branch:
    conds: tuple[Optional[Expr], ...]


@dataclass(frozen=True)
class Loop:
    var: Optional[str] = None
    iterable: Optional[Expr] = None
    cond: Optional[Expr] = None
    max_iters: Optional[int] = None


@dataclass(frozen=True)
class Fork:
    n: Union[int, Expr]
    shared_body: bool = False
    index_var: Optional[str] = None


@dataclass(frozen=True)
class Join:
    fork: int
    mode: str = "gather_variable"


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[tuple[str, Expr], ...] = ()


@dataclass(frozen=True)
class Return:
    value: Optional[Expr] = None


Op = Union[Text, Arg, VarRef, Interp, Gen, Select, RoleBegin, RoleEnd, Image, Video, Branch, Loop, Fork, Join,
           Call, Return]
OP_TYPES: dict[str, type] = {c.__name__: c for c in (Text, Arg, VarRef, Interp, Gen, Select, RoleBegin, RoleEnd,
                                                       Image, Video, Branch, Loop, Fork, Join, Call, Return)}
STRUCTURED = (Branch, Loop, Fork)
NODE_REF_FIELDS = ("fork",)  # op fields holding node ids (remapped on renumbering)


def describe(op: Any) -> str:
    name = getattr(op, "name", None)
    label = type(op).__name__
    return f"{label} {name!r}" if isinstance(name, str) and not isinstance(op, Name) else label


def num_arms(op: Any) -> int:
    if isinstance(op, Branch):
        return len(op.conds)
    if isinstance(op, Fork):
        return 1 if op.shared_body or not isinstance(op.n, int) else op.n
    if isinstance(op, Loop):
        return 1
    return 0


def defines(op: Any) -> Optional[str]:
    """The variable an op writes on its stream."""
    return op.name if isinstance(op, (Gen, Select)) else None


def op_exprs(op: Any) -> list[Expr]:
    """Expressions an op evaluates (its reads of arguments/variables, except VarRef/Arg)."""
    out: list[Expr] = []
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if is_expr(v):
            out.append(v)
        elif isinstance(v, tuple):
            for x in v:
                if is_expr(x):
                    out.append(x)
                elif isinstance(x, tuple) and len(x) == 2 and is_expr(x[1]):
                    out.append(x[1])
    return out


def map_op_exprs(op: Any, fn) -> Any:
    """Rebuild `op` with every expression field passed through `map_expr(e, fn)`."""
    changes = {}
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if is_expr(v):
            changes[f.name] = map_expr(v, fn)
        elif isinstance(v, tuple) and any(is_expr(x) or (isinstance(x, tuple) and len(x) == 2 and is_expr(x[1]))
                                          for x in v):
            changes[f.name] = tuple(map_expr(x, fn) if is_expr(x) else
                                    (x[0], map_expr(x[1], fn)) if isinstance(x, tuple) else x for x in v)
    return dataclasses.replace(op, **changes) if changes else op


def op_to_json(op: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": type(op).__name__}
    for f in dataclasses.fields(op):
        v = getattr(op, f.name)
        if f.default is not dataclasses.MISSING and v == f.default and type(v) is type(f.default):
            continue  # defaults omitted: compact, and stable when fields with defaults are added
        out[f.name] = _to_json(v)
    return out


def _to_json(v: Any) -> Any:
    if is_expr(v):
        return expr_to_json(v)
    if isinstance(v, tuple):
        return [_to_json(x) for x in v]
    return v


def op_from_json(d: dict[str, Any]) -> Any:
    cls = OP_TYPES.get(d.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown IR op {d.get('op')!r} in IR JSON")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names - {"op"})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} for IR op {cls.__name__}")
    kwargs = {k: value_from_json(v) for k, v in d.items() if k != "op"}
    if cls is Select and "choices" not in kwargs:
        raise ValueError("IR op Select needs 'choices'")
    return cls(**kwargs)


# ---------------------------------------------------------------- the graph
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
        from sglang.lang.ir.check import check_function

        check_function(self)
        return self

    def add_data_edges(self) -> None:
        from sglang.lang.ir.check import compute_data_edges

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


def label(op: Any) -> str:
    """A one-line human rendering of an op."""
    if isinstance(op, Text):
        return f"Text {op.value!r}"
    if isinstance(op, Interp):
        return f"Interp {{{expr_to_str(op.expr)}}}"
    if isinstance(op, VarRef):
        return f"VarRef {op.name!r}" + (f" of fork {op.fork} branch {op.branch}" if op.fork is not None else "")
    if isinstance(op, Branch):
        return "Branch " + " | ".join("else" if c is None else expr_to_str(c) for c in op.conds)
    fields = []
    for k, v in op_to_json(op).items():
        if k == "op":
            continue
        value = getattr(op, k)
        fields.append(f"{k}={expr_to_str(value)}" if is_expr(value) else f"{k}={v!r}")
    return f"{type(op).__name__}(" + ", ".join(fields) + ")"


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def canonicalize(fn: IRFunction) -> IRFunction:
    from sglang.lang.ir.check import canonicalize as _canon

    return _canon(fn)


def structural_equal(a: IRFunction, b: IRFunction) -> bool:
    """Same program up to locations, node numbering, and canonical rewrites."""
    return canonicalize(a).dumps(locs=False) == canonicalize(b).dumps(locs=False)
