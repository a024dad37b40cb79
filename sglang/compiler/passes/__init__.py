"""IR passes, one module each, run in a fixed order; each can be switched off (`-O0`, `-fno-<pass>`).

Transform passes rewrite the IR (dead-branch elimination, prefix hoisting). Annotation passes leave the
ops alone and record decisions in `fn.attrs` keyed by node id (fork batching, select lowering, speculation,
constrained precompilation); `compiler/lower.py` turns those into plan step flags. Constant folding and
text merging are no pass: they belong to the canonical form (`lang.ir.canon`) that `run_passes` starts
from, so they happen at -O0 too. Every pass takes and returns an `IRFunction` and a shared `PassContext`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sglang.lang import ir
from sglang.compiler.cost import CostModel

# pass name (the -f<name> flag) -> module; order is the pipeline order
PASS_ORDER = ("dead-branch", "prefix-hoist", "fork-batching", "select-lowering", "speculation", "constrained-precompile")


@dataclass
class Decision:
    """One place a pass looked at: what it would do, the predicted saving per run, and whether it did."""

    pass_name: str
    function: str
    node: int | None
    loc: ir.Loc | None
    what: str
    saving_s: float
    applied: bool
    why: str = ""


@dataclass
class PassContext:
    tokenizer: Any = None  # HF tokenizer when compiling for a known model (token-level tables)
    constraints: dict[str, Any] = field(default_factory=dict)  # artifact section filled by constrained-precompile
    log: list[str] = field(default_factory=list)  # one line per change, for --emit and tests
    cost: CostModel = field(default_factory=CostModel)
    decisions: list[Decision] = field(default_factory=list)  # for --explain

    def decide(self, pass_name: str, fn: ir.IRFunction, node: int | None, what: str, saving: tuple[float, str],
               always: bool = False) -> bool:
        """Record a decision; True when the pass should act (a positive predicted saving, or `always` for a
        rewrite that costs nothing at run time either way)."""
        seconds, why = saving
        applied = always or seconds > 0
        loc = fn.loc_of(node) if node is not None and node in fn.graph else fn.loc
        self.decisions.append(Decision(pass_name, fn.name, node, loc, what, seconds, applied, why))
        return applied


def get_pass(name: str) -> Callable[[ir.IRFunction, PassContext], ir.IRFunction]:
    from sglang.compiler.passes import (constrained_precompile, dead_branch, fork_batching, prefix_hoist,
                                        select_lowering, speculation)

    table = {"dead-branch": dead_branch.run, "prefix-hoist": prefix_hoist.run,
             "fork-batching": fork_batching.run, "select-lowering": select_lowering.run,
             "speculation": speculation.run, "constrained-precompile": constrained_precompile.run}
    if name not in table:
        raise ValueError(f"unknown pass {name!r} (passes: {', '.join(PASS_ORDER)})")
    return table[name]


def enabled_passes(opt_level: int = 1, disabled: tuple[str, ...] = (), enabled: tuple[str, ...] = ()) -> list[str]:
    """-O0 runs none (enabled ones still run); -O1 (default) runs all but the -fno-<pass> ones."""
    for n in (*disabled, *enabled):
        if n not in PASS_ORDER:
            raise ValueError(f"unknown pass {n!r} (passes: {', '.join(PASS_ORDER)})")
    on = set(PASS_ORDER) if opt_level > 0 else set()
    on = (on - set(disabled)) | set(enabled)
    return [p for p in PASS_ORDER if p in on]


def run_passes(fn: ir.IRFunction, names: list[str], ctx: PassContext | None = None) -> ir.IRFunction:
    ctx = ctx or PassContext()
    fn = ir.canonicalize(fn)
    for name in names:
        fn = get_pass(name)(fn, ctx)
        fn.check()
    fn.attrs["passes"] = list(names)
    return fn
