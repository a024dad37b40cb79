"""What `sglc compile`, `sglang run` and `sglang serve` accept, loaded into a plan.

A target is a `.sgl` source (compiled now), a `.sglc` artifact (loaded as is), or `module.py:fn`: the
`@sgl.function` named `fn` of a Python file, traced with symbolic arguments and compiled with the same
passes. `load_plan(target)` is the one entry point for all three (the serve helper calls it too);
mistakes are `SglError` / `PlanError` naming the target.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from sglang.lang.program import SglFunction
from sglang.lang.sgl.errors import SglError
from sglang.compiler.plan import Plan, PlanError


def is_python_target(target: str) -> bool:
    """`path/to/module.py:fn`."""
    path, sep, name = target.rpartition(":")
    return bool(sep and name and path.endswith(".py"))


def load_python_function(target: str) -> SglFunction:
    """Import `module.py` (its folder first on sys.path, for its own imports) and return its `fn`."""
    path_s, _, name = target.rpartition(":")
    path = Path(path_s)
    if not path.is_file():
        raise PlanError(f"no such file: {path_s}")
    mod_name = f"sglang_target_{path.stem}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PlanError(f"cannot import {path_s} as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    fn = getattr(module, name, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, SglFunction))
        raise SglError(f"{path_s} has no {name!r}", hint=f"@sgl.function(s) there: {', '.join(found) or 'none'}")
    if not isinstance(fn, SglFunction):
        raise SglError(f"{target} is a {type(fn).__name__}, not an @sgl.function")
    return fn


def compile_python(target: str, opt_level: int = 1, disabled: tuple[str, ...] = (), enabled: tuple[str, ...] = (),
                   log: list[str] | None = None, **compile_kw: Any) -> Plan:
    """Trace `module.py:fn` (arguments symbolic) and compile it; an untraceable function is an SglError."""
    from sglang.compiler.lower import compile_ir
    from sglang.compiler.passes import enabled_passes

    fn = load_python_function(target)
    try:
        ir_fn = fn.trace()
    except Exception as e:  # TraceError, IRError, or the program's own error while tracing
        raise SglError(f"{target} cannot be compiled: {type(e).__name__}: {e}",
                       hint="fn.run / fn.run_batch still run it (in the interpreter)") from None
    plan, _ = compile_ir({ir_fn.name: ir_fn}, enabled_passes(opt_level, disabled, enabled), source=target, log=log,
                         **compile_kw)  # cost / decisions for --explain
    return plan


def load_plan(target: str, opt_level: int = 1, disabled: tuple[str, ...] = (), model: str | None = None,
              force: bool = False, **kw: Any) -> Plan:
    """A `.sglc` artifact (validated and checked fresh for `model` before any model loads; `force` runs a
    stale one with a warning), a `.sgl` source compiled now, or `module.py:fn` traced and compiled now."""
    if is_python_target(target):
        return compile_python(target, opt_level, disabled, **kw)
    p = Path(target)
    if not p.is_file():
        raise PlanError(f"no such file: {target}")
    if p.suffix == ".sgl":
        from sglang.compiler.lower import compile_source

        return compile_source(p, opt_level=opt_level, disabled=disabled, **kw)
    from sglang.compiler.artifact import load_artifact

    return load_artifact(p, model=model, force=force)
