"""The public frontend API, re-exported by `import sglang as sgl` (its `__all__`).

Names and signatures follow SGLang: `function`, `gen`, `gen_int`, `gen_string`, `select`, `image`,
`video`, roles (`system/user/assistant` and their `_begin/_end` forms), backends (`Runtime`,
`RuntimeEndpoint`, `OpenAI`, `set_default_backend`) and `flush_cache` / `get_server_args`.
"""
from __future__ import annotations

import dataclasses

from typing import Any, Callable, Optional, Union

from sglang.lang.backends.openai_backend import OpenAI
from sglang.lang.backends.runtime_endpoint import RuntimeEndpoint
from sglang.lang.gen_rules import CHOICES_METHODS, gen_problems, json_schema_text, normalize_dtype, select_problems
from sglang.lang.interpreter import ProgramError, ProgramState
from sglang.lang.ir import Arg, Const, Gen, Image, Loc, RoleBegin, RoleEnd, Select, Video
from sglang.lang.ir.expr import Name
from sglang.lang.media import image_source
from sglang.lang.primitives import SglExpr, Symbol, TraceError, caller_loc, role_expr
from sglang.lang.program import SglFunction, get_default_backend, set_default_backend
from sglang.lang.runtime_process import Runtime

__all__ = [
    "function", "gen", "gen_int", "gen_string", "select", "image", "video",
    "system", "user", "assistant", "system_begin", "system_end", "user_begin", "user_end",
    "assistant_begin", "assistant_end",
    "set_default_backend", "get_default_backend", "Runtime", "RuntimeEndpoint", "OpenAI", "EngineBackend",
    "flush_cache", "get_server_args",
    "token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized",
    "SglFunction", "ProgramState", "ProgramError", "TraceError",
]

# select's choices methods (SGLang exposes them as objects; here the names are the values)
token_length_normalized, greedy_token_selection, unconditional_likelihood_normalized = CHOICES_METHODS

def __getattr__(name: str) -> Any:
    if name == "EngineBackend":  # lazy: keeps `import sglang` free of the runtime engine
        from sglang.lang.backends.engine_backend import EngineBackend

        return EngineBackend
    raise AttributeError(f"module 'sglang.lang.api' has no attribute {name!r}")


def function(func: Optional[Callable[..., Any]] = None, *, num_api_spec_tokens: Optional[int] = None) -> Any:
    """`@sgl.function` or `@sgl.function(num_api_spec_tokens=...)`."""
    if func is None:
        return lambda f: SglFunction(f, num_api_spec_tokens=num_api_spec_tokens)
    return SglFunction(func, num_api_spec_tokens=num_api_spec_tokens)


def _stop(stop: Any) -> Optional[tuple]:
    if stop is None:
        return None
    items = (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(x, str) for x in items):
        raise TypeError(f"gen stop must be a string or a list of strings, got {stop!r}")
    return items


def gen(name: Optional[str] = None, max_tokens: Optional[int] = None, min_tokens: Optional[int] = None,
        stop: Union[str, list[str], None] = None, stop_token_ids: Optional[list[int]] = None,
        temperature: Optional[float] = None, top_p: Optional[float] = None, top_k: Optional[int] = None,
        min_p: Optional[float] = None, frequency_penalty: Optional[float] = None,
        presence_penalty: Optional[float] = None, ignore_eos: Optional[bool] = None,
        return_logprob: Optional[bool] = None, logprob_start_len: Optional[int] = None,
        top_logprobs_num: Optional[int] = None, return_text_in_logprobs: Optional[bool] = None,
        dtype: Any = None, choices: Optional[list[str]] = None, choices_method: Optional[str] = None,
        regex: Optional[str] = None, json_schema: Any = None, repetition_penalty: Optional[float] = None,
        **more_sampling: Any) -> SglExpr:
    """Generate into variable `name`; `choices=` makes it a select. `more_sampling`: any other sampling
    parameter a `Gen` op carries (a new one needs no edit here: docs/ARCHITECTURE.md's recipe)."""
    unknown = sorted(set(more_sampling) - {f.name for f in dataclasses.fields(Gen)} - {"name"})
    if unknown:
        raise TypeError(f"gen {name!r}: unknown keyword {unknown[0]!r}")
    loc = caller_loc()
    params = dict(max_tokens=max_tokens, min_tokens=min_tokens, stop=stop, temperature=temperature, top_p=top_p,
                  top_k=top_k, min_p=min_p, regex=regex, dtype=dtype, json_schema=json_schema)
    for key, value in params.items():
        if isinstance(value, Symbol):
            raise TraceError(f"gen {name!r}: {key} from {value.describe} cannot be traced (gen parameters are "
                             f"constants in the IR); give it a value: fn.trace(<argument>=...)")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"gen name must be a string, got {type(name).__name__}")
    if choices is not None:
        return _select(name, choices, temperature or 0.0, choices_method or token_length_normalized, loc)
    try:
        dtype = normalize_dtype(dtype)
    except ValueError as e:
        raise ValueError(f"gen {name!r}: {e}") from None
    try:  # a pydantic class or a dict becomes its JSON text here, properties in the order given
        json_schema = None if json_schema is None else json_schema_text(json_schema)
    except TypeError as e:
        raise TypeError(f"gen {name!r}: {e}") from None
    if stop_token_ids is not None:
        stop_token_ids = tuple(int(t) for t in ([stop_token_ids] if isinstance(stop_token_ids, int) else stop_token_ids))
    op = Gen(name=name, max_tokens=max_tokens, min_tokens=min_tokens, stop=_stop(stop),
             stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
             frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
             repetition_penalty=repetition_penalty, ignore_eos=ignore_eos, regex=regex,
             json_schema=json_schema,
             dtype=dtype, return_logprob=return_logprob,
             logprob_start_len=logprob_start_len, top_logprobs_num=top_logprobs_num,
             return_text_in_logprobs=return_text_in_logprobs, **more_sampling)
    _check_gen(op)
    return SglExpr((op,), (loc,))


def _check_gen(op: Gen) -> None:
    problems = gen_problems(op)
    if problems:
        raise ValueError(f"gen {op.name!r}: {problems[0]}")


def gen_int(name: Optional[str] = None, **kwargs: Any) -> SglExpr:
    return gen(name, dtype="int", **kwargs)


def gen_string(name: Optional[str] = None, **kwargs: Any) -> SglExpr:
    return gen(name, dtype="str", **kwargs)


def select(name: Optional[str] = None, choices: Optional[list[str]] = None, temperature: float = 0.0,
           choices_method: str = token_length_normalized) -> SglExpr:
    return _select(name, choices, temperature, choices_method, caller_loc())


def _select(name: Optional[str], choices: Any, temperature: float, method: str, loc: Optional[Loc]) -> SglExpr:
    traced = isinstance(choices, Symbol)  # tracing: choices given by a program argument
    if traced and not isinstance(choices.ops[0], Arg):
        raise TraceError(f"select {name!r}: choices from {choices.describe} cannot be traced")
    value = Name(choices.ops[0].name) if traced else choices
    problems = select_problems(value, method, temperature)
    if problems:
        raise ValueError(f"select {name!r}: {problems[0]}")
    value = value if traced else tuple(value)
    return SglExpr((Select(name, value, method, float(temperature)),), (loc,))


def image(src: Any) -> SglExpr:
    """An image: a path, a data URL, base64, raw bytes or a PIL image (bytes and PIL become data URLs)."""
    src = image_source(src)
    return SglExpr((Image(Const(src if isinstance(src, str) else str(src))),), (caller_loc(),))


def video(path: str, num_frames: int = 8) -> SglExpr:
    if num_frames < 1:
        raise ValueError(f"video num_frames must be >= 1, got {num_frames}")
    return SglExpr((Video(Const(str(path)), int(num_frames)),), (caller_loc(),))


def system(expr: Any = None) -> SglExpr:
    return role_expr("system", expr, caller_loc())


def user(expr: Any = None) -> SglExpr:
    return role_expr("user", expr, caller_loc())


def assistant(expr: Any = None) -> SglExpr:
    return role_expr("assistant", expr, caller_loc())


def _edge(op: Any) -> SglExpr:
    return SglExpr((op,), (caller_loc(3),))


def system_begin() -> SglExpr:
    return _edge(RoleBegin("system"))


def system_end() -> SglExpr:
    return _edge(RoleEnd("system"))


def user_begin() -> SglExpr:
    return _edge(RoleBegin("user"))


def user_end() -> SglExpr:
    return _edge(RoleEnd("user"))


def assistant_begin() -> SglExpr:
    return _edge(RoleBegin("assistant"))


def assistant_end() -> SglExpr:
    return _edge(RoleEnd("assistant"))


def flush_cache(backend: Any = None) -> bool:
    be = _backend(backend, "flush_cache")
    return be.flush_cache()


def get_server_args(backend: Any = None) -> dict[str, Any]:
    return _backend(backend, "get_server_args").get_server_args()


def _backend(backend: Any, what: str) -> Any:
    from sglang.lang.program import as_backend

    if backend is not None:
        return as_backend(backend)
    be = get_default_backend()
    if be is None:
        raise RuntimeError(f"sgl.{what}: no default backend set (sgl.set_default_backend(...))")
    return be
