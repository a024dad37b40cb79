"""Ahead-of-time tables: disk cache hits, blob round trips without recompiling, fingerprint isolation."""
from __future__ import annotations

import numpy as np
import pytest

from sglang.runtime.constrained import (ConstraintCache, ConstraintState, TokenVocab, deserialize_fsm, preload,
                                        serialize_fsm)
from sglang.runtime.constrained import cache as cache_mod
from sglang.runtime.constrained import token_fsm

PATTERN = r'\{"id": [0-9]{1,6}, "tag": "(alpha|beta|gamma)"\}'


def _same(a, b) -> None:
    for k, v in a.to_arrays().items():
        assert np.array_equal(v, b.to_arrays()[k]), k
    assert a.pattern == b.pattern and a.fingerprint == b.fingerprint


def test_second_compile_is_a_disk_hit(tmp_path, vocab) -> None:
    c1 = ConstraintCache(cache_dir=tmp_path)
    f1 = c1.get(PATTERN, vocab)
    assert c1.stats["compiles"] == 1 and list(tmp_path.glob("*.fsm"))
    c2 = ConstraintCache(cache_dir=tmp_path)  # a fresh process' view: memory empty
    f2 = c2.get(PATTERN, vocab)
    assert c2.stats == {"memory_hits": 0, "disk_hits": 1, "compiles": 0, "blob_loads": 0}
    _same(f1, f2)
    for state in range(1, f1.num_states):  # rows kept from the build == rows unpacked from the file
        assert np.array_equal(f1.mask_row(state), f2.mask_row(state))
    c2.get(PATTERN, vocab)
    assert c2.stats["memory_hits"] == 1


def test_env_var_sets_the_cache_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_CACHE_DIR", str(tmp_path))
    assert cache_mod.default_cache_dir() == tmp_path / "constrained"


def test_corrupt_disk_entry_is_rebuilt(tmp_path, vocab) -> None:
    c1 = ConstraintCache(cache_dir=tmp_path)
    c1.get(r"[ab]{3}", vocab)
    (f,) = tmp_path.glob("*.fsm")
    f.write_bytes(b"garbage")
    c2 = ConstraintCache(cache_dir=tmp_path)
    c2.get(r"[ab]{3}", vocab)
    assert c2.stats["compiles"] == 1


def test_blob_round_trip_does_not_recompile(tmp_path, vocab, monkeypatch) -> None:
    src = ConstraintCache(cache_dir=tmp_path / "a")
    patterns = [PATTERN, r"(yes|no)", r"[0-9]+"]
    blob = src.to_blob(patterns, vocab)
    assert isinstance(blob, bytes)

    def _no_build(*a, **k):
        raise AssertionError("compiled although the blob had the table")

    monkeypatch.setattr(token_fsm.TokenFSM, "build", classmethod(lambda cls, *a, **k: _no_build()))
    dst = ConstraintCache(cache_dir=tmp_path / "b", disk=False)
    assert dst.load_blob(blob) == 3
    for p in patterns:
        _same(dst.get(p, vocab), src.get(p, vocab))
    assert dst.stats["compiles"] == 0 and dst.stats["memory_hits"] == 3
    st = ConstraintState(dst.get(r"(yes|no)", vocab), vocab)
    assert {vocab.token_bytes[t][:1] for t in st.allowed_token_ids()} <= {b"y", b"n", b"ye", b"no"}


def test_bad_blob_is_a_clear_error() -> None:
    c = ConstraintCache(disk=False)
    with pytest.raises(ValueError, match="magic"):
        c.load_blob(b"not a blob at all")


def test_serialize_preload(tmp_path, vocab) -> None:
    c = ConstraintCache(cache_dir=tmp_path)
    fsm = c.get(r"[a-c]{2}", vocab)
    again = deserialize_fsm(serialize_fsm(fsm))
    _same(fsm, again)
    other = ConstraintCache(disk=False)
    preload(again, other)
    assert other.get(r"[a-c]{2}", vocab) is again


def test_tables_are_keyed_by_tokenizer_fingerprint(tmp_path) -> None:
    v1 = TokenVocab.from_tokens([b"", b"a", b"b", b"ab"], eos_token_ids=[0])
    v2 = TokenVocab.from_tokens([b"", b"a", b"b", b"ba"], eos_token_ids=[0])
    assert v1.fingerprint != v2.fingerprint
    c = ConstraintCache(cache_dir=tmp_path)
    f1, f2 = c.get("(ab)+", v1), c.get("(ab)+", v2)
    assert c.stats["compiles"] == 2
    assert 3 in f1.allowed_ids(f1.start) and 3 not in f2.allowed_ids(f2.start)
    with pytest.raises(ValueError, match="fingerprint"):
        ConstraintState(f1, v2)


def test_memory_budget_evicts_least_recently_used(tmp_path) -> None:
    vocab = TokenVocab.from_tokens([b"", b"a", b"b"], eos_token_ids=[0])
    c = ConstraintCache(cache_dir=tmp_path, memory_items=2)
    for p in ["a+", "b+", "(ab)+"]:
        c.get(p, vocab)
    assert len(c._mem) == 2 and not any(f.pattern == "a+" for f in c._mem.values())
    tiny = ConstraintCache(cache_dir=tmp_path, memory_bytes=1)
    tiny.get("a+", vocab)
    tiny.get("b+", vocab)
    assert [f.pattern for f in tiny._mem.values()] == ["b+"]  # over budget: only the newest stays
