"""`SglFunction` (what `@sgl.function` makes): run, run_batch, bind, trace, compile; and the default backend.

`run` and `run_batch` take the compiled path by default: the compiler (`sglang.compiler.jit`, a layer
above this one) registers it here with `register_compiled_path`; it runs what it can as a cached plan and
hands back None for what the interpreter must run. `compiled=False` asks for the interpreter.
"""
from __future__ import annotations

import inspect
import os
import sys
import threading
from typing import Any, Callable, Optional, Protocol

from sglang.lang.backends.base import BaseBackend
from sglang.lang.gen_rules import LOGPROB_OPTIONS, NATIVE_GEN_FIELDS
from sglang.lang.interpreter import ProgramState, StreamExecutor
from sglang.lang.primitives import StateBase
from sglang.lang.workers import POOL

_default_backend: Optional[BaseBackend] = None


class CompiledPath(Protocol):
    """What the compiler registers: a batched run returning a finished state per item, or None where the
    interpreter must run it; and `compile` for `fn.compile()`."""

    def run_batch(self, fn: "SglFunction", backend: BaseBackend, all_args: list[dict[str, Any]],
                  sampling: dict[str, Any], options: dict[str, Any],
                  progress: bool = False) -> list[Optional[ProgramState]]: ...

    def compile(self, fn: "SglFunction", **constants: Any) -> Any: ...


_compiled_path: Optional[CompiledPath] = None


def register_compiled_path(path: Optional[CompiledPath]) -> None:
    """Called by the compiler on import; None turns the compiled default off (everything interprets)."""
    global _compiled_path
    _compiled_path = path

# run()/run_batch() sampling keywords: the per-gen SamplingParams fields under their native names (regex and
# json_schema constrain one gen, not a whole program), plus the request's seed
SAMPLING_KWARGS = tuple(n for n in NATIVE_GEN_FIELDS if n not in ("regex", "json_schema")) + ("seed",)


def as_backend(backend: Any) -> BaseBackend:
    """A frontend backend from a backend, an Engine, or a Runtime."""
    if isinstance(backend, BaseBackend):
        return backend
    endpoint = getattr(backend, "endpoint", None)
    if isinstance(endpoint, BaseBackend):  # sgl.Runtime
        return endpoint
    engine_mod = sys.modules.get("sglang.runtime.engine")
    if engine_mod is not None and isinstance(backend, getattr(engine_mod, "Engine", ())) or (
            hasattr(backend, "generate") and hasattr(backend, "get_server_args")):
        from sglang.lang.backends.engine_backend import EngineBackend

        return EngineBackend(backend)
    raise TypeError(f"not a backend: {backend!r} (use sgl.Engine(...), sgl.RuntimeEndpoint(url), sgl.Runtime(...) "
                    f"or sgl.OpenAI(model))")


def set_default_backend(backend: Any) -> None:
    global _default_backend
    _default_backend = as_backend(backend)


def get_default_backend() -> Optional[BaseBackend]:
    return _default_backend


class SglFunction:
    """A program. `num_api_spec_tokens` turns on API speculative execution (lang/speculative.py)."""

    def __init__(self, func: Callable[..., Any], num_api_spec_tokens: Optional[int] = None,
                 bind_arguments: Optional[dict[str, Any]] = None) -> None:
        self.func = func
        self.name = getattr(func, "__name__", "program")
        self.num_api_spec_tokens = num_api_spec_tokens
        self.bind_arguments = dict(bind_arguments or {})
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise TypeError(f"@sgl.function {self.name!r} must take the program state `s` as its first parameter")
        self.signature = sig
        self.arg_names = [p.name for p in params[1:]]
        for k in self.bind_arguments:
            if k not in self.arg_names:
                raise TypeError(f"program {self.name!r} has no parameter {k!r} to bind "
                                f"(parameters: {', '.join(self.arg_names) or 'none'})")

    def __repr__(self) -> str:
        return f"SglFunction({self.name})"

    def bind(self, **kwargs: Any) -> "SglFunction":
        return SglFunction(self.func, self.num_api_spec_tokens, {**self.bind_arguments, **kwargs})

    def bind_args(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Program arguments by name; wrong names/counts raise TypeError naming the program."""
        given = {**self.bind_arguments, **kwargs}
        unknown = sorted(set(given) - set(self.arg_names))
        if unknown:
            raise TypeError(f"program {self.name!r} got unexpected argument(s) {', '.join(map(repr, unknown))} "
                            f"(parameters: {', '.join(self.arg_names) or 'none'})")
        try:
            bound = self.signature.bind(None, *args, **{**self.bind_arguments, **kwargs})
        except TypeError as exc:
            raise TypeError(f"program {self.name!r}: {exc} (parameters: {', '.join(self.arg_names) or 'none'})") from None
        bound.apply_defaults()
        out = dict(bound.arguments)
        out.pop(next(iter(self.signature.parameters)))
        return out

    def _split(self, kwargs: dict[str, Any]) -> tuple[dict, dict, dict]:
        sampling = {"max_new_tokens": kwargs.pop("max_new_tokens", 128)}
        for key in SAMPLING_KWARGS:
            if key in kwargs:
                v = kwargs.pop(key)
                if v is not None:
                    sampling[key] = [v] if key == "stop" and isinstance(v, str) else v
        options = {k: kwargs.pop(k) for k in LOGPROB_OPTIONS if k in kwargs and kwargs[k] is not None}
        for k in LOGPROB_OPTIONS:
            kwargs.pop(k, None)
        return sampling, options, kwargs

    def run(self, *args: Any, stream: bool = False, backend: Any = None, compiled: bool = True,
            **kwargs: Any) -> ProgramState:
        sampling, options, kwargs = self._split(dict(kwargs))
        arguments = self.bind_args(args, kwargs)
        be = _pick_backend(backend, self.name)
        if compiled and not stream and _compiled_path is not None:
            state = _compiled_path.run_batch(self, be, [arguments], sampling, options)[0]
            if state is not None:
                return state
        return run_program(self, be, arguments, sampling, options, stream)

    def compile(self, **constants: Any) -> Any:
        """The compiled plan of this function (arguments given here are constants, the rest symbolic);
        raises TraceError where the function cannot be traced."""
        if _compiled_path is None:
            raise RuntimeError("the compiler is not loaded: import sglang.compiler.jit (or use `import sglang`)")
        return _compiled_path.compile(self, **constants)

    def run_batch(self, batch_kwargs: list[dict[str, Any]], *, backend: Any = None, num_threads: Any = "auto",
                  progress_bar: bool = False, compiled: bool = True, **kwargs: Any) -> list[ProgramState]:
        if not isinstance(batch_kwargs, (list, tuple)) or not all(isinstance(b, dict) for b in batch_kwargs):
            raise TypeError(f"program {self.name!r}: run_batch takes a list of argument dicts")
        sampling, options, rest = self._split(dict(kwargs))
        if rest:
            raise TypeError(f"program {self.name!r}: run_batch got unknown keyword(s) {', '.join(sorted(rest))}")
        be = _pick_backend(backend, self.name)
        all_args = [self.bind_args((), dict(b)) for b in batch_kwargs]  # all names checked before any runs
        done: list[Optional[ProgramState]] = [None] * len(all_args)
        if compiled and _compiled_path is not None and all_args:
            done = _compiled_path.run_batch(self, be, all_args, sampling, options, progress_bar)
        todo = [i for i, st in enumerate(done) if st is None]
        if todo:
            for i, st in zip(todo, self._interpret_batch(be, [all_args[i] for i in todo], sampling, options,
                                                         num_threads, progress_bar)):
                done[i] = st
        return done  # type: ignore[return-value]  (every entry is a state now)

    def _interpret_batch(self, be: BaseBackend, all_args: list[dict[str, Any]], sampling: dict[str, Any],
                         options: dict[str, Any], num_threads: Any, progress_bar: bool) -> list[ProgramState]:
        """The interpreter's batch: one program thread per item, `num_threads` at a time."""
        if num_threads == "auto":
            num_threads = max(96, (os.cpu_count() or 1) * 16)
        num_threads = max(1, min(int(num_threads), len(all_args) or 1))
        bar = None
        if progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(all_args), desc=self.name)
        lock = threading.Lock()
        states: list[Optional[ProgramState]] = [None] * len(all_args)
        next_item = iter(range(len(all_args)))

        def one(arguments: dict[str, Any]) -> ProgramState:
            state = run_program(self, be, arguments, sampling, options, False, raise_errors=False)
            if bar is not None:
                with lock:
                    bar.update(1)
            return state

        def worker() -> None:  # one of num_threads: programs one after another until none is left
            while True:
                with lock:
                    i = next(next_item, None)
                if i is None:
                    return
                states[i] = one(all_args[i])

        try:
            if num_threads == 1:
                return [one(a) for a in all_args]
            # on the interpreter's pool: a later batch (or phase) reuses the threads of the one before
            POOL.run_parallel(num_threads, worker)
            return states  # type: ignore[return-value]  (every entry is a state now)
        finally:
            if bar is not None:
                bar.close()

    def trace(self, *, backend: Any = None, **arguments: Any) -> Any:
        """The program's IR (lang/ir/graph.py), with symbolic arguments (or the given constants)."""
        from sglang.lang.tracer import trace_program

        return trace_program(self, arguments)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside another program: `other(s, ...)` runs this body on the same state; else `run`."""
        if args and isinstance(args[0], StateBase):  # the interpreter's, the tracer's or a segment's state
            state, rest = args[0], args[1:]
            arguments = self.bind_args(rest, kwargs)
            return self.func(state, **arguments)
        return self.run(*args, **kwargs)


def _pick_backend(backend: Any, name: str) -> BaseBackend:
    if backend is not None:
        return as_backend(backend)
    if _default_backend is None:
        raise RuntimeError(f"program {name!r}: no backend; call sgl.set_default_backend(sgl.Engine(...)) or "
                           f"sgl.set_default_backend(sgl.RuntimeEndpoint(url)), or pass backend=")
    return _default_backend


def run_program(fn: SglFunction, backend: BaseBackend, arguments: dict[str, Any], sampling: dict[str, Any],
                options: dict[str, Any], stream: bool, raise_errors: bool = True) -> ProgramState:
    executor = StreamExecutor(backend, fn.name, sampling, options, stream, fn.num_api_spec_tokens)
    state = ProgramState(executor)

    def body() -> None:
        try:
            state.ret_value = fn.func(state, **arguments)
        except BaseException as exc:  # the program's own Python error, kept for the reader
            if executor.error_ is None:
                executor.error_ = exc
            if not stream:
                raise
        finally:
            executor.end()

    if stream:
        threading.Thread(target=body, name=f"sgl-run-{fn.name}", daemon=True).start()
        return state
    try:
        body()
        executor.sync()
    except BaseException:
        if raise_errors:
            raise
    return state
