"""Sampler on synthetic logits (CPU): greedy, filters, distribution, penalties, seeds, masks, logprobs."""
from __future__ import annotations

import math

import pytest
import torch

from sglang.runtime.sampling import (
    Sampler,
    SamplingBatchInfo,
    SamplingParams,
    make_generator,
    position_uniform,
    token_logprobs,
    top_logprobs,
)

V = 32


def build(params, outputs=None, gens=None, **kw):
    outputs = outputs if outputs is not None else [[] for _ in params]
    return SamplingBatchInfo.build(params, outputs, gens, kw.pop("vocab_size", V), "cpu", **kw)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    n = counts.sum()
    expected = probs * n
    m = expected > 0
    assert counts[~m].sum() == 0, "sampled a token with zero probability"
    return float(((counts[m] - expected[m]) ** 2 / expected[m]).sum())


def test_greedy_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(8, V)
    ids, lps = Sampler().sample(logits, build([SamplingParams(temperature=0.0)] * 8))
    assert torch.equal(ids, logits.argmax(-1))
    assert torch.allclose(lps, torch.log_softmax(logits, -1).max(-1).values)


@pytest.mark.parametrize("p", [SamplingParams(top_k=1), SamplingParams(top_p=1e-6), SamplingParams(temperature=1e-7)])
def test_degenerate_filters_equal_greedy(p):
    torch.manual_seed(1)
    logits = torch.randn(64, V) * 3
    ids, _ = Sampler(seed=0).sample(logits, build([p] * 64))
    assert torch.equal(ids, logits.argmax(-1))


def _many(logits_row: torch.Tensor, p: SamplingParams, n: int = 20000, seed: int = 0) -> torch.Tensor:
    logits = logits_row.unsqueeze(0).expand(n, -1).contiguous()
    ids, _ = Sampler(seed=seed).sample(logits, build([p] * n, vocab_size=logits.shape[1]))
    return torch.bincount(ids, minlength=logits.shape[1]).float()


# chi-square critical values at p = 0.001
_CRIT = {3: 16.27, 5: 20.52}


def test_temperature_one_matches_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    counts = _many(logits, SamplingParams(temperature=1.0))
    assert chi_square(counts, torch.softmax(logits, -1)) < _CRIT[5]
    # a wrong reference (temperature 2) must be rejected by the same test: the test has power
    assert chi_square(counts, torch.softmax(logits / 2, -1)) > 100


def test_temperature_scales_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    counts = _many(logits, SamplingParams(temperature=0.5), seed=1)
    assert chi_square(counts, torch.softmax(logits / 0.5, -1)) < _CRIT[5]


def test_top_p_top_k_min_p_truncate_and_renormalize():
    logits = torch.log(torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]))
    probs = torch.softmax(logits, -1)
    # top_p 0.8: keep 0.4, 0.3, 0.15 (mass before 0.15 is 0.7 < 0.8; before 0.1 it is 0.85)
    c = _many(logits, SamplingParams(top_p=0.8), seed=2)
    ref = probs.clone(); ref[3:] = 0
    assert chi_square(c, ref / ref.sum()) < _CRIT[3]
    c = _many(logits, SamplingParams(top_k=2), seed=3)
    ref = probs.clone(); ref[2:] = 0
    assert chi_square(c, ref / ref.sum()) < _CRIT[3]
    # min_p 0.3: keep p >= 0.12
    c = _many(logits, SamplingParams(min_p=0.3), seed=4)
    ref = probs.clone(); ref[3:] = 0
    assert chi_square(c, ref / ref.sum()) < _CRIT[3]
    # min_p combined with top_k (sorted path)
    c = _many(logits, SamplingParams(min_p=0.3, top_k=4), seed=5)
    assert c[3:].sum() == 0 and (c[:3] > 0).all()


def reference_filter(logits_row: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Full-sort reference of top-k / top-p / min-p on one row, renormalized."""
    probs = torch.softmax(logits_row / p.temperature, -1)
    order = probs.argsort(descending=True, stable=True)
    sp = probs[order]
    keep = torch.ones_like(sp, dtype=torch.bool)
    if p.top_k > 0:
        keep[p.top_k:] = False
    keep &= (sp.cumsum(0) - sp) < p.top_p
    keep &= sp >= p.min_p * sp[0]
    out = torch.zeros_like(probs)
    out[order] = sp * keep
    return out / out.sum()


@pytest.mark.parametrize("candidates", [1024, 8])
def test_filters_match_full_sort_reference(candidates, monkeypatch):
    # candidates=8 forces the partial top-k to be too small for most nuclei: the full-sort fallback
    monkeypatch.setattr(Sampler, "TOP_P_CANDIDATES", candidates)
    g = torch.Generator().manual_seed(7)
    rng = __import__("random").Random(7)
    vocab = 300
    params = []
    for _ in range(24):
        params.append(SamplingParams(
            temperature=rng.choice([0.5, 1.0, 1.5]),
            top_k=rng.choice([-1, -1, 3, 20, 250]),
            top_p=rng.choice([1.0, 1.0, 0.3, 0.9, 0.99]),
            min_p=rng.choice([0.0, 0.0, 0.05, 0.5]),
        ))
    logits = torch.randn(len(params), vocab, generator=g) * 2
    got = Sampler().filtered_probs(logits, build(params, vocab_size=vocab))
    for i, p in enumerate(params):
        assert torch.allclose(got[i] / got[i].sum(), reference_filter(logits[i], p), atol=1e-6), p


def test_each_row_draws_from_its_own_filter():
    # every row has top-k or top-p, with different values (one seeded)
    torch.manual_seed(8)
    base = torch.randn(40) * 1.5
    params = [SamplingParams(top_k=3), SamplingParams(top_p=0.7, temperature=0.8),
              SamplingParams(top_k=6, min_p=0.2), SamplingParams(top_p=0.5, seed=1)]
    n = 4000
    rows = [p.replace(seed=p.seed + i) if p.seed is not None else p for i in range(n) for p in params]
    info = build(rows, gens=[make_generator(p.seed) for p in rows], vocab_size=40)
    ids = Sampler(seed=0).sample(base.expand(n * 4, 40).contiguous(), info)[0].view(n, 4)
    for j, p in enumerate(params):
        counts = torch.bincount(ids[:, j], minlength=40).float()
        ref = reference_filter(base, p)
        df = int((ref > 0).sum()) - 1
        crit = {0: 1e-9, 1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46}[df]
        assert chi_square(counts, ref) < crit, (p, df)


def test_wide_nucleus_beyond_candidates_is_exact():
    # nearly flat distribution over 3000 tokens: the 0.5-nucleus has ~1500 tokens (> 1024 candidates)
    vocab = 3000
    logits = -1e-4 * torch.arange(vocab, dtype=torch.float32)
    p = SamplingParams(top_p=0.5)
    want = reference_filter(logits, p)
    got = Sampler().filtered_probs(logits[None], build([p], vocab_size=vocab))[0]
    assert int((want > 0).sum()) > Sampler.TOP_P_CANDIDATES
    assert torch.equal(got > 0, want > 0)
    # and the draw (candidate path, after the full-sort fallback) stays inside the nucleus
    drawn = Sampler(seed=0).sample(logits.expand(500, vocab).contiguous(), build([p] * 500, vocab_size=vocab))[0]
    assert bool((want[drawn] > 0).all()) and int(drawn.max()) > Sampler.TOP_P_CANDIDATES


def test_mixed_batch_rows_keep_their_own_params():
    torch.manual_seed(3)
    base = torch.randn(V)
    params = [SamplingParams(temperature=0), SamplingParams(top_k=2), SamplingParams(), SamplingParams(min_p=0.9)]
    n = 500
    logits = base.expand(n * len(params), V).contiguous()
    ids, _ = Sampler(seed=0).sample(logits, build(params * n))
    ids = ids.view(n, len(params))
    order = base.argsort(descending=True)
    assert (ids[:, 0] == order[0]).all()
    assert set(ids[:, 1].tolist()) == set(order[:2].tolist())
    assert len(set(ids[:, 2].tolist())) > 5
    probs = torch.softmax(base, -1)
    allowed = set((probs >= 0.9 * probs.max()).nonzero().flatten().tolist())
    assert set(ids[:, 3].tolist()) <= allowed


def test_penalties_match_hand_computed_reference():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0]])
    p = SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25)
    info = build([p], outputs=[[3, 3, 1]], prompt_ids=[[0, 4]], vocab_size=6)
    got = Sampler().process_logits(logits, info)
    # repetition over prompt+output {0,1,3,4}: 2/2=1, -1*2=-2, 3/2=1.5, -2*2=-4
    # then frequency/presence over output counts {3:2, 1:1}
    expect = torch.tensor([[1.0, -2.0 - 0.5 - 0.25, 0.5, 1.5 - 1.0 - 0.25, -4.0, 1.0]])
    assert torch.allclose(got, expect)
    # the input is not modified, and a penalty-free row in the same batch is untouched
    info2 = build([p, SamplingParams()], outputs=[[3, 3, 1], [3, 3]], prompt_ids=[[0, 4], [0]], vocab_size=6)
    got2 = Sampler().process_logits(torch.cat([logits, logits]), info2)
    assert torch.allclose(got2[0], expect[0]) and torch.equal(got2[1], logits[0])
    assert logits[0, 0] == 2.0


def test_penalty_changes_greedy_choice_but_not_reported_logprob():
    logits = torch.tensor([[3.0, 2.9, 0.0, 0.0]])
    p = SamplingParams(temperature=0, frequency_penalty=1.0)
    ids, lps = Sampler().sample(logits, build([p], outputs=[[0]], vocab_size=4))
    assert ids.tolist() == [1]
    assert lps.item() == pytest.approx(torch.log_softmax(logits, -1)[0, 1].item(), abs=1e-6)


def test_logit_bias_steers_greedy_and_sampling():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 2)
    params = [SamplingParams(temperature=0, logit_bias={"3": 5.0}),
              SamplingParams(temperature=0, logit_bias={0: -100, 1: -100})]
    ids, lps = Sampler().sample(logits, build(params, vocab_size=4))
    assert ids.tolist() == [3, 2]
    assert torch.allclose(lps, token_logprobs(logits, ids))  # reported on the raw logits
    c = _many(torch.zeros(4), SamplingParams(logit_bias={"1": math.log(3.0)}), n=8000)
    assert chi_square(c, torch.tensor([1.0, 3.0, 1.0, 1.0]) / 6) < _CRIT[3]


def test_repetition_penalty_requires_prompt_ids():
    with pytest.raises(ValueError, match="prompt_ids"):
        build([SamplingParams(repetition_penalty=1.2)])


def _run_seeded(rows_params, rows_seeds, steps, logits_fn):
    gens = [make_generator(s) for s in rows_seeds]
    sampler = Sampler()  # unseeded rows use torch's global RNG
    out = []
    for t in range(steps):
        info = build(rows_params, gens=gens, vocab_size=1000)
        ids, _ = sampler.sample(logits_fn(t, len(rows_params)), info)
        out.append(ids.tolist())
    return [list(col) for col in zip(*out)]


@pytest.mark.parametrize("p", [SamplingParams(seed=7), SamplingParams(seed=7, top_p=0.9, temperature=0.8),
                               SamplingParams(seed=7, top_k=300, min_p=0.001)])
def test_seeded_rows_reproducible_and_batch_independent(p):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1000, generator=g)
    logits_fn = lambda t, bs: (base + 0.1 * t).expand(bs, -1).contiguous()  # noqa: E731
    alone = _run_seeded([p], [7], 6, logits_fn)[0]
    again = _run_seeded([p], [7], 6, logits_fn)[0]
    torch.manual_seed(123)
    # neighbours that need other filter paths (none, top-p, top-k, greedy, another seed)
    mixed = _run_seeded([SamplingParams(), p, SamplingParams(seed=8), SamplingParams(top_p=0.5),
                         SamplingParams(top_k=3), SamplingParams(temperature=0)],
                        [None, 7, 8, None, None, None], 6, logits_fn)
    assert alone == again == mixed[1]
    assert mixed[2] != alone  # another seed, another stream
    assert make_generator(None) is None


def test_seeded_step_redone_draws_the_same_token():
    # a step computed twice (retraction, a flushed overlap step) must not shift a seeded stream
    logits = torch.zeros(1, 1000)
    p = SamplingParams(seed=42)
    draw = lambda out: Sampler().sample(logits, build([p], outputs=[out], gens=[make_generator(42)],  # noqa: E731
                                                      vocab_size=1000))[0].item()
    assert draw([1, 2]) == draw([1, 2])
    assert len({draw([0] * k) for k in range(8)}) > 4  # a new position, a new draw
    # the seed in the params is enough (a caller without generators)
    assert Sampler().sample(logits, build([p], outputs=[[1, 2]], vocab_size=1000))[0].item() == draw([1, 2])


def test_position_uniform_is_uniform():
    us = torch.tensor([position_uniform(s, k) for s in range(40) for k in range(100)], dtype=torch.float64)
    assert 0 <= us.min() and us.max() < 1
    assert chi_square(torch.histc(us.float(), bins=10, min=0, max=1), torch.full((10,), 0.1)) < 27.88  # df 9


def test_seeded_sampling_follows_softmax():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n = 10000
    params = [SamplingParams(seed=i) for i in range(n)]
    info = build(params, gens=[make_generator(i) for i in range(n)], vocab_size=6)
    ids, _ = Sampler().sample(logits.expand(n, 6).contiguous(), info)
    counts = torch.bincount(ids, minlength=6).float()
    assert chi_square(counts, torch.softmax(logits, -1)) < _CRIT[5]


def test_min_new_tokens_masks_eos_and_stop_ids():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0]] * 3)
    params = [
        SamplingParams(temperature=0, min_new_tokens=2, stop_token_ids=[1]),
        SamplingParams(temperature=0, min_new_tokens=2, stop_token_ids=[1], ignore_eos=True),
        SamplingParams(temperature=0, min_new_tokens=2),
    ]
    s = Sampler()
    ids, lps = s.sample(logits, build(params, outputs=[[2], [2], [2, 2]], vocab_size=4, eos_token_ids=[0]))
    # row0: eos 0 and stop 1 banned; row1: ignore_eos keeps eos allowed; row2: reached min -> eos
    assert ids.tolist() == [2, 0, 0]
    assert torch.allclose(lps, token_logprobs(logits, ids))


def test_vocab_mask_applied_and_empty_row_falls_back():
    torch.manual_seed(4)
    logits = torch.randn(3, V)
    mask = torch.zeros(3, V, dtype=torch.bool)
    mask[0, [3, 7]] = True
    mask[1, 5:9] = True
    # row 2 allows nothing: a constraint bug; the sampler ignores the mask there rather than crash
    info = build([SamplingParams(temperature=0), SamplingParams(), SamplingParams(temperature=0)], vocab_mask=mask)
    ids, _ = Sampler(seed=0).sample(logits, info)
    assert ids[0].item() == max([3, 7], key=lambda t: logits[0, t].item())
    assert 5 <= ids[1].item() < 9
    assert ids[2].item() == logits[2].argmax().item()
    many = build([SamplingParams()] * 2000, vocab_mask=mask[1:2].expand(2000, V).contiguous())
    drawn = Sampler(seed=1).sample(logits[1:2].expand(2000, V).contiguous(), many)[0]
    assert set(drawn.tolist()) == {5, 6, 7, 8}
    with pytest.raises(ValueError, match="vocab_mask"):
        build([SamplingParams()], vocab_mask=torch.ones(1, V))


def test_logprob_is_of_original_logits():
    torch.manual_seed(5)
    logits = torch.randn(16, V)
    params = [SamplingParams(temperature=0.3, top_k=5, presence_penalty=1.0)] * 16
    ids, lps = Sampler(seed=0).sample(logits, build(params, outputs=[[1, 2]] * 16))
    ref = torch.log_softmax(logits, -1).gather(1, ids[:, None]).squeeze(1)
    assert torch.allclose(lps, ref, atol=1e-6)


def test_top_logprobs_helper():
    torch.manual_seed(6)
    logits = torch.randn(3, V)
    got = top_logprobs(logits, [2, 0, 5])
    lp = torch.log_softmax(logits, -1)
    assert [len(r) for r in got] == [2, 0, 5]
    for i, row in enumerate(got):
        vals, idx = lp[i].topk(len(row)) if row else (torch.tensor([]), torch.tensor([]))
        assert [t for _, t in row] == idx.tolist()
        assert all(math.isclose(a, b, abs_tol=1e-6) for (a, _), b in zip(row, vals.tolist()))
    assert top_logprobs(logits, 0) == [[], [], []]


def test_shape_errors():
    info = build([SamplingParams()] * 2)
    with pytest.raises(ValueError, match="logits"):
        Sampler().sample(torch.zeros(3, V), info)
    with pytest.raises(ValueError, match="vocab"):
        Sampler().sample(torch.zeros(2, V + 1), info)
    with pytest.raises(ValueError, match="output_ids"):
        SamplingBatchInfo.build([SamplingParams()], [], None, V, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_greedy_filters_and_seeds():
    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 4096, generator=g) * 3).to(dev)
    params = [SamplingParams(temperature=0), SamplingParams(top_p=0.9, top_k=100, min_p=0.01, temperature=0.8),
              SamplingParams(seed=5), SamplingParams(repetition_penalty=1.3, frequency_penalty=0.5, seed=6),
              SamplingParams(top_p=0.99), SamplingParams(top_k=1)]
    outs = [[1, 2, 3]] * 6
    gens = [make_generator(p.seed, dev) for p in params]
    info = SamplingBatchInfo.build(params, outs, gens, 4096, dev, prompt_ids=[[4, 5]] * 6, eos_token_ids=[0])
    s = Sampler(seed=0)
    ids, lps = s.sample(logits, info)
    assert ids.device.type == "cuda" and ids[0] == logits[0].argmax() and ids[5] == logits[5].argmax()
    assert torch.allclose(lps, torch.log_softmax(logits, -1).gather(1, ids[:, None]).squeeze(1))
    probs = s.filtered_probs(s.process_logits(logits, info), info).cpu()
    cpu_info = SamplingBatchInfo.build(params, outs, None, 4096, "cpu", prompt_ids=[[4, 5]] * 6)
    cpu_probs = Sampler().filtered_probs(Sampler().process_logits(logits.cpu(), cpu_info), cpu_info)
    assert torch.allclose(probs, cpu_probs, atol=1e-5)
    # the seeded row alone, with a fresh generator, draws the same token as inside the batch
    alone = SamplingBatchInfo.build(params[2:3], outs[:1], [make_generator(5, dev)], 4096, dev)
    assert s.sample(logits[2:3], alone)[0].item() == ids[2].item()
    # a seeded stream picks the same tokens on CPU and GPU
    row = logits[4:5].expand(64, -1).contiguous()
    ps = [SamplingParams(seed=100 + i, temperature=0.9) for i in range(64)]
    on = [Sampler().sample(row.to(d), SamplingBatchInfo.build(ps, [[]] * 64, [make_generator(p.seed) for p in ps],
                                                              4096, d))[0].tolist() for d in ("cpu", dev)]
    assert on[0] == on[1]
