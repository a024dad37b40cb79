"""Constrained decoding: regex / JSON schema / choices / grammar → token-level FSM, masks, jump-forward.

Pipeline: constraint → regex (`api`, `json_schema`, `grammar`) → minimal byte DFA (`regex_fsm`) →
token index over the tokenizer's vocabulary (`token_fsm`, via `vocab`'s byte trie) → cached in memory,
on disk and in blobs (`cache`, its disk quota in `disk_quota`); compiles run under memory/time
budgets (`budget`) → per-request cursor with masks and jump-forward (`state`) → scheduler
hook (`scheduler_hook`). JSON schemas go through a grammar IR (`json_schema`, `json_lexical`, `schema_ir`):
small non-recursive ones become that one regex, recursive or large ones a context-free grammar for the
Earley engine (`cfg`, `cfg_state`, cached on disk by `cfg_cache`); grammar text is read by `lark_source`.
"""
from __future__ import annotations

from sglang.runtime.constrained.api import (BOOL_REGEX, FLOAT_REGEX, INT_REGEX, STRING_REGEX, ConstraintSpec,
                  build_constraint_from_sampling_params, choices_to_regex, compile_regex, compile_with_budget, deserialize_fsm,
                  new_state, preload, response_format_to_constraint, serialize_fsm)
from sglang.runtime.constrained.cache import ConstraintCache, default_cache_dir, get_default_cache
from sglang.runtime.constrained.errors import (CompileBudgetError, ConstraintError, ConstraintViolation, EmptyLanguageError, GrammarError, RegexSyntaxError,
                     SchemaError, SchemaWarning)
from sglang.runtime.constrained.json_schema import json_schema_info, json_schema_to_regex
from sglang.runtime.constrained.regex_fsm import ByteDFA, regex_to_dfa
from sglang.runtime.constrained.scheduler_hook import make_constraint_factory
from sglang.runtime.constrained.state import ConstraintState, JumpForward
from sglang.runtime.constrained.token_fsm import TokenFSM
from sglang.runtime.constrained.vocab import TokenVocab, vocab_from_tokenizer

__all__ = [
    "BOOL_REGEX", "CompileBudgetError", "FLOAT_REGEX", "INT_REGEX", "STRING_REGEX", "ByteDFA", "ConstraintCache", "ConstraintError",
    "ConstraintSpec", "ConstraintState", "ConstraintViolation", "EmptyLanguageError", "GrammarError",
    "JumpForward", "RegexSyntaxError", "SchemaError", "SchemaWarning", "TokenFSM", "TokenVocab",
    "build_constraint_from_sampling_params", "choices_to_regex", "compile_regex", "compile_with_budget", "default_cache_dir",
    "deserialize_fsm", "get_default_cache", "json_schema_info", "json_schema_to_regex", "make_constraint_factory",
    "new_state", "preload", "regex_to_dfa", "response_format_to_constraint", "serialize_fsm", "vocab_from_tokenizer",
]
