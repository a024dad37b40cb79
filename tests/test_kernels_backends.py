"""TritonAttentionBackend through the ForwardBatch contract (pool writes + ragged extend + decode), on
the CPU under TRITON_INTERPRET=1, against a dense fp64 reference over the same pool."""
from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from sglang.kernels.reference import extend_attention_ref  # noqa: E402
from sglang.runtime.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from sglang.runtime.forward_batch import ForwardBatch, ForwardMode  # noqa: E402
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool  # noqa: E402

HQ, HKV, D = 4, 2, 16


def _extend_batch(req_pool, kv_pool, rows, prefix_lens, extend_lens):
    """Allocate slots for the new tokens, write req_to_token, and build an EXTEND ForwardBatch."""
    locs = []
    for r, p, e in zip(rows, prefix_lens, extend_lens):
        slots = kv_pool.alloc(e)
        req_pool.write(r, p, slots)
        locs.append(slots)
    seq = [p + e for p, e in zip(prefix_lens, extend_lens)]
    starts = [sum(extend_lens[:i]) for i in range(len(rows))]
    t = torch.tensor
    return ForwardBatch(
        mode=ForwardMode.EXTEND, batch_size=len(rows),
        input_ids=torch.zeros(sum(extend_lens), dtype=torch.int64),
        positions=torch.cat([torch.arange(p, p + e) for p, e in zip(prefix_lens, extend_lens)]),
        req_pool_indices=t(rows), seq_lens=t(seq), out_cache_loc=torch.cat(locs),
        req_to_token=req_pool.req_to_token, kv_pool=kv_pool,
        extend_prefix_lens=t(prefix_lens), extend_seq_lens=t(extend_lens), extend_start_loc=t(starts),
        seq_lens_cpu=seq, extend_prefix_lens_cpu=list(prefix_lens), extend_seq_lens_cpu=list(extend_lens),
    )


def _decode_batch(req_pool, kv_pool, rows, seq_before):
    locs = kv_pool.alloc(len(rows))
    for r, s, slot in zip(rows, seq_before, locs):
        req_pool.write(r, s, slot.view(1))
    seq = [s + 1 for s in seq_before]
    t = torch.tensor
    return ForwardBatch(
        mode=ForwardMode.DECODE, batch_size=len(rows), input_ids=torch.zeros(len(rows), dtype=torch.int64),
        positions=t(seq_before), req_pool_indices=t(rows), seq_lens=t(seq), out_cache_loc=locs,
        req_to_token=req_pool.req_to_token, kv_pool=kv_pool, seq_lens_cpu=seq,
    )


def _run(backend, batch, layer, dtype):
    t = batch.num_tokens
    q, k, v = (torch.randn(t, h, D).to(dtype) for h in (HQ, HKV, HKV))
    backend.init_forward_metadata(batch)
    out = backend.forward(q, k, v, layer, batch, 1 / math.sqrt(D))
    assert out.shape == (t, HQ * D) and not torch.isnan(out).any()
    # the new K/V must be in the pool at out_cache_loc
    kb, vb = batch.kv_pool.get_kv(layer)
    assert torch.equal(kb[batch.out_cache_loc], k) and torch.equal(vb[batch.out_cache_loc], v)
    if batch.mode.is_decode():
        prefix = [s - 1 for s in batch.seq_lens_cpu]
        ext = [1] * batch.batch_size
    else:
        prefix, ext = batch.extend_prefix_lens_cpu, batch.extend_seq_lens_cpu
    want = extend_attention_ref(q, kb, vb, batch.req_to_token, batch.req_pool_indices, prefix, ext, 1 / math.sqrt(D))
    return out.view(t, HQ, D), want


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_backend_extend_prefix_and_decode(dtype):
    torch.manual_seed(0)
    req_pool = ReqToTokenPool(6, 64, "cpu")
    kv_pool = TokenKVPool(200, 2, HKV, D, dtype, "cpu")
    backend = TritonAttentionBackend(None, num_kv_splits=4)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731

    # 1) plain prefill of two requests (rows 4 and 1), on both layers
    b1 = _extend_batch(req_pool, kv_pool, [4, 1], [0, 0], [9, 18])
    for layer in (0, 1):
        got, want = _run(backend, b1, layer, dtype)
        assert rel(got, want) < tol
    # 2) a third request reuses row 4's first 6 slots as a cached prefix (radix hit), plus 5 new tokens,
    #    batched with a chunked continuation of row 1 (prefix 18, 3 more)
    req_pool.req_to_token[2, :6] = req_pool.req_to_token[4, :6]
    b2 = _extend_batch(req_pool, kv_pool, [2, 1], [6, 18], [5, 3])
    for layer in (1,):
        got, want = _run(backend, b2, layer, dtype)
        assert rel(got, want) < tol
    # 3) a decode step for all three
    b3 = _decode_batch(req_pool, kv_pool, [4, 1, 2], [9, 21, 11])
    for layer in (0,):
        got, want = _run(backend, b3, layer, dtype)
        assert rel(got, want) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_backend_mixed_batch_and_cascade_decode(dtype):
    """A mixed EXTEND batch (one-token rows go through the decode kernel) and a DECODE batch with
    prefix_groups (cascade) give the dense reference's answer; cascade batches ask to run eagerly."""
    from sglang.runtime.forward_batch import PrefixGroups

    torch.manual_seed(1)
    req_pool = ReqToTokenPool(8, 96, "cpu")
    kv_pool = TokenKVPool(400, 1, HKV, D, dtype, "cpu")
    backend = TritonAttentionBackend(None, num_kv_splits=2)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731

    # a 40-token shared prefix prefilled in row 0; rows 1..3 hold the same slots (radix hits)
    got, want = _run(backend, _extend_batch(req_pool, kv_pool, [0], [0], [40]), 0, dtype)
    assert rel(got, want) < tol
    for r in (1, 2, 3):
        req_pool.req_to_token[r, :40] = req_pool.req_to_token[0, :40]
    # mixed: rows 1 and 3 extend their own tails, rows 0 and 2 ride along with one token each
    mixed = _extend_batch(req_pool, kv_pool, [0, 1, 2, 3], [40, 40, 40, 40], [1, 6, 1, 19])
    backend.init_forward_metadata(mixed)
    assert mixed.attn_metadata.mixed is not None
    got, want = _run(backend, mixed, 0, dtype)
    assert rel(got, want) < tol
    # an EXTEND batch of one-token rows only: no extend kernel at all
    ones = _extend_batch(req_pool, kv_pool, [0, 2], [41, 41], [1, 1])
    got, want = _run(backend, ones, 0, dtype)
    assert rel(got, want) < tol

    # cascade decode: rows 0..3 share 40 tokens (declared as one group in shuffled order), row 4 is alone
    got, want = _run(backend, _extend_batch(req_pool, kv_pool, [4], [0], [13]), 0, dtype)
    seq_before = [42, 46, 42, 59, 13]
    dec = _decode_batch(req_pool, kv_pool, [2, 0, 4, 3, 1], [seq_before[r] for r in (2, 0, 4, 3, 1)])
    dec.prefix_groups = PrefixGroups(rows=[3, 0, 1, 4], indptr=[0, 4], shared_lens=[40])
    assert backend.needs_eager(dec)
    got, want = _run(backend, dec, 0, dtype)
    assert backend.needs_eager(dec) and dec.attn_metadata.plan is not None
    assert rel(got, want) < tol
    dec.prefix_groups = None
    assert not backend.needs_eager(dec)


def test_triton_backend_cascade_graph_metadata_runs_each_grouping():
    """The CUDA-graph path of cascade decode, without the graph: capture metadata (an empty grouping) and
    replay metadata (this step's grouping, copied into the one static plan) give the dense reference's
    answer for successive groupings of different shapes; a grouping beyond the graph's tile capacity is
    refused (the runner then replays the plain graph)."""
    from sglang.kernels.cascade_decode import graph_tile_capacity
    from sglang.runtime.forward_batch import PrefixGroups

    torch.manual_seed(2)
    dtype = torch.float32
    req_pool = ReqToTokenPool(8, 96, "cpu")
    kv_pool = TokenKVPool(400, 1, HKV, D, dtype, "cpu")
    backend = TritonAttentionBackend(None, num_kv_splits=2)
    backend.init_cascade_graphs(8, kv_group=HQ // HKV)
    _run(backend, _extend_batch(req_pool, kv_pool, [0], [0], [40]), 0, dtype)
    _run(backend, _extend_batch(req_pool, kv_pool, [5], [0], [30]), 0, dtype)
    for r in (1, 2, 3):
        req_pool.req_to_token[r, :40] = req_pool.req_to_token[0, :40]
    req_pool.req_to_token[4, :30] = req_pool.req_to_token[5, :30]
    own = _extend_batch(req_pool, kv_pool, [1, 2, 3, 4], [40, 40, 40, 30], [3, 7, 1, 5])
    _run(backend, own, 0, dtype)
    seq = {0: 40, 1: 43, 2: 47, 3: 41, 4: 35, 5: 30}
    capture = _decode_batch(req_pool, kv_pool, [0, 1, 2, 3, 4, 5], [seq[r] for r in range(6)])
    capture.prefix_groups = PrefixGroups(rows=[], indptr=[0], shared_lens=[])
    backend.init_forward_metadata_capture(capture)
    assert capture.attn_metadata.plan.num_tiles == graph_tile_capacity(6)
    for r in range(6):
        seq[r] += 1
    groupings = (PrefixGroups(rows=[0, 1, 2, 3, 4, 5], indptr=[0, 4, 6], shared_lens=[40, 30]),
                 PrefixGroups(rows=[1, 3], indptr=[0, 2], shared_lens=[40]))
    for step, groups in enumerate(groupings):
        rows = [0, 1, 2, 3, 4, 5]
        dec = _decode_batch(req_pool, kv_pool, rows, [seq[r] for r in rows])
        for r in rows:
            seq[r] += 1
        dec.prefix_groups = groups
        assert backend.cascade_graph_fits(groups, dec.batch_size)
        backend.init_forward_metadata_replay(dec)
        q, k, v = (torch.randn(6, h, D) for h in (HQ, HKV, HKV))
        out = backend.forward(q, k, v, 0, dec, 1 / math.sqrt(D))
        kb, vb = kv_pool.get_kv(0)
        want = extend_attention_ref(q, kb, vb, dec.req_to_token, dec.req_pool_indices,
                                    [s - 1 for s in dec.seq_lens_cpu], [1] * 6, 1 / math.sqrt(D))
        assert float((out.view(6, HQ, D) - want).norm() / want.norm()) < 1e-4, step
    many = PrefixGroups(rows=list(range(8)), indptr=[0, 2, 4, 6, 8], shared_lens=[40] * 4)
    assert graph_tile_capacity(8) == 4 and backend.cascade_graph_fits(many, 8)
    too_many = PrefixGroups(rows=list(range(12)), indptr=list(range(0, 13, 2)), shared_lens=[40] * 6)
    assert graph_tile_capacity(12) == 4 and not backend.cascade_graph_fits(too_many, 12)


def test_triton_backend_rejects_flat_q():
    backend = TritonAttentionBackend(None)
    req_pool = ReqToTokenPool(2, 8, "cpu")
    kv_pool = TokenKVPool(16, 1, HKV, D, torch.float32, "cpu")
    b = _decode_batch(req_pool, kv_pool, [0], [0])
    with pytest.raises(ValueError, match="heads"):
        backend.forward(torch.randn(1, HQ * D), torch.randn(1, HKV, D), torch.randn(1, HKV, D), 0, b, 0.25)


def test_model_runner_triton_backend_matches_torch_backend(tiny_llama_path):
    """The whole tiny Llama (dummy weights, fp32) through ModelRunner: prefill, a cached-prefix extend
    and decode steps give the same logits with the triton backend as with the torch reference."""
    from sglang.runtime.model_runner import ModelRunner
    from sglang.runtime.server_args import ServerArgs

    runners = {
        name: ModelRunner(ServerArgs(model_path=tiny_llama_path, load_format="dummy", device="cpu",
                                     attention_backend=name, max_total_tokens=256, max_running_requests=4))
        for name in ("torch", "triton")
    }
    ids = torch.randint(0, 49152, (40,))
    logits = {}
    for name, r in runners.items():
        rp, kp = r.req_to_token_pool, r.token_kv_pool
        outs = []
        b = _extend_batch(rp, kp, [0, 1], [0, 0], [7, 10])
        b.input_ids = ids[:17].clone()
        outs.append(r.forward(b).next_token_logits)
        # row 2 shares row 0's first 5 tokens (a radix-cache hit) and adds 3 new ones
        rp.req_to_token[2, :5] = rp.req_to_token[0, :5]
        b = _extend_batch(rp, kp, [2], [5], [3])
        b.input_ids = ids[17:20].clone()
        outs.append(r.forward(b).next_token_logits)
        seq = [7, 10, 8]
        for step in range(1):
            b = _decode_batch(rp, kp, [0, 1, 2], seq)
            b.input_ids = ids[20 + step: 23 + step].clone()
            outs.append(r.forward(b).next_token_logits)
            seq = [s + 1 for s in seq]
        logits[name] = outs
    for got, want in zip(logits["triton"], logits["torch"]):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_torch_decode_row_chunks_match_one_call(monkeypatch):
    """The torch backend's decode splits large batches into row chunks (bounded gather memory);
    the chunks must give exactly what one padded call gives."""
    from sglang.runtime.attention import torch_backend as tb

    gen = torch.Generator().manual_seed(0)
    bs, max_len, kv_heads, group, dim = 7, 33, 2, 3, 16
    k_buf, v_buf = torch.randn(500, kv_heads, dim, generator=gen), torch.randn(500, kv_heads, dim, generator=gen)
    lens = torch.randint(1, max_len + 1, (bs,), generator=gen)
    mask = torch.arange(max_len)[None] < lens[:, None]
    slots = torch.where(mask, torch.randint(1, 500, (bs, max_len), generator=gen), 0)
    meta = tb._Meta([], torch.zeros(0), slots, mask)
    q = torch.randn(bs, kv_heads * group, dim, generator=gen)
    whole = tb.TorchAttentionBackend._decode(q, k_buf, v_buf, meta, group, 0.25)
    monkeypatch.setattr(tb, "DECODE_CHUNK_ELEMENTS", 2 * max_len * kv_heads * group * dim)  # 2 rows per chunk
    chunked = tb.TorchAttentionBackend._decode(q, k_buf, v_buf, meta, group, 0.25)
    assert torch.equal(whole, chunked)
    assert not torch.equal(whole[:1], tb.TorchAttentionBackend._decode(q[1:2], k_buf, v_buf, meta.rows(1, 2), group, 0.25))


class _FakeFlashInfer:
    """Stands in for FlashInferAttentionBackend: a warm-up (its JIT compile) that waits for the test."""

    def __init__(self, fail: bool = False) -> None:
        import threading

        self.release, self.fail, self.warm_ups = threading.Event(), fail, []

    def warm_up_ragged_prefill(self, num_kv_heads, head_dim, dtype) -> None:
        self.warm_ups.append((num_kv_heads, head_dim, dtype))
        assert self.release.wait(60)
        if self.fail:
            raise RuntimeError("nvcc failed")

    def make_metadata(self, batch):
        return "flashinfer-plan"


@pytest.mark.parametrize("fail", [False, True])
def test_large_extends_wait_for_the_flashinfer_compile_on_triton(fail):
    """FlashInfer compiles its prefill kernel on first use (about a minute cold): no forward may wait for it.
    Large prefix-free extends stay on Triton until a warm-up thread has compiled it, then go to FlashInfer;
    a failed compile leaves them on Triton."""
    req_pool = ReqToTokenPool(4, 64, "cpu")
    kv_pool = TokenKVPool(256, 1, HKV, D, torch.float32, "cpu")
    backend = TritonAttentionBackend(None)
    backend.flashinfer, backend.flashinfer_min_tokens = _FakeFlashInfer(fail), 32
    fake = backend.flashinfer

    def meta_of(prefix_lens, extend_lens, rows):
        batch = _extend_batch(req_pool, kv_pool, rows, prefix_lens, extend_lens)
        backend.init_forward_metadata(batch)
        return batch.attn_metadata

    assert meta_of([0, 0], [20, 20], [0, 1]).flashinfer is None  # compiling: Triton serves it
    assert fake.warm_ups == [(HKV, D, torch.float32)]
    fake.release.set()
    backend._warm_up.join(60)
    assert meta_of([0], [8], [2]).flashinfer is None  # small: Triton either way
    assert meta_of([0], [40], [3]).flashinfer == (None if fail else "flashinfer-plan")
    assert len(fake.warm_ups) == 1  # one compile, whatever happened
