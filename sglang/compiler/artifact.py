"""Artifact checks: what a `.sglc` records about how it was built, and the checks run when one is loaded.

An artifact records the sha256 of its source files, the compiler version, the pass list and the target
model (`Plan.source_sha256`, `Plan.compiler_version`, `Plan.passes`, `Plan.model`). Loading runs
`validate_plan` (every step id, dep, arm, kind, sampling parameter and constraint-table reference, and the
types of the IR it carries) before
any model loads, so a corrupt plan fails with the function, step and source location instead of an
IndexError mid-run; `check_fresh` refuses a stale artifact (source edited since compiling) or one built
for another model, unless forced, when it only warns.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Iterable

from sglang import __version__ as COMPILER_VERSION
from sglang.compiler.plan import FunctionPlan, Plan, PlanError, Step

STEP_KINDS = frozenset({"text", "arg", "var", "interp", "gen", "select", "role_begin", "role_end", "image",
                        "video", "branch", "loop", "fork", "join", "return"})
CONTROL_KINDS = frozenset({"branch", "loop", "fork"})  # the kinds whose steps own nested regions (arms)


def source_digest(texts: dict[str, str]) -> str:
    """sha256 over every source file of a program (sorted by name), so editing an import also counts."""
    h = hashlib.sha256()
    for name in sorted(texts):
        h.update(name.encode("utf-8") + b"\0" + texts[name].encode("utf-8") + b"\0")
    return h.hexdigest()


def digest_of_file(path: str | Path) -> str | None:
    """The digest `sglc compile` records for this source now, or None when it is not a readable program."""
    from sglang.lang.sgl.errors import SglError
    from sglang.compiler.loader import load_program

    try:
        program = load_program(path)
    except (SglError, OSError):
        return None
    # resolved names: the same files hash the same whichever cwd they were named from
    return source_digest({str(Path(k).resolve()): v for k, v in program.texts.items()})


def stamp(plan: Plan, source: str | Path | None) -> Plan:
    """Record the compiler version and, for a source file, its digest (what `check_fresh` compares)."""
    plan.compiler_version = COMPILER_VERSION
    if source is not None:
        plan.source_sha256 = digest_of_file(source)
    return plan


def _where(fplan: FunctionPlan, step: Step) -> str:
    loc = f" at {step.loc}" if step.loc else ""
    return f"function {fplan.name!r}, step {step.id} ({step.kind}){loc}"


def _check_ids(fplan: FunctionPlan, what: str, ids: Iterable[Any], where: str) -> None:
    n = len(fplan.steps)
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            raise PlanError(f"corrupt plan: {where}: {what} names step {i!r}, but the function has steps 0..{n - 1}")


def _check_sampling(sp: Any, where: str) -> None:
    from sglang.runtime.sampling.sampling_params import SamplingParams

    try:
        SamplingParams.from_dict(sp).verify()
    except (ValueError, TypeError) as e:
        raise PlanError(f"bad plan: {where}: {e}") from None


def _check_step(plan: Plan, fplan: FunctionPlan, step: Step) -> None:
    where = _where(fplan, step)
    if step.kind not in STEP_KINDS:
        raise PlanError(f"corrupt plan: {where}: unknown step kind {step.kind!r} "
                        f"(kinds: {', '.join(sorted(STEP_KINDS))})")
    if not isinstance(step.args, dict):
        raise PlanError(f"corrupt plan: {where}: args must be an object")
    _check_ids(fplan, "a dependency", step.deps, where)
    if step.arms and step.kind not in CONTROL_KINDS:
        raise PlanError(f"corrupt plan: {where}: a {step.kind} step has no nested regions")
    for arm in step.arms:
        _check_ids(fplan, "an arm", arm, where)
    if step.kind == "gen":
        if not isinstance(step.args.get("name"), str):
            raise PlanError(f"corrupt plan: {where}: a gen step needs a variable name")
        _check_sampling(step.args.get("sampling_params", {}), where)
    key = step.args.get("constraint")
    if isinstance(key, str) and key not in plan.constraints:
        raise PlanError(f"corrupt plan: {where}: constraint table {key!r} is missing from the artifact")


def validate_plan(plan: Plan) -> Plan:
    """Check the whole plan (raises PlanError naming the function, step and source location)."""
    for fplan in plan.functions.values():
        _check_ids(fplan, "the entry region", fplan.entry, f"function {fplan.name!r}")
        for step in fplan.steps:
            _check_step(plan, fplan, step)
    _check_types(plan)
    return plan


def _check_types(plan: Plan) -> None:
    """The type checker `sglc` ran, again on the artifact's IR (one built by an older sglc, or edited)."""
    from sglang.lang.ir import IRError, IRFunction
    from sglang.lang.ir.types import check_types

    for name, data in plan.ir.items():
        try:
            check_types(IRFunction.from_json(data))
        except IRError as e:
            raise PlanError(f"bad plan: function {name!r}: {e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise PlanError(f"corrupt plan: the IR of function {name!r}: {e}") from None


def _problem(plan: Plan, model: str | None) -> list[str]:
    out = []
    if plan.source_sha256 and plan.source and Path(plan.source).is_file():
        now = digest_of_file(plan.source)
        if now is not None and now != plan.source_sha256:
            out.append(f"stale artifact: {plan.source} changed after it was compiled; recompile with "
                       f"`sglc compile {plan.source}`")
    if plan.model and model and plan.model != model:
        out.append(f"the artifact's constraint tables were built for model {plan.model!r}, "
                   f"not the served model {model!r}; recompile with --model {model}")
    if plan.compiler_version and plan.compiler_version != COMPILER_VERSION:
        out.append(f"the artifact was compiled by sglc {plan.compiler_version}, this is {COMPILER_VERSION}")
    return out


def check_fresh(plan: Plan, model: str | None = None, force: bool = False) -> list[str]:
    """Refuse a stale or mismatched artifact (PlanError), or with `force` warn on stderr; returns the problems."""
    problems = _problem(plan, model)
    if problems and not force:
        raise PlanError("; ".join(problems) + " (or pass --force to run it anyway)")
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return problems


def load_artifact(path: str | Path, model: str | None = None, force: bool = False) -> Plan:
    """Load, validate and freshness-check a `.sglc` before any model loads."""
    plan = validate_plan(Plan.load(path))
    check_fresh(plan, model, force)
    return plan


__all__ = ["COMPILER_VERSION", "STEP_KINDS", "source_digest", "digest_of_file", "stamp", "validate_plan",
           "check_fresh", "load_artifact"]
