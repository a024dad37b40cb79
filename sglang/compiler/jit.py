"""Compiled by default: the path `fn.run` / `fn.run_batch` of an `@sgl.function` take.

The first run traces the function with every argument symbolic (one plan for all items); where that
fails, the first run with a given argument shape traces it again (string arguments symbolic, every
other argument a constant of the shape: a fork count, a list a Python loop walks). It compiles the IR
with the same passes and lowering as `.sgl` source, and caches the plan on the function. The shape also
holds the plain values (numbers, strings, None) of the globals and closure cells the function's code
names, since tracing bakes them in: `MAX_TOKENS = 6` set between runs makes a new plan, as the
interpreter would read the new value. Every run of
that shape then goes through the plan executor: all items of a batch in one scheduler, forks and
selects batched across items. The results are ordinary `ProgramState`s (finished, so reading them never
blocks), with the same text, variables, meta info, messages and return value as the interpreter gives.

A function the tracer cannot follow (Python control flow on a generated value, a string method called
on a traced value...) is partially compiled (compiler/segments.py): its Python runs once per item and
what it appends between two reads of generated values runs as compiled segments, batched across items;
a debug line says why (once: the decision is cached).

What neither can run falls back to the interpreter, with a debug log line saying why:
  - a backend without the native batched transport (OpenAI), streaming, API speculative execution,
    images and videos (the interpreter owns their prompt tokens);
  - an item that fails in the plan or on the segment path: it runs again in the interpreter, so errors
    read the same.

`sglang.lang.program` cannot import this module (it is a layer below); this module registers itself
there on import, and the `sglang` hub imports it with the frontend API.
"""
from __future__ import annotations

import json
import logging
import types
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Optional

from sglang.lang.backends.base import NativeBackend
from sglang.lang.interpreter import ProgramState, StreamExecutor
from sglang.lang.program import SglFunction, register_compiled_path
from sglang.compiler.executor import ItemRun, PlanExecutor
from sglang.compiler.lower import plan_for_ir
from sglang.compiler.plan import Plan
from sglang.compiler.segments import SegmentItem, run_segments

log = logging.getLogger(__name__)

_UNSUPPORTED_STEPS = {"image": "an image input", "video": "a video input"}


@dataclass
class CompiledProgram:
    """A traced, compiled function for one argument shape; `plan is None` when it must be interpreted."""

    plan: Optional[Plan]
    constants: dict[str, Any]
    py_return: str = "list"
    reason: str = ""
    partial: bool = False  # untraceable as a whole: run as compiled segments (compiler/segments.py)


def shape_of(fn: SglFunction, arguments: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """(cache key, constants): string arguments stay symbolic, the others are traced as constants."""
    key, constants = [], {}
    for name in fn.arg_names:
        if name in fn.bind_arguments:
            continue  # bound arguments are constants of the function itself
        value = arguments.get(name)
        if isinstance(value, str):
            key.append((name, "str"))
        else:
            constants[name] = value
            key.append((name, _freeze(value)))
    return tuple(key), constants


_PLAIN = (str, int, float, bool, type(None))


def captured_values(fn: SglFunction) -> tuple:
    """The plain values of the globals and closure cells the function's code (nested code included) names."""
    func = fn.func
    names: set[str] = set()
    todo = [getattr(func, "__code__", None)]
    while todo:
        code = todo.pop()
        if code is None:
            continue
        names.update(code.co_names)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    glob = getattr(func, "__globals__", {})
    out = [(n, glob[n]) for n in sorted(names) if n in glob and isinstance(glob[n], _PLAIN)]
    cells = zip(func.__code__.co_freevars, func.__closure__ or ()) if hasattr(func, "__code__") else ()
    for name, cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, _PLAIN):
            out.append(("<closure>" + name, value))
    return tuple(out)


def _freeze(value: Any) -> Any:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return ("repr", type(value).__name__, repr(value))


def compile_program(fn: SglFunction, opt_level: int = 1, **constants: Any) -> CompiledProgram:
    """Trace and compile `fn`; arguments given are constants, the others symbolic."""
    ir_fn = fn.trace(**constants)
    plan = plan_for_ir(ir_fn, opt_level)
    fplan = plan.function(None)
    used = sorted({_UNSUPPORTED_STEPS[s.kind] for s in fplan.steps if s.kind in _UNSUPPORTED_STEPS})
    reason = f"the program has {' and '.join(used)}" if used else ""
    return CompiledProgram(None if reason else plan, constants, ir_fn.attrs.get("py_return", "list"), reason)


class CompiledPath:
    """The cache of compiled programs per function and argument shape, and the batched run."""

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # tracing uses process-wide symbol ids: one trace at a time

    def compile(self, fn: SglFunction, **constants: Any) -> Plan:
        """`fn.compile()` / `sgl.compile(fn)`: the plan, errors raised (a TraceError names the reason)."""
        with self._lock:
            return plan_for_ir(fn.trace(**constants))

    def program_for(self, fn: SglFunction, arguments: dict[str, Any], captured: tuple = ()) -> CompiledProgram:
        """Every argument symbolic if the function traces so (one plan for all items: a list of choices
        may differ per item); else non-string arguments as constants of the shape."""
        general = self._cached(fn, ("symbolic", captured), {}, quiet=True)
        if general.plan is not None:
            return general
        key, constants = shape_of(fn, arguments)
        return self._cached(fn, (key, captured), constants, quiet=False)

    def _cached(self, fn: SglFunction, key: tuple, constants: dict[str, Any], quiet: bool) -> CompiledProgram:
        with self._lock:
            per_fn = self._cache.setdefault(fn, {})
            if key not in per_fn:
                try:
                    per_fn[key] = compile_program(fn, **constants)
                except Exception as e:  # untraceable here: segments run it (the interpreter reports real errors)
                    per_fn[key] = CompiledProgram(None, constants, reason=f"{type(e).__name__}: {e}", partial=True)
                prog = per_fn[key]
                if prog.plan is None and not quiet:
                    how = "as compiled segments batched across items" if prog.partial else "in the interpreter"
                    log.debug("program %r runs %s: %s", fn.name, how, prog.reason)
            return per_fn[key]

    def run_batch(self, fn: SglFunction, backend: Any, all_args: list[dict[str, Any]], sampling: dict[str, Any],
                  options: dict[str, Any], progress: bool = False) -> list[Optional[ProgramState]]:
        """A finished state per item the plan ran; None where the interpreter must run the item."""
        out: list[Optional[ProgramState]] = [None] * len(all_args)
        why = self._why_not(fn, backend)
        if why:
            log.debug("program %r runs in the interpreter: %s", fn.name, why)
            return out
        groups: dict[int, tuple[CompiledProgram, list[int]]] = {}
        partial: list[int] = []
        captured = captured_values(fn)
        for i, arguments in enumerate(all_args):
            prog = self.program_for(fn, arguments, captured)
            if prog.plan is not None:
                groups.setdefault(id(prog), (prog, []))[1].append(i)
            elif prog.partial:
                partial.append(i)
        if partial:
            self._run_segments(fn, backend, all_args, partial, sampling, options, out)
        for prog, idx in groups.values():
            ex = PlanExecutor(prog.plan, backend, default_sampling=sampling, default_options=options)
            rows = [{k: v for k, v in all_args[i].items() if k not in prog.constants and k not in fn.bind_arguments}
                    for i in idx]
            for i, item in zip(idx, ex.execute(None, rows, progress=progress)):
                if item.error is not None:
                    log.debug("program %r item %d failed in the plan (%s); the interpreter runs it again",
                              fn.name, i, item.error)
                    continue
                out[i] = _as_state(fn, backend, sampling, options, item, prog.py_return)
        return out

    @staticmethod
    def _run_segments(fn: SglFunction, backend: Any, all_args: list[dict[str, Any]], idx: list[int],
                      sampling: dict[str, Any], options: dict[str, Any], out: list[Optional[ProgramState]]) -> None:
        """Partial compilation of the items `idx`: their Python runs once each, their segments batched."""
        items, _ = run_segments(fn, backend, [all_args[i] for i in idx], sampling, options)
        for i, item in zip(idx, items):
            if item.error is not None:
                log.debug("program %r item %d failed on the segment path (%s: %s); the interpreter runs it again",
                          fn.name, i, type(item.error).__name__, item.error)
                continue
            out[i] = _as_state(fn, backend, sampling, options, item, "list")

    @staticmethod
    def _why_not(fn: SglFunction, backend: Any) -> str:
        if not isinstance(backend, NativeBackend):
            return f"the {getattr(backend, 'name', type(backend).__name__)} backend has no native batched transport"
        if fn.num_api_spec_tokens:
            return "API speculative execution (num_api_spec_tokens) is an interpreter feature"
        return ""


def _as_state(fn: SglFunction, backend: Any, sampling: dict[str, Any], options: dict[str, Any],
              item: ItemRun | SegmentItem, py_return: str) -> ProgramState:
    """A finished interpreter state holding the plan's (or the segments') results: reading it never waits,
    and `+=` continues the program in the interpreter."""
    ex = StreamExecutor(backend, fn.name, sampling, options)
    ex.text_, ex.messages_, ex.images_ = item.text, item.messages, []
    ex.variables, ex.meta_info = item.variables, item.meta_info
    ex.finished = True
    state = ProgramState(ex)
    state.ret_value = tuple(item.result) if py_return == "tuple" and isinstance(item.result, list) else item.result
    return state


PATH = CompiledPath()
register_compiled_path(PATH)


def compile(fn: SglFunction, **constants: Any) -> Plan:  # noqa: A001  (sgl.compile, as in the issue)
    """`sgl.compile(fn, **constants)`: trace `fn` and compile it to a plan (PlanExecutor runs it)."""
    return PATH.compile(fn, **constants)
