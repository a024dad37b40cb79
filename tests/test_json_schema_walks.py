"""Token-level walks of JSON-schema constraints (SmolLM2's vocabulary): from every state the mask offers a
token (it never allows one that leads nowhere), and every walk that reaches EOS is a document valid under
the schema (`jsonschema`). Covers both engines and real-world schemas of the benchmark set."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from constrained_helpers import smol_vocab

from sglang.runtime.constrained import ConstraintCache, build_constraint_from_sampling_params, new_state
from sglang.runtime.constrained.errors import SchemaWarning

jsonschema = pytest.importorskip("jsonschema")
DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "json_schemas.jsonl"
REAL = ["kubernetes/hostalias-v1", "kubernetes/containerimage-v1", "kubernetes/componentcondition-v1",
        "kubernetes/networkpolicyport-networking-v1", "github/github-discussion", "snowplow/page_ping",
        "glaive/order_food"]

TREE = {"$defs": {"node": {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["name"]}},
    "$ref": "#/$defs/node"}
MIXED = {"type": "object", "properties": {
    "id": {"type": "string", "format": "uuid"},
    "score": {"type": "number", "minimum": 0, "maximum": 10},
    "tags": {"type": "array", "items": {"enum": ["a", "b", {"k": 1}]}, "minItems": 1, "maxItems": 3},
    "extra": {"type": "object", "patternProperties": {"^x_[a-z]{1,3}$": {"type": "integer"}},
              "additionalProperties": False},
    "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}},
    "required": ["id", "tags"], "additionalProperties": False}


def _real(name: str) -> dict:
    for line in DATA.read_text(encoding="utf-8").split("\n"):  # (schemas hold U+2028: not splitlines)
        row = json.loads(line) if line else {}
        if row.get("id") == name:
            return row["schema"]
    raise KeyError(name)


def walk(state, vocab, rng: random.Random, soft_len: int = 40, max_len: int = 300) -> bytes | None:
    """A random walk to EOS (None if it did not end within max_len tokens); asserts no dead end."""
    eos = set(vocab.eos_token_ids)
    out = []
    for step in range(max_len):
        mask = state.allowed_mask() if hasattr(state, "allowed_mask") else None
        ids = np.flatnonzero(mask).tolist() if mask is not None else state.allowed_token_ids().tolist()
        if state.is_accepting() and not hasattr(state, "allowed_mask"):
            ids += list(eos)  # the regex engine lists EOS through its mask row only
        assert ids, f"dead end after {b''.join(out)!r}"
        ends = [i for i in ids if i in eos]
        if ends and (step >= soft_len or len(ends) == len(ids)):
            return b"".join(out)
        pick = [i for i in ids if i not in eos]
        if step >= soft_len:
            pick = [i for i in pick if any(c in vocab.token_bytes[i] for c in b'"}]')] or pick
        tid = rng.choice(pick)
        state.advance(tid)
        out.append(vocab.token_bytes[tid])
    return None


@pytest.mark.parametrize("name", ["tree", "mixed"] + REAL)
def test_walks_never_dead_end_and_validate(name, default_model_path) -> None:
    schema = TREE if name == "tree" else MIXED if name == "mixed" else _real(name)
    vocab = smol_vocab(default_model_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaWarning)  # these schemas use only enforceable keywords
        spec = build_constraint_from_sampling_params({"json_schema": json.dumps(schema)})
    if name == "tree":
        assert spec.grammar is not None  # recursion runs on the CFG engine
    if name == "mixed":
        assert spec.grammar is None  # a small non-recursive schema keeps the regex engine
    cache = ConstraintCache(disk=False)
    rng = random.Random(name)
    finished = 0
    for _ in range(4):
        text = walk(new_state(spec, vocab, cache=cache), vocab, rng)
        if text is None:
            continue
        finished += 1
        jsonschema.validate(json.loads(text.decode()), schema)
    assert finished >= 2


def test_memoized_masks_equal_fresh_ones(default_model_path) -> None:
    """Masks come from the per-grammar memo keyed by the parser state's signature: along random walks
    every one equals the mask computed from scratch, and the memo is hit (positions inside a string,
    the same property in each array element)."""
    from sglang.runtime.constrained.cfg_state import CFGConstraintState, cfg_index

    schema = {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 100}, "kids": TREE, "n": {"type": "integer"}},
        "required": ["name"]}, "maxItems": 4, "$defs": TREE["$defs"]}
    spec = build_constraint_from_sampling_params({"json_schema": json.dumps(schema)})
    vocab = smol_vocab(default_model_path)
    index = cfg_index(spec.grammar, vocab, disk=False)
    rng = random.Random(7)
    eos = list(vocab.eos_token_ids)
    for _ in range(3):
        state = CFGConstraintState(index)
        for _ in range(60):
            got = state.allowed_mask()
            if state.rec.col is None or state.must_stop():
                break
            fresh = index.mask(state.rec.col, state.rec.chart)
            if state.rec.accepting:
                fresh[eos] = True
            assert np.array_equal(got, fresh)
            pick = [i for i in np.flatnonzero(got).tolist() if i not in eos]
            if not pick:
                break
            state.advance(rng.choice(pick))
    assert index.mask_hits > 0
