"""SamplingParams: the per-request decoding knobs, with SGLang 0.2.x's names and defaults.

Two levels of checking, as in SGLang:
- construction (`SamplingParams(...)` / `from_dict`) checks names and TYPES (a bad key or a string
  where a number belongs is a ValueError naming the field);
- `verify(vocab_size, context_len, prompt_len)` checks RANGES that may depend on the model.

The object is frozen; list-valued fields are normalized to tuples (`stop` is always a tuple of
strings, `stop_token_ids` a tuple of ints) so one canonical form flows through the runtime.
Constraint fields (regex / json_schema / ebnf) are only carried here; the constrained-decoding
module compiles them.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

# The one typed-regex table: `gen(dtype=...)` / `gen_int` / `gen_string` and the runtime's own `dtype: "int"`
# decode under these exact strings, so every path shares one constraint-cache key per type. It lives here, at
# the lowest layer that needs it (the runtime reads "int"; the frontend all four), and imports nothing heavy.
TYPED_REGEX: dict[str, str] = {
    "int": r"[-+]?[0-9]+",
    "float": r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?",
    "bool": r"(True|False)",
    "str": r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"',  # a JSON string literal, as SGLang's REGEX_STR
}


def typed_regex(dtype: Optional[str]) -> Optional[str]:
    """The regex a typed gen decodes under, or None for an untyped one (dtype None)."""
    return None if dtype is None else TYPED_REGEX[dtype]


# The one rename map of sampling-parameter names: SGLang's frontend `gen(...)` and the OpenAI API spell these
# two fields differently; every other name they share is the SamplingParams field itself.
RENAMES: dict[str, str] = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}


def native_name(name: str) -> str:
    """A frontend / OpenAI sampling-parameter name -> the SamplingParams field (`max_tokens` -> `max_new_tokens`)."""
    return RENAMES.get(name, name)


# Keys accepted by from_dict that map onto another field (SGLang spells the EBNF grammar both ways).
_ALIASES = {"grammar": "ebnf"}


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    stop: Union[str, tuple[str, ...], list[str], None] = ()
    stop_token_ids: Union[tuple[int, ...], list[int], None] = ()
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    n: int = 1
    seed: Optional[int] = None
    regex: Optional[str] = None
    json_schema: Optional[str] = None
    stop_regex: Union[str, tuple[str, ...], list[str], None] = ()
    ebnf: Optional[str] = None
    # SGLang 0.2.x frontend's `gen(dtype=int)` arrives as "int": an integer regex unless one is given
    dtype: Optional[str] = None
    # OpenAI-style additive bias per token id ({"50256": -100}); normalized to sorted (id, bias) pairs
    logit_bias: Union[dict, tuple[tuple[int, float], ...], None] = ()

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if name == "seed" and v is None:
                continue
            if isinstance(v, float) and v.is_integer() and name != "seed":
                v = int(v)  # JSON clients send 16.0
                set_(name, v)
            if not _is_int(v):
                raise ValueError(f"sampling_params.{name} must be an integer, got {v!r}")
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if not (_is_int(v) or isinstance(v, float)):
                raise ValueError(f"sampling_params.{name} must be a number, got {v!r}")
            v = float(v)
            if math.isnan(v) or math.isinf(v):
                raise ValueError(f"sampling_params.{name} must be finite, got {v!r}")
            set_(name, v)
        for name in _BOOL_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ValueError(f"sampling_params.{name} must be a boolean, got {v!r}")
        set_("stop", _str_tuple("stop", self.stop))
        set_("stop_regex", _str_tuple("stop_regex", self.stop_regex))
        ids = self.stop_token_ids
        if ids is None:
            ids = ()
        elif _is_int(ids):
            ids = (ids,)
        if not isinstance(ids, (list, tuple)) or not all(_is_int(i) for i in ids):
            raise ValueError(f"sampling_params.stop_token_ids must be a list of integers, got {ids!r}")
        set_("stop_token_ids", tuple(int(i) for i in ids))
        set_("logit_bias", _bias_pairs(self.logit_bias))
        if isinstance(self.json_schema, dict):  # accept an already-parsed schema; carry it as text
            set_("json_schema", json.dumps(self.json_schema))
        for name in ("regex", "json_schema", "ebnf"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"sampling_params.{name} must be a string, got {type(v).__name__}")
        if self.dtype not in (None, "int", "str"):
            raise ValueError(f"sampling_params.dtype must be null, 'int' or 'str', got {self.dtype!r}")
        if self.dtype == "int" and self.regex is None and self.json_schema is None and self.ebnf is None:
            set_("regex", TYPED_REGEX["int"])
        given = [n for n in ("regex", "json_schema", "ebnf") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(
                f"sampling_params: only one of regex / json_schema / ebnf may be set, got {', '.join(given)}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "SamplingParams":
        """Build from a request's `sampling_params` dict. Unknown key -> ValueError naming it.

        A None value means "use the default" (JSON clients often send `"stop": null`).
        """
        if d is None:
            return cls()
        if isinstance(d, SamplingParams):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"sampling_params must be a dict, got {type(d).__name__}")
        valid = FIELD_NAMES
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            name = _ALIASES.get(key, key)
            if name not in valid:
                hint = difflib.get_close_matches(str(key), sorted(valid | set(_ALIASES)), n=1)
                msg = f"unknown sampling parameter {key!r}"
                if hint:
                    msg += f" (did you mean {hint[0]!r}?)"
                raise ValueError(msg)
            if name in kwargs:
                raise ValueError(f"sampling parameter {name!r} given twice (as {key!r})")
            if value is None and _DEFAULTS[name] is not None:
                continue
            kwargs[name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists, not tuples) that from_dict reads back to an equal object."""
        out = dataclasses.asdict(self)
        for k in ("stop", "stop_token_ids", "stop_regex"):
            out[k] = list(out[k])
        out["logit_bias"] = {str(t): b for t, b in self.logit_bias}
        return out

    def replace(self, **changes: Any) -> "SamplingParams":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ checks
    def verify(
        self,
        vocab_size: Optional[int] = None,
        context_len: Optional[int] = None,
        prompt_len: Optional[int] = None,
    ) -> None:
        """Range checks; raises ValueError naming the field and the bad value."""

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"sampling_params.{name} {rule}, got {getattr(self, name)!r}")

        if self.temperature < 0:
            raise bad("temperature", "must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "must be in (0, 1]")
        if self.top_k == 0 or self.top_k < -1:
            raise bad("top_k", "must be -1 (disabled) or >= 1")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", "must be in [0, 1]")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise bad("frequency_penalty", "must be in [-2, 2]")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise bad("presence_penalty", "must be in [-2, 2]")
        if not self.repetition_penalty > 0.0:
            raise bad("repetition_penalty", "must be > 0")
        if self.max_new_tokens < 0:
            raise bad("max_new_tokens", "must be >= 0")
        if self.min_new_tokens < 0:
            raise bad("min_new_tokens", "must be >= 0")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"sampling_params.min_new_tokens ({self.min_new_tokens}) must be <= "
                f"max_new_tokens ({self.max_new_tokens})"
            )
        if self.n < 1:
            raise bad("n", "must be >= 1")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise bad("seed", "must be in [0, 2**63)")
        if any(s == "" for s in self.stop):
            raise bad("stop", "must not contain an empty string")
        for tid, b in self.logit_bias:
            if not -100.0 <= b <= 100.0:
                raise ValueError(f"sampling_params.logit_bias[{tid}] must be in [-100, 100], got {b!r}")
        if vocab_size is not None:
            for tid, _ in self.logit_bias:
                if not 0 <= tid < vocab_size:
                    raise ValueError(
                        f"sampling_params.logit_bias has token id {tid}, outside the vocabulary [0, {vocab_size})"
                    )
            for tid in self.stop_token_ids:
                if not 0 <= tid < vocab_size:
                    raise ValueError(
                        f"sampling_params.stop_token_ids contains {tid}, outside the vocabulary [0, {vocab_size})"
                    )
        if context_len is not None and prompt_len is not None:
            if prompt_len >= context_len:
                raise ValueError(
                    f"the prompt has {prompt_len} tokens, which is not less than the context length {context_len}"
                )
            if prompt_len + self.max_new_tokens > context_len:
                raise ValueError(
                    f"sampling_params.max_new_tokens={self.max_new_tokens} plus the prompt's {prompt_len} tokens "
                    f"exceeds the context length {context_len}"
                )

    # ------------------------------------------------------------------ derived views
    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.frequency_penalty != 0.0 or self.presence_penalty != 0.0 or self.repetition_penalty != 1.0

    @property
    def grammar(self) -> Optional[str]:
        """SGLang's other spelling of `ebnf`."""
        return self.ebnf

    @property
    def constraint(self) -> Optional[tuple[str, str]]:
        """(kind, source) of the structured-output constraint, kind in regex|json_schema|ebnf; or None."""
        for kind in ("regex", "json_schema", "ebnf"):
            v = getattr(self, kind)
            if v is not None:
                return kind, v
        return None

    @property
    def stop_str_max_len(self) -> int:
        return max((len(s) for s in self.stop), default=0)

    def normalize(self, tokenizer: Any = None) -> "SamplingParams":
        """Kept for SGLang parity: fields are already canonical after construction."""
        return self


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bias_pairs(v: Any) -> tuple[tuple[int, float], ...]:
    if v is None:
        return ()
    items = v.items() if isinstance(v, dict) else v
    if not isinstance(items, (tuple, list)) and not isinstance(v, dict):
        raise ValueError(f"sampling_params.logit_bias must be a dict of token id -> bias, got {v!r}")
    out: dict[int, float] = {}
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"sampling_params.logit_bias must be a dict of token id -> bias, got {v!r}")
        k, b = item
        if isinstance(k, int) and not isinstance(k, bool):
            tid = k
        elif isinstance(k, str) and k.strip().lstrip("-").isdigit():
            tid = int(k)  # JSON object keys are strings
        else:
            raise ValueError(f"sampling_params.logit_bias key {k!r} is not a token id")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
            raise ValueError(f"sampling_params.logit_bias[{k!r}] must be a finite number, got {b!r}")
        out[tid] = float(b)
    return tuple(sorted(out.items()))


def _str_tuple(name: str, v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise ValueError(f"sampling_params.{name} must be a string or a list of strings, got {v!r}")


FIELD_NAMES = frozenset(f.name for f in fields(SamplingParams))
_DEFAULTS = {f.name: f.default for f in fields(SamplingParams)}
_INT_FIELDS = ("max_new_tokens", "min_new_tokens", "top_k", "n", "seed")
_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
_BOOL_FIELDS = ("ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim")
