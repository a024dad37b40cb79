"""PenaltyCache: incremental per-request token counts equal a from-scratch count at every step."""
from __future__ import annotations

import random

import pytest
import torch

from sglang.runtime.sampling.penalties import PenaltyCache, token_counts

V = 50


def test_incremental_counts_match_recount_under_appends_rewrites_and_churn():
    rng = random.Random(0)
    cache = PenaltyCache(max_idle=3)
    live: list[tuple[list[int], list[int]]] = []
    for step in range(80):
        # churn: requests arrive and leave; some skip steps (paused), some get their tail rewritten
        if rng.random() < 0.3 or not live:
            live.append(([rng.randrange(V) for _ in range(rng.randint(0, 6))], []))
        if rng.random() < 0.15 and len(live) > 1:
            live.pop(rng.randrange(len(live)))
        for prompt, out in live:
            out.append(rng.randrange(V))
            if rng.random() < 0.1 and len(out) > 2:  # jump-forward: drop a tail, append other ids
                k = rng.randint(1, len(out) - 1)
                del out[-k:]
                out.extend(rng.randrange(V) for _ in range(rng.randint(0, 3)))
        batch = [r for r in live if rng.random() < 0.8] or live[:1]
        with_prompt = step % 2 == 0
        rows = [(p if with_prompt else None, o) for p, o in batch]
        got = cache.counts(rows, V, "cpu")
        want = token_counts([(p if with_prompt else []) + o for p, o in batch], V, "cpu")
        assert torch.equal(got, want), step
    assert len(cache) <= 2 * len(live) + 2  # idle rows are evicted (max_idle=3)


def test_out_of_vocab_history_is_an_error_and_leaves_cache_clean():
    cache = PenaltyCache()
    out = [1, 2, V]
    with pytest.raises(ValueError, match=f"token id {V}.*vocabulary"):
        cache.counts([(None, out)], V, "cpu")
    out[-1] = 3
    assert torch.equal(cache.counts([(None, out)], V, "cpu"), token_counts([[1, 2, 3]], V, "cpu"))
    with pytest.raises(ValueError, match="vocabulary"):
        token_counts([[-1]], V, "cpu")


def test_vocab_change_resets():
    cache = PenaltyCache()
    out = [1, 1]
    assert cache.counts([(None, out)], V, "cpu")[0, 1] == 2
    assert cache.counts([(None, out)], V + 5, "cpu").shape == (1, V + 5)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_a_step_counts_only_new_tokens(device):
    cache = PenaltyCache()
    prompt, out = [1, 2, 3, 4, 5], [6, 7, 8]
    cache.counts([(prompt, out)], V, device)
    assert cache.tokens_counted == 8
    for step in range(3):
        out.append(9)
        got = cache.counts([(prompt, out)], V, device)
        assert cache.tokens_counted == 9 + step
        assert got[0, 9].item() == step + 1 and got[0, 1].item() == 1
