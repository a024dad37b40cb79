"""Disk quota of the constraint caches (disk_quota.py): least recently used tables go first, both the
token tables and the grammar cache count, a table over the whole quota is not written."""
from __future__ import annotations

import os

from sglang.runtime.constrained import ConstraintCache, TokenVocab
from sglang.runtime.constrained.disk_quota import enforce_quota, quota_bytes

VOCAB = TokenVocab.from_tokens([b"<eos>"] + [bytes([c]) for c in range(32, 127)], eos_token_ids=[0])
PATTERNS = [f"{w}[a-z]{{1,{n}}}" for w, n in (("a", 40), ("b", 41), ("c", 42), ("d", 43))]


def _age(paths, start: float = 1_000_000.0) -> None:
    """Give files distinct, increasing use times (mtime resolution must not decide the order)."""
    for i, p in enumerate(paths):
        os.utime(p, (start + i, start + i))


def _files(d):
    return sorted(p.name for p in d.glob("*.fsm"))


def test_writes_evict_the_least_recently_used_tables(tmp_path) -> None:
    probe = ConstraintCache(cache_dir=tmp_path / "probe")
    probe.get(PATTERNS[0], VOCAB)
    size = next((tmp_path / "probe").glob("*.fsm")).stat().st_size
    cache = ConstraintCache(cache_dir=tmp_path / "c", disk_quota_bytes=int(size * 2.5))  # room for two
    d = tmp_path / "c"
    cache.get(PATTERNS[0], VOCAB)
    first = set(_files(d))
    cache.get(PATTERNS[1], VOCAB)
    _age(sorted(d.glob("*.fsm"), key=lambda p: p.name not in first))  # PATTERNS[0] older
    assert len(_files(d)) == 2
    # a disk hit on the older table makes it the most recently used one
    ConstraintCache(cache_dir=d, disk_quota_bytes=int(size * 2.5)).get(PATTERNS[0], VOCAB)
    cache.get(PATTERNS[2], VOCAB)
    left = set(_files(d))
    assert len(left) == 2 and first <= left  # PATTERNS[1] was evicted, not the one just read


def test_table_larger_than_the_quota_is_not_written(tmp_path) -> None:
    cache = ConstraintCache(cache_dir=tmp_path, disk_quota_bytes=100)
    fsm = cache.get(PATTERNS[0], VOCAB)
    assert fsm.pattern == PATTERNS[0] and not list(tmp_path.glob("*.fsm"))


def test_quota_counts_the_grammar_cache_too(tmp_path) -> None:
    (tmp_path / "cfg").mkdir()
    old, new = tmp_path / "cfg" / "old.npz", tmp_path / "new.fsm"
    old.write_bytes(b"x" * 600)
    new.write_bytes(b"y" * 600)
    (tmp_path / "cfg" / ".inflight.tmp.npz").write_bytes(b"z" * 600)  # another writer's temp file
    _age([old, new])
    assert enforce_quota(tmp_path, limit=1000, keep=new) == 600
    assert not old.exists() and new.exists() and (tmp_path / "cfg" / ".inflight.tmp.npz").exists()


def test_quota_is_configurable_by_environment(monkeypatch) -> None:
    monkeypatch.setenv("SGLANG_CACHE_QUOTA_MB", "3")
    assert quota_bytes() == 3 << 20
    monkeypatch.setenv("SGLANG_CACHE_QUOTA_MB", "lots")
    assert quota_bytes() == 2048 << 20  # a typo keeps the default rather than lifting the quota
    monkeypatch.delenv("SGLANG_CACHE_QUOTA_MB")
    assert quota_bytes() == 2048 << 20
