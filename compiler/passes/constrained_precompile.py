"""Regex / JSON-schema / choices precompilation into the constrained-decoding tables.

For every Gen with `regex`, `json_schema` or a typed `dtype`, and every Select with literal choices,
the constraint is compiled at compile time with runtime/constrained: the byte-level DFA always (so an
unsupported regex or schema is a compile error at the gen's source line, not a failure mid-run), and
the token-level table too when a tokenizer is given (`sglc compile --model`). The results go into the
artifact's "constraints" section keyed by a content hash; `fn.attrs["constraints"][str(node)]` names
the key. The executor loads stored tables into the runtime's cache before the first request.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from typing import Any

from ...lang import ir
from ..ir_edit import all_nodes

# dtype -> the regex the executor constrains with (SGLang's dtype=int regex; float/bool likewise)
DTYPE_REGEX = {"int": r"[-+]?\d+", "float": r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", "bool": r"(True|False)"}


def constraint_of(op: Any) -> tuple[str, str] | None:
    """(kind, source) of the constraint an op decodes under, or None."""
    if isinstance(op, ir.Gen):
        if op.regex is not None:
            return "regex", op.regex
        if op.json_schema is not None:
            return "json", op.json_schema
        if op.dtype in DTYPE_REGEX:
            return "regex", DTYPE_REGEX[op.dtype]
    if isinstance(op, ir.Select) and isinstance(op.choices, tuple):
        return "choices", json.dumps(list(op.choices))
    return None


def constraint_key(kind: str, source: str) -> str:
    return hashlib.sha256(f"{kind}\0{source}".encode()).hexdigest()[:16]


def _schema_to_regex(schema: str) -> str | None:
    try:
        from ...runtime import constrained as C
    except ImportError:
        return None
    for mod_name in ("json_schema", "json_regex", "schema"):
        try:
            mod = __import__(f"{C.__name__}.{mod_name}", fromlist=["*"])
        except ImportError:
            continue
        for fname in ("json_schema_to_regex", "build_regex_from_schema", "schema_to_regex"):
            f = getattr(mod, fname, None)
            if f is not None:
                return f(schema)
    return None


def _choices_regex(choices: list[str]) -> str:
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


def _dfa(pattern: str) -> Any:
    from ...runtime.constrained.regex_fsm import regex_to_dfa

    return regex_to_dfa(pattern)


def _token_table(pattern: str, dfa: Any, tokenizer: Any) -> tuple[str, str] | None:
    """(fingerprint, base64 npz of the token FSM arrays) when the runtime can build one."""
    try:
        from ...runtime.constrained.token_fsm import TokenFSM
        from ...runtime.constrained.vocab import vocab_from_tokenizer
    except ImportError:
        return None
    import numpy as np

    vocab = vocab_from_tokenizer(tokenizer)
    fsm = TokenFSM.build(pattern, dfa, vocab)
    buf = io.BytesIO()
    np.savez_compressed(buf, **fsm.to_arrays())
    fingerprint = getattr(fsm, "fingerprint", None) or getattr(vocab, "fingerprint", None) or "unknown"
    return str(fingerprint), base64.b64encode(buf.getvalue()).decode()


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    marks: dict[str, str] = {}
    for node in all_nodes(fn):
        op = fn.op(node)
        c = constraint_of(op)
        if c is None:
            continue
        kind, source = c
        key = constraint_key(kind, source)
        marks[str(node)] = key
        if key in ctx.constraints:
            continue
        entry: dict[str, Any] = {"kind": kind, "source": source}
        try:
            pattern = source if kind == "regex" else _choices_regex(json.loads(source)) if kind == "choices" \
                else _schema_to_regex(source)
            if pattern is not None:
                dfa = _dfa(pattern)
                entry["regex"] = pattern
                entry["dfa_states"] = int(dfa.num_states)
                if ctx.tokenizer is not None:
                    table = _token_table(pattern, dfa, ctx.tokenizer)
                    if table is not None:
                        entry["tables"] = {table[0]: table[1]}
        except ImportError:
            pass  # runtime/constrained not available: the runtime compiles at first use
        except ValueError as e:  # ConstraintError subclasses ValueError
            raise ir.IRError(f"{kind} constraint of {ir.describe(op)} cannot be compiled: {e}", node=node, op=op,
                             loc=fn.loc_of(node), function=fn.name) from None
        ctx.constraints[key] = entry
        ctx.log.append(f"constrained-precompile: node {node}: {kind} -> {key}"
                       + (f" ({entry.get('dfa_states')} DFA states)" if "dfa_states" in entry else ""))
    fn.attrs["constraints"] = marks
    return fn
