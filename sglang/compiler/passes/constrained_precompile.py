"""Regex / JSON-schema / choices precompilation into the constrained-decoding tables.

For every Gen with `regex`, `json_schema` or a typed `dtype`, and every Select with literal choices,
the constraint is compiled at compile time with runtime/constrained: the byte-level DFA always (so an
unsupported regex or schema is a compile error at the gen's source line, not a failure mid-run), and
the token-level table too when a tokenizer is given (`sglc compile --model`). A JSON schema goes through
the server's own entry point (`build_constraint_from_sampling_params`): the schema compiler and the
engine choice are the runtime's; a schema that runs on the CFG engine records its grammar key and, with a
tokenizer, leaves the compiled grammar in the runtime's disk cache. The results go into the
artifact's "constraints" section keyed by a content hash; `fn.attrs["constraints"][str(node)]` names
the key. The executor loads stored tables into the runtime's cache before the first request.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from sglang.lang import ir
from sglang.lang.gen_rules import typed_regex
from sglang.compiler.ir_edit import all_nodes


def constraint_of(op: Any) -> tuple[str, str] | None:
    """(kind, source) of the constraint an op decodes under, or None."""
    if isinstance(op, ir.Gen):
        if op.regex is not None:
            return "regex", op.regex
        if op.json_schema is not None:
            return "json_schema", op.json_schema
        rx = typed_regex(op.dtype)  # the interpreter's regex too: gen(dtype="str") is constrained on both paths
        if rx is not None:
            return "regex", rx
    if isinstance(op, ir.Select) and isinstance(op.choices, tuple):
        return "choices", json.dumps(list(op.choices))
    return None


def constraint_key(kind: str, source: str) -> str:
    return hashlib.sha256(f"{kind}\0{source}".encode()).hexdigest()[:16]


def to_spec(kind: str, source: str) -> Any:
    """The runtime's ConstraintSpec of this constraint, built by the same entry point the server uses for a
    request's sampling params (so a JSON schema gets the same compiler and the same engine choice: a
    regex table, or a grammar key for the CFG engine). Raises ConstraintError (a ValueError)."""
    from sglang.runtime.constrained import ConstraintSpec, build_constraint_from_sampling_params, choices_to_regex

    if kind == "choices":
        return ConstraintSpec(choices_to_regex(json.loads(source)), "choices", source)
    spec = build_constraint_from_sampling_params({kind: source})
    assert spec is not None  # a non-None source always yields a constraint
    return spec


def _entry(kind: str, source: str, tokenizer: Any) -> dict[str, Any]:
    from sglang.runtime.constrained import compile_regex, compile_with_budget, regex_to_dfa, serialize_fsm

    spec = to_spec(kind, source)
    entry: dict[str, Any] = {"kind": kind, "source": source, "regex": spec.regex,
                             "engine": "regex" if spec.grammar is None else "cfg"}
    if spec.grammar is not None:
        # the CFG engine's compiled grammar goes to the runtime's disk cache (cfg_cache.py), keyed by
        # this grammar key: the serving process then loads it instead of compiling
        entry["grammar"] = spec.grammar
        if tokenizer is not None:
            compile_with_budget(spec, tokenizer, time_s=None)
        return entry
    entry["dfa_states"] = int(regex_to_dfa(spec.regex).num_states)
    if tokenizer is not None and kind != "choices":  # select scores choices; only gens decode under tables
        fsm = compile_regex(spec.regex, tokenizer)
        entry["tables"] = {fsm.fingerprint: base64.b64encode(serialize_fsm(fsm)).decode()}
    return entry


def load_tables(constraints: dict[str, Any]) -> int:
    """Put an artifact's token tables into this process's constraint cache (in-process engine)."""
    from sglang.runtime.constrained import deserialize_fsm, preload

    n = 0
    for entry in constraints.values():
        for blob in entry.get("tables", {}).values():
            preload(deserialize_fsm(base64.b64decode(blob)))
            n += 1
    return n


def run(fn: ir.IRFunction, ctx) -> ir.IRFunction:
    import sglang.runtime.constrained  # noqa: F401  (loaded before the timings below, which it must not count)

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
        started = time.perf_counter()
        try:
            entry = _entry(kind, source, ctx.tokenizer)
        except ValueError as e:  # ConstraintError subclasses ValueError
            raise ir.IRError(f"{kind} constraint of {ir.describe(op)} cannot be compiled: {e}", node=node, op=op,
                             loc=fn.loc_of(node), function=fn.name) from None
        ctx.constraints[key] = entry
        # the compile time measured here is what the first request that uses it would otherwise wait
        ctx.decide("constrained-precompile", fn, node, f"{kind} constraint compiled ahead of time",
                   (time.perf_counter() - started, f"{entry.get('dfa_states', 0)} DFA states; the first request that "
                                                  "uses it would wait this long"), always=True)
        ctx.log.append(f"constrained-precompile: node {node}: {kind} -> {key}"
                       + (f" ({entry.get('dfa_states')} DFA states)" if "dfa_states" in entry else " (CFG engine)"))
    fn.attrs["constraints"] = marks
    return fn
