"""The frontend's gen / select rules, each written once, for the eager interpreter, the tracer, the `.sgl`
builder and the plan executor alike.

* parameter names: a gen's sampling keywords are `SamplingParams` fields (the runtime owns them), spelled
  the frontend way through ONE rename map (`max_tokens` -> `max_new_tokens`, as SGLang's `gen`);
* dtypes: the accepted spellings of `gen(dtype=...)`; the regex of each type is the runtime's table
  (`sampling_params.TYPED_REGEX`), so interpreter and compiler constrain with the same string;
* validation: `gen_problems` / `select_problems` return plain messages; each caller prefixes its own
  location (a Python call site, a `.sgl` position, an IR node);
* value types: every gen variable holds the generated text, as SGLang's interpreter stores it (a
  `gen_int` gives "42", not 42): typing is the program's business (`int(x)` in Python or `.sgl`).
* json_schema: a string, a dict or a pydantic model class, stored as the JSON text of the schema with its
  properties in the order given (`json_schema_text`): a constrained object's fields come out in that order.
* select temperature: choices are scored, not sampled. SGLang's RuntimeEndpoint.select asserts
  `temperature <= 1e-5`; we reject a larger one with a message instead, on every path.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from typing import Any, Optional

from sglang.runtime.sampling.sampling_params import RENAMES, TYPED_REGEX, SamplingParams, native_name, typed_regex

__all__ = [
    "CHOICES_METHODS", "DTYPES", "GEN_KEYWORDS", "GEN_SAMPLING_PARAMS", "LOGPROB_OPTIONS", "MAX_SELECT_TEMPERATURE", "NATIVE_GEN_FIELDS",
    "RENAMES", "SELECT_KEYWORDS", "frontend_name", "gen_problems", "json_schema_text", "native_name", "normalize_dtype", "select_problems", "typed_regex",
]

_FRONTEND = {v: k for k, v in RENAMES.items()}  # RENAMES: frontend gen keyword -> SamplingParams field

# SamplingParams fields that are per request or per server, not per gen: a program's gen never sets them
# (`dtype` is the gen's own keyword, turned into a regex by the frontend before it reaches the runtime).
_NOT_PER_GEN = frozenset({"skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim", "n", "seed",
                          "stop_regex", "ebnf", "dtype", "logit_bias"})

NATIVE_GEN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SamplingParams) if f.name not in _NOT_PER_GEN)
GEN_SAMPLING_PARAMS: tuple[str, ...] = tuple(_FRONTEND.get(n, n) for n in NATIVE_GEN_FIELDS)
LOGPROB_OPTIONS = ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")
SELECT_KEYWORDS = ("choices", "temperature", "choices_method")
# every keyword of `gen(...)` (with choices=, gen is a select, as in SGLang)
GEN_KEYWORDS: tuple[str, ...] = GEN_SAMPLING_PARAMS + ("dtype",) + LOGPROB_OPTIONS + ("choices", "choices_method")

DTYPES: tuple[str, ...] = tuple(TYPED_REGEX)
_DTYPE_SPELLINGS: dict[Any, str] = {int: "int", str: "str", float: "float", bool: "bool", "string": "str",
                                    "integer": "int", **{d: d for d in DTYPES}}

MAX_SELECT_TEMPERATURE = 1e-5  # SGLang's bound: a select is argmax over scores
CHOICES_METHODS = ("token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized")


def frontend_name(native: str) -> str:
    return _FRONTEND.get(native, native)


def normalize_dtype(dtype: Any) -> Optional[str]:
    """`int` / "int" / "integer" -> "int" (and so on); None stays None; anything else is a ValueError."""
    if dtype is None:
        return None
    try:
        return _DTYPE_SPELLINGS[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None


def gen_problems(op: Any) -> list[str]:
    """What is wrong with a gen's parameters (an `ir.Gen` or anything with its fields), without a location."""
    checks = [
        (_lt(op.max_tokens, 0), f"max_tokens must be >= 0, got {op.max_tokens}"),
        (_lt(op.min_tokens, 0), f"min_tokens must be >= 0, got {op.min_tokens}"),
        (_lt(op.temperature, 0), f"temperature must be >= 0, got {op.temperature}"),
        (op.top_p is not None and not 0 < op.top_p <= 1, f"top_p must be in (0, 1], got {op.top_p}"),
        (op.min_p is not None and not 0 <= op.min_p <= 1, f"min_p must be in [0, 1], got {op.min_p}"),
        (op.top_k is not None and op.top_k == 0, "top_k must be -1 (off) or >= 1, got 0"),
        (op.dtype is not None and op.dtype not in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {op.dtype!r}"),
        (sum(x is not None for x in (op.regex, op.json_schema, op.dtype)) > 1,
         "give at most one of regex, json_schema, dtype"),
    ]
    out = [msg for bad, msg in checks if bad]
    out += _json_problem(op.json_schema) + _regex_problem(op.regex)
    return out


def select_problems(choices: Any, method: str, temperature: Any) -> list[str]:
    """What is wrong with a select's arguments; `choices` may be an expression (checked when it runs)."""
    out = []
    if choices is None:
        out.append("select needs choices=[...]")
    elif isinstance(choices, (str, int, float, bool)) or isinstance(choices, (list, tuple)) and (
            not choices or not all(isinstance(c, str) for c in choices)):
        out.append(f"choices must be a non-empty list of strings (at least one choice), got {choices!r}")
    if method not in CHOICES_METHODS:
        out.append(f"choices_method must be one of {', '.join(CHOICES_METHODS)}, got {method!r}")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or math.isnan(temperature):
        out.append(f"select temperature must be a number, got {temperature!r}")
    elif temperature > MAX_SELECT_TEMPERATURE:
        out.append(f"select temperature must be 0 (at most {MAX_SELECT_TEMPERATURE}), got {temperature}: choices are "
                   f"scored and the best one taken, not sampled")
    return out


def json_schema_text(schema: Any) -> str:
    """The JSON text a gen's `json_schema` is stored and sent as: a string as given, a dict dumped in its own key
    order (never sorted: the order of `properties` is the order of the generated fields), a pydantic model
    class (v2 `model_json_schema`, v1 `schema`) through its schema dict. Anything else is a TypeError."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, type):
        to_dict = getattr(schema, "model_json_schema", None) or getattr(schema, "schema", None)
        if callable(to_dict):  # duck-typed: pydantic is not a dependency of the frontend
            schema = to_dict()
    if not isinstance(schema, dict):
        raise TypeError(f"json_schema must be a JSON string, a dict or a pydantic model class, got "
                        f"{type(schema).__name__}: {schema!r}")
    return json.dumps(schema)


def _lt(value: Optional[float], bound: float) -> bool:
    return value is not None and value < bound


def _json_problem(schema: Any) -> list[str]:
    if schema is None:
        return []
    try:
        text = json_schema_text(schema)
    except TypeError as e:
        return [str(e)]
    try:
        json.loads(text)
    except ValueError as e:
        return [f"json_schema is not valid JSON: {e}"]
    return []


def _regex_problem(regex: Optional[str]) -> list[str]:
    if regex is None:
        return []
    try:
        re.compile(regex)
    except re.error as e:
        return [f"bad regex: {e}"]
    return []
