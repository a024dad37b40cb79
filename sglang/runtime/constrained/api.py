"""Entry points: sampling params / OpenAI response_format / choices → regex → compiled TokenFSM.

Everything a caller constrains with becomes one regex (`ConstraintSpec.regex`), which keys the caches:
- `build_constraint_from_sampling_params(sp)`: SGLang's `regex` / `json_schema` / `ebnf` (alias
  `grammar`) in a SamplingParams or dict → ConstraintSpec or None.
- `response_format_to_constraint(rf)`: OpenAI `{"type": "json_object" | "json_schema" | "text"}` (and
  SGLang's `{"type": "regex", "regex": ...}`) → ConstraintSpec or None.
- `compile_regex(regex, tokenizer)`: the cached TokenFSM; `new_state(spec, tokenizer)`: a request cursor.
- `compile_with_budget(spec, tokenizer, time_s, mem_bytes)`: the same compile under explicit memory and
  time budgets (budget.py), for the server's admission workers; past a budget, a CompileBudgetError.
  The admission helpers above run under the default budget (DEFAULT_MEM_BYTES, ADMISSION_TIME_S).
- `serialize_fsm` / `deserialize_fsm` / `preload`: tables as bytes for compiled program artifacts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from sglang.runtime.constrained.budget import ADMISSION_TIME_S, DEFAULT_MEM_BYTES, CompileBudget, budget_scope, ensure_budget
from sglang.runtime.constrained.cache import ConstraintCache, fsm_from_bytes, fsm_to_bytes, get_default_cache, table_key
from sglang.runtime.constrained.errors import ConstraintError, GrammarError
from sglang.runtime.constrained.json_schema import json_schema_constraint, json_schema_to_regex
from sglang.runtime.constrained.regex_fsm import regex_to_dfa
from sglang.runtime.constrained.state import ConstraintState
from sglang.runtime.constrained.token_fsm import TokenFSM
from sglang.runtime.constrained.vocab import TokenVocab, vocab_from_tokenizer

# SGLang's typed-gen regexes (gen_int / gen_string / dtype=float)
INT_REGEX = r"[-+]?[0-9]+"
FLOAT_REGEX = r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"
BOOL_REGEX = r"(True|False)"
STRING_REGEX = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'


@dataclass(frozen=True)
class ConstraintSpec:
    regex: str
    kind: str  # regex | json_schema | choices | ebnf | response_format
    source: str  # what the caller gave (for error messages and logs)
    # set for a non-regular grammar or a recursive/large JSON schema: run the CFG engine (cfg_state.py)
    grammar: Optional[str] = None


def choices_to_regex(choices: Sequence[str]) -> str:
    """Regex matching exactly one of `choices` (escaped literally; shared by gen(choices=) and select)."""
    if isinstance(choices, str) or not choices:
        raise ConstraintError(f"choices must be a non-empty list of strings, got {choices!r}")
    bad = [c for c in choices if not isinstance(c, str)]
    if bad:
        raise ConstraintError(f"choices must be strings, got {bad[0]!r}")
    return "(" + "|".join(re.escape(c) for c in dict.fromkeys(choices)) + ")"


def _get(sp: Any, name: str) -> Any:
    return sp.get(name) if isinstance(sp, Mapping) else getattr(sp, name, None)


def build_constraint_from_sampling_params(sp: Any, whitespace: str = "default") -> Optional[ConstraintSpec]:
    """The constraint of a SamplingParams / sampling-params dict, or None when it has none.

    Raises a ConstraintError (ValueError) naming the field when the regex/schema/grammar is invalid or
    its compile exceeds the budget (the caller's, else the default memory and ADMISSION_TIME_S)."""
    with ensure_budget(DEFAULT_MEM_BYTES, ADMISSION_TIME_S):
        return _constraint_of_params(sp, whitespace)


def _constraint_of_params(sp: Any, whitespace: str) -> Optional[ConstraintSpec]:
    given = [(k, _get(sp, k)) for k in ("regex", "json_schema", "ebnf", "grammar") if _get(sp, k) is not None]
    if not given:
        return None
    kinds = {("ebnf" if k == "grammar" else k) for k, _ in given}
    if len(kinds) > 1:
        raise ConstraintError(f"sampling_params: only one of regex / json_schema / ebnf may be set, got {sorted(kinds)}")
    key, value = given[0]
    try:
        if key == "regex":
            if not isinstance(value, str):
                raise ConstraintError(f"regex must be a string, got {type(value).__name__}")
            regex_to_dfa(value)  # validate early: errors name the pattern and position
            return ConstraintSpec(value, "regex", value)
        if key == "json_schema":
            rx, cfg = json_schema_constraint(value, whitespace=whitespace)
            return ConstraintSpec(rx, "json_schema", value if isinstance(value, str) else repr(value), grammar=cfg)
        from sglang.runtime.constrained.grammar import grammar_constraint

        rx, exact = grammar_constraint(value)
        return ConstraintSpec(rx, "ebnf", value, grammar=None if exact else value)
    except ConstraintError as exc:
        raise _with_field(exc, f"sampling_params.{key}") from None


def _with_field(exc: ConstraintError, field: str) -> ConstraintError:
    """The same error (same class, same attributes) with the offending field named first."""
    exc.args = (f"{field}: {exc}",)
    return exc


def response_format_to_constraint(response_format: Any, whitespace: str = "default") -> Optional[ConstraintSpec]:
    """OpenAI `response_format` → ConstraintSpec (None for {"type": "text"} or None), under the same
    budget as build_constraint_from_sampling_params."""
    with ensure_budget(DEFAULT_MEM_BYTES, ADMISSION_TIME_S):
        return _constraint_of_response_format(response_format, whitespace)


def _constraint_of_response_format(response_format: Any, whitespace: str) -> Optional[ConstraintSpec]:
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ConstraintError(f"response_format must be an object, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ConstraintSpec(json_schema_to_regex({"type": "object"}, whitespace=whitespace), "response_format",
                              "json_object")
    if kind == "json_schema":
        js = response_format.get("json_schema")
        if not isinstance(js, Mapping):
            raise ConstraintError("response_format.json_schema must be an object with a 'schema' field")
        schema = js.get("schema", js.get("schema_"))
        if schema is None:
            raise ConstraintError("response_format.json_schema.schema is missing")
        try:
            rx, cfg = json_schema_constraint(schema, whitespace=whitespace)
            return ConstraintSpec(rx, "json_schema", repr(schema), grammar=cfg)
        except ConstraintError as exc:
            raise _with_field(exc, "response_format.json_schema.schema") from None
    if kind == "regex":
        rx = response_format.get("regex") or response_format.get("pattern")
        if not isinstance(rx, str):
            raise ConstraintError("response_format of type 'regex' needs a 'regex' string")
        regex_to_dfa(rx)
        return ConstraintSpec(rx, "regex", rx)
    if kind in ("ebnf", "grammar"):
        from sglang.runtime.constrained.grammar import grammar_to_regex

        src = response_format.get("ebnf") or response_format.get("grammar")
        if not isinstance(src, str):
            raise GrammarError(f"response_format of type {kind!r} needs an '{kind}' string")
        return ConstraintSpec(grammar_to_regex(src), "ebnf", src)
    raise ConstraintError(f"response_format.type must be text | json_object | json_schema | regex | ebnf, got {kind!r}")


def _vocab(tokenizer_or_vocab: Any, eos_token_ids: Optional[Iterable[int]] = None) -> TokenVocab:
    if isinstance(tokenizer_or_vocab, TokenVocab):
        return tokenizer_or_vocab
    return vocab_from_tokenizer(tokenizer_or_vocab, eos_token_ids)


def compile_regex(regex: str, tokenizer: Any, cache: Optional[ConstraintCache] = None,
                  eos_token_ids: Optional[Iterable[int]] = None) -> TokenFSM:
    """The token FSM of `regex` for `tokenizer` (a HF tokenizer or a TokenVocab), from cache if possible."""
    return (cache or get_default_cache()).get(regex, _vocab(tokenizer, eos_token_ids))


def new_state(spec: ConstraintSpec | str, tokenizer: Any, cache: Optional[ConstraintCache] = None,
              eos_token_ids: Optional[Iterable[int]] = None) -> ConstraintState:
    vocab = _vocab(tokenizer, eos_token_ids)
    if isinstance(spec, ConstraintSpec) and spec.grammar is not None:
        from sglang.runtime.constrained.cfg_state import CFGConstraintState, cfg_index

        return CFGConstraintState(cfg_index(spec.grammar, vocab))  # type: ignore[return-value]
    regex = spec.regex if isinstance(spec, ConstraintSpec) else spec
    return ConstraintState((cache or get_default_cache()).get(regex, vocab), vocab)


def compile_with_budget(spec: ConstraintSpec | str, tokenizer: Any = None, time_s: Optional[float] = ADMISSION_TIME_S,
                        mem_bytes: int = DEFAULT_MEM_BYTES, cache: Optional[ConstraintCache] = None,
                        eos_token_ids: Optional[Iterable[int]] = None) -> Any:
    """Compile `spec` (a ConstraintSpec or a regex) with at most `mem_bytes` of estimated builder memory and
    `time_s` seconds (None: no deadline), raising CompileBudgetError (a ConstraintError naming the pattern
    and the budget) past either. With a tokenizer (or TokenVocab) the result is the cached token table
    (TokenFSM, or the CFG index of a grammar spec), so the request that follows starts without compiling;
    without one, the pattern's ByteDFA (a validation). Safe to call from a worker thread: the compile
    stops itself, which a thread pool's timeout cannot do."""
    regex = spec.regex if isinstance(spec, ConstraintSpec) else spec
    with budget_scope(CompileBudget(mem_bytes, time_s)):
        if tokenizer is None:
            return regex_to_dfa(regex)
        vocab = _vocab(tokenizer, eos_token_ids)
        if isinstance(spec, ConstraintSpec) and spec.grammar is not None:
            from sglang.runtime.constrained.cfg_state import cfg_index

            got: Any = cfg_index(spec.grammar, vocab)
        else:
            got = (cache or get_default_cache()).get(regex, vocab)
        return got


def serialize_fsm(fsm: TokenFSM) -> bytes:
    return fsm_to_bytes(fsm)


def deserialize_fsm(data: bytes) -> TokenFSM:
    return fsm_from_bytes(data)


def preload(fsm: TokenFSM, cache: Optional[ConstraintCache] = None) -> str:
    """Put a deserialized table into the (default) cache so requests with its regex skip compilation."""
    c = cache or get_default_cache()
    key = table_key(fsm.pattern, fsm.fingerprint)
    c.remember(key, fsm)
    return key
