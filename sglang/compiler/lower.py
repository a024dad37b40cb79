"""Lower an (optimized) IR function to a `FunctionPlan`, and drive the whole compile pipeline.

`compile_source(...)`: parse + imports → AST → IR (checked, type-checked: `lang.ir.types`) → passes → plan. Step ids follow the IR's
canonical pre-order; each step's deps are its region predecessor (or enclosing control step) and the
producers of what it reads (the IR's data edges); the passes' annotations become step args.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sglang.lang import ir
from sglang.lang.gen_rules import LOGPROB_OPTIONS, typed_regex
from sglang.lang.ir.expr import expr_to_json
from sglang.lang.ir.types import check_types
from sglang.lang.sgl.errors import SglError, SglSemanticError, SourcePos
from sglang.compiler.irgen.build import lower_program
from sglang.compiler.loader import load_program
from sglang.compiler.cost import CostModel
from sglang.compiler.passes import Decision, PassContext, enabled_passes, run_passes
from sglang.compiler.plan import FunctionPlan, Plan, Step


def _ex(e: Any) -> Any:
    return expr_to_json(e) if e is not None else None


def lower_function(fn: ir.IRFunction) -> FunctionPlan:
    order = [n for n, _ in fn.walk()]
    sid = {n: i for i, n in enumerate(order)}
    forks = fn.attrs.get("fork_batching", {})
    selects = set(fn.attrs.get("select_batched", []))
    constraints = fn.attrs.get("constraints", {})
    speculate = fn.attrs.get("speculate", {})
    steps: list[Step] = []
    for n in order:
        op = fn.op(n)
        args: dict[str, Any] = {}
        if isinstance(op, ir.Text):
            kind, args = "text", {"value": op.value}
        elif isinstance(op, ir.Arg):
            kind, args = "arg", {"name": op.name}
        elif isinstance(op, ir.VarRef):
            kind, args = "var", {"name": op.name}
            if op.fork is not None:
                args.update(fork=sid[op.fork], branch=op.branch or 0)
        elif isinstance(op, ir.Interp):
            kind, args = "interp", {"expr": _ex(op.expr)}
        elif isinstance(op, ir.Gen):
            sp = op.sampling_params()
            if op.regex is None and op.json_schema is None and op.dtype is not None:
                sp["regex"] = typed_regex(op.dtype)  # the same regex the precompile pass built tables for
            kind, args = "gen", {"name": op.name, "sampling_params": sp}
            if op.dtype:
                args["dtype"] = op.dtype
            for k in LOGPROB_OPTIONS:
                if getattr(op, k) is not None:
                    args[k] = getattr(op, k)
        elif isinstance(op, ir.Select):
            kind = "select"
            args = {"name": op.name, "method": op.choices_method, "temperature": op.temperature,
                    "batched": n in selects}
            if isinstance(op.choices, tuple):
                args["choices"] = list(op.choices)
            else:
                args["choices_expr"] = _ex(op.choices)
        elif isinstance(op, ir.RoleBegin):
            kind, args = "role_begin", {"role": op.role}
        elif isinstance(op, ir.RoleEnd):
            kind, args = "role_end", {"role": op.role}
        elif isinstance(op, ir.Image):
            kind, args = "image", {"src": _ex(op.src)}
        elif isinstance(op, ir.Video):
            kind, args = "video", {"src": _ex(op.src), "num_frames": op.num_frames}
        elif isinstance(op, ir.Branch):
            kind, args = "branch", {"conds": [_ex(c) for c in op.conds]}
        elif isinstance(op, ir.Loop):
            kind = "loop"
            args = {"var": op.var, "iterable": _ex(op.iterable), "cond": _ex(op.cond), "max_iters": op.max_iters}
        elif isinstance(op, ir.Fork):
            kind = "fork"
            args = {"n": op.n if isinstance(op.n, int) else _ex(op.n), "shared_body": op.shared_body,
                    "index_var": op.index_var, "batched": str(n) in forks,
                    "warm_suffix": forks.get(str(n), {}).get("warm_suffix", "")}
        elif isinstance(op, ir.Join):
            kind, args = "join", {"fork": sid[op.fork], "mode": op.mode}
        elif isinstance(op, ir.Return):
            kind, args = "return", {"value": _ex(op.value)}
        elif isinstance(op, ir.Call):
            raise SglSemanticError(f"call of {op.func!r} was not inlined; the plan executor runs inlined calls only")
        else:  # pragma: no cover
            raise TypeError(f"cannot lower {op!r}")
        c = constraints.get(str(n))
        if c is not None:
            args["constraint"] = c
        spec = speculate.get(str(n))
        if spec is not None:  # node ids -> step ids (a branch: one list per arm)
            args["speculate"] = [[sid[m] for m in arm] for arm in spec] if isinstance(op, ir.Branch) else \
                [sid[m] for m in spec]
        deps: list[int] = []
        u = next((u for u, _, d in fn.graph.in_edges(n, data=True) if d["kind"] in ("order", "body")), None)
        if u is not None:
            deps.append(sid[u])
        deps += sorted(sid[u] for u, _, d in fn.graph.in_edges(n, data=True) if d["kind"] == "data")
        arms = [[sid[m] for m in fn.region(n, a)] for a in range(ir.num_arms(op))]
        loc = fn.loc_of(n)
        steps.append(Step(len(steps), kind, args, sorted(set(deps)), arms, str(loc) if loc else None))
    generated = sorted({s.args["name"] for s in steps if s.kind in ("gen", "select") and s.args.get("name")})
    hoisted = int(fn.attrs.get("hoisted_prefix_ops", 0))
    kind = fn.attrs.get("return_kind") or _return_kind(fn)
    returns = {"kind": kind}
    if "return_keys" in fn.attrs:
        returns["keys"] = fn.attrs["return_keys"]
    if fn.attrs.get("returns"):  # the declared type: the executor converts a typed gen's text to it
        returns["type"] = fn.attrs["returns"]
    return FunctionPlan(fn.name, list(fn.params), dict(fn.attrs.get("param_types", {p: "any" for p in fn.params})),
                        dict(fn.defaults), returns, [sid[n] for n in fn.region()], steps, hoisted, generated)


def _return_kind(fn: ir.IRFunction) -> str:
    """For IR that came without a signature (traced Python): single value or none."""
    ret = [n for n in fn.region() if isinstance(fn.op(n), ir.Return)]
    return "single" if ret and fn.op(ret[0]).value is not None else "none"


def _ir_error_to_sgl(e: ir.IRError, texts: dict[str, str]) -> SglError:
    loc = e.loc
    if loc is None or loc.file is None:
        return SglSemanticError(e.reason)
    return SglSemanticError(e.reason, SourcePos.of(texts.get(loc.file, ""), loc.file, loc.line or 0, loc.col or 0))


def compile_ir(fns: dict[str, ir.IRFunction], passes: list[str], tokenizer: Any = None,
               source: str | None = None, texts: dict[str, str] | None = None, model: str | None = None,
               log: list[str] | None = None, cost: CostModel | None = None,
               decisions: list[Decision] | None = None) -> tuple[Plan, dict[str, ir.IRFunction]]:
    """IR → type check → passes (deciding with `cost`; what they decided is appended to `decisions`) → plan."""
    ctx = PassContext(tokenizer=tokenizer, cost=cost or CostModel())
    optimized: dict[str, ir.IRFunction] = {}
    for name, fn in fns.items():
        fn.attrs.update(getattr(fn, "sgl_signature", {}))
        try:
            check_types(fn)  # every frontend's IR, before any pass rewrites it
            optimized[name] = run_passes(fn, passes, ctx)
        except ir.IRError as e:
            raise _ir_error_to_sgl(e, texts or {}) from None
    if log is not None:
        log.extend(ctx.log)
    if decisions is not None:
        decisions.extend(ctx.decisions)
    plan = Plan({n: lower_function(f) for n, f in optimized.items()}, source, list(passes), ctx.constraints,
                {n: f.to_json() for n, f in optimized.items()}, model)
    return plan, optimized


def compile_source(path: str | Path | None = None, *, text: str | None = None, file: str | None = None,
                   opt_level: int = 1, disabled: tuple[str, ...] = (), enabled: tuple[str, ...] = (),
                   tokenizer: Any = None, model: str | None = None, functions: list[str] | None = None,
                   log: list[str] | None = None, cost: CostModel | None = None,
                   decisions: list[Decision] | None = None) -> Plan:
    """Compile a `.sgl` program to a plan. User mistakes raise `SglError` (formatted, with position)."""
    program = load_program(path, text=text, file=file)
    fns = lower_program(program, functions)
    passes = enabled_passes(opt_level, disabled, enabled)
    plan, _ = compile_ir(fns, passes, tokenizer, str(path or file or "<string>"), program.texts, model, log,
                         cost, decisions)
    return plan


def plan_for_ir(fn: ir.IRFunction, opt_level: int = 1, disabled: tuple[str, ...] = ()) -> Plan:
    """Compile an IR function from elsewhere (e.g. a traced Python program) into a plan."""
    plan, _ = compile_ir({fn.name: fn}, enabled_passes(opt_level, disabled), source=f"<ir {fn.name}>")
    return plan


def compile_function(sgl_function: Any, opt_level: int = 1, disabled: tuple[str, ...] = (), **constants: Any) -> Plan:
    """Compile a Python `@sgl.function` ahead of time: trace it to IR (arguments stay symbolic unless
    given as constants), then run the same passes and lowering as for `.sgl` source."""
    return plan_for_ir(sgl_function.trace(**constants), opt_level, disabled)


__all__ = ["compile_source", "compile_ir", "compile_function", "lower_function", "plan_for_ir"]
