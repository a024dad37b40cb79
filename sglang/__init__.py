"""sglang: structured generation programs, compiled ahead of time, on a fast serving runtime.

This module is the public hub: `import sglang as sgl` gives the SGLang frontend API
(`function`, `gen`, `select`, roles, backends) and the in-process `Engine`. Heavy parts
(torch, the runtime) load lazily on first use so a frontend-only client stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it (relative to this package)
_LAZY: dict[str, str] = {
    # runtime
    "Engine": ".runtime.engine",
    "ServerArgs": ".runtime.server_args",
    "SamplingParams": ".runtime.sampling.sampling_params",
    # compiler
    "compile": ".compiler.jit",
}
# The frontend API: every name in lang/api.py's __all__, imported on first use, with the compiler's
# default path (importing it registers `fn.run` / `fn.run_batch`'s compiled path with lang/program.py).
_LANG_API = ".lang.api"
_COMPILED_PATH = ".compiler.jit"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module, __name__), name)
    try:
        api = importlib.import_module(_LANG_API, __name__)
        importlib.import_module(_COMPILED_PATH, __name__)
    except ModuleNotFoundError as exc:  # a dependency of the frontend is missing: keep hasattr() working
        raise AttributeError(f"module 'sglang' has no attribute {name!r}") from exc
    if name in getattr(api, "__all__", ()):
        return getattr(api, name)
    raise AttributeError(f"module 'sglang' has no attribute {name!r}")


def __dir__() -> list[str]:
    names = set(globals()) | set(_LAZY)
    try:
        names |= set(importlib.import_module(_LANG_API, __name__).__all__)
    except ModuleNotFoundError:
        pass
    return sorted(names)
