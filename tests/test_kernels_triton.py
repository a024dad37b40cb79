"""Triton kernels vs torch references on fresh random inputs (tiny sizes; the CPU runs them under
TRITON_INTERPRET=1, a GPU at real sizes via benchmarks/check_kernels.py). Outputs are NaN-poisoned
before each run so that any element a kernel fails to write shows up as a mismatch."""
from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from sglang.kernels import reference as ref  # noqa: E402
from sglang.kernels.reference import rel_err  # noqa: E402
from sglang.kernels.activation import silu_and_mul  # noqa: E402
from sglang.kernels.decode_attention import decode_attention  # noqa: E402
from sglang.kernels.extend_attention import extend_attention  # noqa: E402
from sglang.kernels.norm import rmsnorm  # noqa: E402
from sglang.kernels.rotary import apply_rotary_  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def tol(dtype: torch.dtype) -> float:
    return {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rmsnorm_matches_reference(dtype, with_residual):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 40, generator=g).to(DEV, dtype)
    w = (1 + 0.1 * torch.randn(40, generator=g)).to(DEV, dtype)
    r = torch.randn(5, 40, generator=g).to(DEV, dtype) if with_residual else None
    got = rmsnorm(x, w, 1e-6, residual=r)
    want = ref.rmsnorm_ref(x, w, 1e-6, residual=r)
    if with_residual:
        assert not torch.isnan(got[0]).any() and not torch.isnan(got[1]).any()
        assert rel_err(got[0], want[0]) < tol(dtype)
        assert rel_err(got[1], want[1]) < tol(dtype)
    else:
        assert not torch.isnan(got).any()
        assert rel_err(got, want) < tol(dtype)


def test_rmsnorm_rejects_bad_weight():
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(torch.randn(2, 8), torch.ones(7), 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_and_mul_matches_reference(dtype):
    x = torch.randn(6, 2 * 24).to(DEV, dtype)
    got = silu_and_mul(x)
    assert got.shape == (6, 24) and not torch.isnan(got).any()
    assert rel_err(got, ref.silu_and_mul_ref(x)) < tol(dtype)
    with pytest.raises(ValueError, match="2\\*d"):
        silu_and_mul(torch.randn(3, 5))


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rot_dim", [16, 8])
def test_rotary_matches_reference(is_neox, rot_dim):
    head_dim, hq, hk, t = 16, 4, 2, 7
    cache = ref.cos_sin_cache(rot_dim, max_pos=64, base=10000.0).to(DEV)
    pos = torch.randint(0, 64, (t,)).to(DEV)
    q = torch.randn(t, hq * head_dim).to(DEV)
    k = torch.randn(t, hk * head_dim).to(DEV)
    want_q, want_k = ref.rotary_ref(pos, q, k, head_dim, cache, is_neox)
    got_q, got_k = apply_rotary_(pos, q.clone(), k.clone(), head_dim, cache, is_neox)
    assert rel_err(got_q, want_q) < 1e-5 and rel_err(got_k, want_k) < 1e-5
    if rot_dim < head_dim:  # partial rotary: the tail of each head is untouched
        assert torch.equal(got_q.view(t, hq, head_dim)[..., rot_dim:], q.view(t, hq, head_dim)[..., rot_dim:])


def _pool_setup(seq_lens, hkv, d, dtype, pool_size=200, seed=0):
    """A KV pool with random contents and a req_to_token table mapping each request to random,
    distinct, non-contiguous slots (slot 0 excluded, as in TokenKVPool)."""
    g = torch.Generator().manual_seed(seed)
    k_buf = torch.randn(pool_size + 1, hkv, d, generator=g).to(DEV, dtype)
    v_buf = torch.randn(pool_size + 1, hkv, d, generator=g).to(DEV, dtype)
    perm = torch.randperm(pool_size, generator=g) + 1
    max_ctx = max(seq_lens) + 3
    req_to_token = torch.zeros(len(seq_lens) + 2, max_ctx, dtype=torch.int64)
    # requests live in shuffled rows of the table, as after many alloc/free cycles
    rows = torch.randperm(len(seq_lens) + 2, generator=g)[: len(seq_lens)]
    used = 0
    for i, n in enumerate(seq_lens):
        req_to_token[rows[i], :n] = perm[used: used + n]
        used += n
    return k_buf, v_buf, req_to_token.to(DEV), rows.to(DEV)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extend_attention_matches_reference(dtype):
    hq, hkv, d = 4, 2, 32
    prefix = [0, 5, 19]
    extend = [7, 1, 20]  # 20 > BLOCK_M in the interpreter: two query blocks, causal across them
    seq = [p + e for p, e in zip(prefix, extend)]
    k_buf, v_buf, r2t, rows = _pool_setup(seq, hkv, d, dtype)
    t = sum(extend)
    q = torch.randn(t, hq, d).to(DEV, dtype)
    start = torch.tensor([0, 7, 8]).to(DEV)
    lens = lambda xs: torch.tensor(xs).to(DEV)  # noqa: E731
    out = torch.full_like(q, float("nan"))
    scale = 1 / math.sqrt(d)
    extend_attention(q, k_buf, v_buf, r2t, rows, lens(prefix), lens(extend), start, max(extend), scale, out=out)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, prefix, extend, scale)
    assert not torch.isnan(out).any()
    assert rel_err(out, want) < tol(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_splits,heads", [(1, (4, 1)), (4, (4, 1)), (4, (6, 2))])
def test_decode_attention_matches_reference(dtype, num_splits, heads):
    (hq, hkv), d = heads, 32  # GQA groups of 4 and of 3 (not a power of two: masked head rows)
    seq = [1, 3, 37]  # 1 and 3 leave most of the 4 splits empty; 37 spans several kv blocks
    k_buf, v_buf, r2t, rows = _pool_setup(seq, hkv, d, dtype, seed=3)
    q = torch.randn(len(seq), hq, d).to(DEV, dtype)
    out = torch.full_like(q, float("nan"))
    scale = 1 / math.sqrt(d)
    decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor(seq).to(DEV), scale, num_splits=num_splits, out=out)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * len(seq), scale)
    assert not torch.isnan(out).any()
    assert rel_err(out, want) < tol(dtype)


@pytest.mark.parametrize("min_split", [1, 8, 1000])
def test_decode_attention_min_split_leaves_splits_empty_not_wrong(min_split):
    """With min_split a request uses only ceil(len / min_split) of its splits (one, for 1000); the rest are
    empty pieces whose partial values are neither written nor read (the buffers hold NaN here), fused pool
    write included: the owner of the newest token is the last used split."""
    from unittest import mock

    from sglang.kernels import decode_attention as dec

    hq, hkv, d, dtype = 4, 2, 32, torch.float32
    seq = [1, 9, 37, 70]
    k_buf, v_buf, r2t, rows = _pool_setup(seq, hkv, d, dtype, seed=7)
    loc = torch.stack([r2t[int(r), n - 1] for r, n in zip(rows, seq)])
    k_new, v_new = torch.randn(len(seq), hkv, d).to(DEV), torch.randn(len(seq), hkv, d).to(DEV)
    k_buf[loc] = float("nan")
    v_buf[loc] = float("nan")
    q = torch.randn(len(seq), hq, d).to(DEV)
    real = dec.split_buffers
    poisoned = lambda q_, n: tuple(t.fill_(float("nan")) for t in real(q_, n))  # noqa: E731
    with mock.patch.object(dec, "split_buffers", poisoned):
        out = decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor(seq).to(DEV), d ** -0.5, num_splits=4,
                               k_new=k_new, v_new=v_new, out_cache_loc=loc, min_split=min_split)
    assert torch.equal(k_buf[loc], k_new) and torch.equal(v_buf[loc], v_new)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * len(seq), d ** -0.5)
    assert not torch.isnan(out).any()
    assert rel_err(out, want) < tol(dtype)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_attention_fused_pool_write(num_splits):
    """With k_new/v_new the kernel writes the step's K/V into the pool at out_cache_loc (the slot starts
    NaN-poisoned, so reading it before writing would show) and attends to them."""
    hq, hkv, d, dtype = 4, 2, 32, torch.bfloat16
    seq = [1, 6, 29]
    k_buf, v_buf, r2t, rows = _pool_setup(seq, hkv, d, dtype, seed=5)
    loc = torch.stack([r2t[int(r), n - 1] for r, n in zip(rows, seq)])
    k_new = torch.randn(len(seq), hkv, d).to(DEV, dtype)
    v_new = torch.randn(len(seq), hkv, d).to(DEV, dtype)
    k_buf[loc] = float("nan")
    v_buf[loc] = float("nan")
    q = torch.randn(len(seq), hq, d).to(DEV, dtype)
    out = torch.full_like(q, float("nan"))
    decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor(seq).to(DEV), d ** -0.5, num_splits=num_splits,
                     out=out, k_new=k_new, v_new=v_new, out_cache_loc=loc)
    assert torch.equal(k_buf[loc], k_new) and torch.equal(v_buf[loc], v_new)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * len(seq), d ** -0.5)
    assert not torch.isnan(out).any()
    assert rel_err(out, want) < tol(dtype)


def test_attention_rejects_mismatched_heads():
    k_buf, v_buf, r2t, rows = _pool_setup([4], 3, 16, torch.float32)
    q = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="multiple"):
        decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor([4]), 0.25)


def test_decode_attention_rejects_partial_fused_args():
    k_buf, v_buf, r2t, rows = _pool_setup([4], 2, 16, torch.float32)
    q = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="together"):
        decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor([4]), 0.25, k_new=torch.randn(1, 2, 16))
    with pytest.raises(ValueError, match="k_new/v_new must be"):
        decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor([4]), 0.25, k_new=torch.randn(1, 3, 16),
                         v_new=torch.randn(1, 3, 16), out_cache_loc=torch.tensor([1]))


def test_build_kv_indices_gathers_each_request_slice():
    from sglang.kernels.kv_indices import build_kv_indices

    r2t = torch.arange(5 * 12).view(5, 12).to(DEV)
    rows = torch.tensor([3, 0, 4]).to(DEV)
    lens, starts = [4, 0, 7], [2, 0, 1]
    indptr = torch.tensor([0, 4, 4, 11], dtype=torch.int32).to(DEV)
    out = torch.full((11,), -1, dtype=torch.int32).to(DEV)
    build_kv_indices(r2t, rows, indptr, out, starts=torch.tensor(starts).to(DEV))
    want = torch.cat([r2t[r, s: s + n] for r, s, n in zip(rows.tolist(), starts, lens)]).int()
    assert torch.equal(out, want)


def test_auto_decode_splits_fill_the_gpu_for_small_batches_only():
    from sglang.kernels.decode_attention import DEFAULT_NUM_SPLITS, MAX_AUTO_SPLITS, auto_num_splits

    assert auto_num_splits(1, 8, 132) == MAX_AUTO_SPLITS  # 8B batch-1: 8 programs per split would idle the GPU
    assert auto_num_splits(64, 8, 132) == DEFAULT_NUM_SPLITS
    assert auto_num_splits(3, 8, 132) == DEFAULT_NUM_SPLITS  # 24 x 8 programs already cover 132 SMs
    assert all(DEFAULT_NUM_SPLITS <= auto_num_splits(bs, h, 132) <= MAX_AUTO_SPLITS
               for bs in range(1, 300) for h in (1, 2, 8, 32))
    from sglang.kernels.decode_attention import LARGE_BATCH_MIN_SPLIT, auto_min_split

    assert auto_min_split(1, 8, 132) == 1 and auto_min_split(1024, 8, 132) == LARGE_BATCH_MIN_SPLIT
