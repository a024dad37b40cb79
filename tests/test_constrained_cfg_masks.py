"""The CFG engine's token masks with SmolLM2's vocabulary: exact against the parser itself along random
walks (no allowed token leads nowhere, no viable token is masked), the two trie walks agree, and the
per-terminal walks are computed once and reused across schemas (counted, not timed)."""
from __future__ import annotations

import json
import random

import numpy as np
import torch
from constrained_helpers import smol_vocab

from sglang.runtime.constrained import build_constraint_from_sampling_params
from sglang.runtime.constrained.cfg_state import CFGConstraintState, cfg_index, trie_lists
from sglang.runtime.constrained.token_fsm import write_mask_row

SCHEMA = {"type": "object", "properties": {
    "kind": {"enum": ["a", "b"]},
    "name": {"type": "string", "maxLength": 12},
    "n": {"type": "integer", "minimum": -5, "maximum": 300},
    "x": {"type": "number"},
    "tags": {"type": "array", "items": {"type": "string", "format": "date"}, "maxItems": 2},
    "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}},
    "required": ["kind"], "additionalProperties": False,
    "allOf": [{"if": {"properties": {"kind": {"const": "a"}}}, "then": {"required": ["n"]}}]}


def _exact(state: CFGConstraintState, vocab) -> np.ndarray:
    """The slow exact mask: every token fed to the recognizer on its own."""
    rec = state.rec
    want = np.array([bool(tb) and rec.try_bytes(tb) is not None for tb in vocab.token_bytes])
    want[list(vocab.eos_token_ids)] = rec.accepting
    return want


def test_masks_equal_the_exact_path_on_random_walks(default_model_path) -> None:
    vocab = smol_vocab(default_model_path)
    spec = build_constraint_from_sampling_params({"json_schema": json.dumps(SCHEMA)})
    assert spec.grammar is not None  # recursive: the CFG engine
    index = cfg_index(spec.grammar, vocab, disk=False)
    rng = random.Random(3)
    eos = set(vocab.eos_token_ids)
    checked = 0
    for walk in range(3):
        state = CFGConstraintState(index)
        for step in range(40):
            got = state.allowed_mask()
            if step % 4 == walk % 4:  # every fourth position (the exact path costs ~1 s per position)
                want = _exact(state, vocab)
                assert np.array_equal(got, want), [vocab.token_bytes[i] for i in np.flatnonzero(got != want)][:10]
                checked += 1
            pick = [i for i in np.flatnonzero(got).tolist() if i not in eos]
            if not pick or state.must_stop():
                break
            state.advance(rng.choice(pick))
    assert checked >= 6 and index.truncated_masks == 0


def test_sparse_and_dense_trie_walks_agree(default_model_path) -> None:
    vocab = smol_vocab(default_model_path)
    spec = build_constraint_from_sampling_params({"json_schema": json.dumps(SCHEMA)})
    g = cfg_index(spec.grammar, vocab, disk=False).g
    tr = trie_lists(vocab)
    for t in range(len(g.dfas)):
        dfa = g.dfas[t]
        for q in range(1, min(dfa.num_states, 4)):
            sparse = tr.sparse_walk(dfa, q, vocab.size, max_nodes=10 ** 9)
            dense = tr.dense_walk(dfa, q, vocab.size)
            assert np.array_equal(sparse[0], dense[0]) and sparse[1] == sorted(dense[1]), (t, q)


def test_terminal_walks_are_shared_across_schemas(default_model_path) -> None:
    """The string terminal's walk made for one schema is reused by another schema's grammar: a mask
    inside the second schema's string value computes no walk of its own."""
    vocab = smol_vocab(default_model_path)

    def index_of(key: str):
        schema = {"type": "object", "properties": {key: {"type": "string"}, "r": {"$ref": "#"}}}
        return cfg_index(build_constraint_from_sampling_params({"json_schema": json.dumps(schema)}).grammar,
                         vocab, disk=False)

    first, second = index_of("alpha_key"), index_of("beta_key")
    assert first is not second and first.g.term_regexes != second.g.term_regexes
    s1 = CFGConstraintState(first)
    s1.rec.feed(b'{"alpha_key": "')
    s1.allowed_mask()  # computes the string body's walk, or finds it from an earlier test: shared either way
    s2 = CFGConstraintState(second)
    s2.rec.feed(b'{"beta_key": "')
    before = second.walks_computed
    mask = s2.allowed_mask()
    assert second.walks_computed == before  # the string body's walk came from the first schema
    assert np.array_equal(mask, _exact(s2, vocab))


def test_write_mask_row_pads_and_copies() -> None:
    allowed = np.array([True, False, True])
    row = torch.ones(5, dtype=torch.bool)
    write_mask_row(row, allowed)
    assert row.tolist() == [True, False, True, False, False]
