"""Program arguments: check them against a function's signature, converting command-line strings.

Unknown or missing names and values of the wrong type are `SglRuntimeError`s naming the parameter.
"""
from __future__ import annotations

import json
from typing import Any

from sglang.lang.sgl.errors import SglRuntimeError
from sglang.compiler.plan import FunctionPlan


def _convert(name: str, typ: str, value: Any) -> Any:
    """Check (and, for strings from the command line, convert) one argument value."""
    if typ in ("any", "str", "image", "video"):
        if typ != "any" and not isinstance(value, str):
            raise SglRuntimeError(f"argument {name!r} must be {typ}, got {type(value).__name__} {value!r}")
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value) if typ in ("list", "dict", "int", "float") else value
        except json.JSONDecodeError:
            raise SglRuntimeError(f"argument {name!r} must be {typ}, got {value!r}") from None
        if typ == "bool" and isinstance(value, str):
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise SglRuntimeError(f"argument {name!r} must be bool (true/false), got {value!r}")
            value = low in ("true", "1", "yes")
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool), "list": lambda v: isinstance(v, list),
          "dict": lambda v: isinstance(v, dict)}[typ]
    if not ok(value):
        raise SglRuntimeError(f"argument {name!r} must be {typ}, got {type(value).__name__} {value!r}")
    return value


def bind_args(fplan: FunctionPlan, args: dict[str, Any]) -> dict[str, Any]:
    """Validate arguments against the signature: unknown or missing names and wrong types are errors."""
    if not isinstance(args, dict):
        raise SglRuntimeError(f"arguments of {fplan.name!r} must be an object of name: value, got {args!r}")
    unknown = sorted(set(args) - set(fplan.params))
    if unknown:
        raise SglRuntimeError(f"{fplan.name}() has no parameter {unknown[0]!r} "
                              f"(parameters: {', '.join(fplan.params) or 'none'})")
    out: dict[str, Any] = {}
    for p in fplan.params:
        if p in args:
            out[p] = _convert(p, fplan.param_types.get(p, "any"), args[p])
        elif p in fplan.defaults:
            out[p] = fplan.defaults[p]
        else:
            raise SglRuntimeError(f"{fplan.name}() is missing argument {p!r}")
    return out
