"""GPU checks at real sizes (the CPU test suite covers tiny sizes under TRITON_INTERPRET=1):

1. every Triton kernel vs the torch reference on fresh random inputs, outputs NaN-poisoned first;
2. the triton and flashinfer attention backends vs the dense reference on ragged batches with cached
   prefixes, chunk continuations and decode (pool writes included);
3. micro-timings of the attention kernels (triton vs flashinfer; shared-prefix decode plain vs cascade) and
   of the element-wise kernels vs torch; sweeps of the decode/extend launch configs (--only sweep sweep_extend);
4. end-to-end greedy tokens: ModelRunner on GPU (fp32 triton + CUDA graphs; bf16 triton; bf16 flashinfer)
   vs the CPU fp32 torch reference, same dummy weights (copied from the CPU model).

    python benchmarks/check_kernels.py --out check_kernels.json
Exit status 1 when a correctness check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sglang.kernels import reference as ref  # noqa: E402
from sglang.kernels.reference import rel_err  # noqa: E402
from sglang.runtime.forward_batch import ForwardBatch, ForwardMode, PrefixGroups  # noqa: E402
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool  # noqa: E402

DEV = torch.device("cuda")
REPORT: dict = {"checks": [], "timings": [], "greedy": []}
FAILED: list[str] = []
TOL = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 1.5e-2}


def check(name: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    nan = bool(torch.isnan(got).any())
    err = rel_err(got, want) if not nan else float("nan")
    ok = (not nan) and err < TOL[dtype]
    REPORT["checks"].append({"name": name, "dtype": str(dtype), "rel_err": err, "ok": ok})
    print(f"  {'ok  ' if ok else 'FAIL'} {name:<58} {str(dtype):<15} rel_err={err:.2e}", flush=True)
    if not ok:
        FAILED.append(name)


def bench(fn, warmup: int = 10, rep: int = 50) -> float:
    """Median ms of `fn`'s device time: replayed from a CUDA graph, so host launch costs (Python
    launchers, allocations) do not count, as in the decode step, which also runs as a graph."""
    import triton.testing

    try:
        return float(triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median"))
    except Exception:  # not capturable (e.g. a host sync inside): plain event timing
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


# -- 1. kernels -----------------------------------------------------------------------------------
def check_elementwise() -> None:
    from sglang.kernels.activation import silu_and_mul
    from sglang.kernels.norm import rmsnorm
    from sglang.kernels.rotary import apply_rotary_

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for rows, hidden in ((1, 4096), (3000, 4096), (517, 2048), (64, 576)):
            x = torch.randn(rows, hidden, device=DEV, dtype=dtype)
            w = (1 + 0.1 * torch.randn(hidden, device=DEV)).to(dtype)
            r = torch.randn(rows, hidden, device=DEV, dtype=dtype)
            check(f"rmsnorm {rows}x{hidden}", rmsnorm(x, w, 1e-5), ref.rmsnorm_ref(x, w, 1e-5), dtype)
            y, rr = rmsnorm(x, w, 1e-5, residual=r)
            wy, wr = ref.rmsnorm_ref(x, w, 1e-5, residual=r)
            check(f"rmsnorm+residual {rows}x{hidden} (normed)", y, wy, dtype)
            check(f"rmsnorm+residual {rows}x{hidden} (residual)", rr, wr, dtype)
        for rows, inter in ((1, 14336), (2048, 8192), (77, 1536)):
            x = torch.randn(rows, 2 * inter, device=DEV, dtype=dtype)
            check(f"silu_and_mul {rows}x{inter}", silu_and_mul(x), ref.silu_and_mul_ref(x), dtype)
        for t, hq, hk, d in ((1, 32, 8, 128), (4096, 32, 8, 64), (300, 9, 3, 64)):
            cache = ref.cos_sin_cache(d, 8192, 500000.0).to(DEV)
            pos = torch.randint(0, 8192, (t,), device=DEV)
            qkv = torch.randn(t, (hq + 2 * hk) * d, device=DEV, dtype=dtype)  # q, k are strided views of qkv
            q, k = qkv[:, : hq * d], qkv[:, hq * d: (hq + hk) * d]
            wq, wk = ref.rotary_ref(pos, q.clone(), k.clone(), d, cache, True)
            apply_rotary_(pos, q, k, d, cache, True)
            check(f"rotary neox t={t} {hq}/{hk}x{d} (q)", q, wq, dtype)
            check(f"rotary neox t={t} {hq}/{hk}x{d} (k)", k, wk, dtype)


def make_pool(seq_lens: list[int], hkv: int, d: int, dtype: torch.dtype, pool_size: int):
    """Random pool contents and a shuffled req_to_token (non-contiguous slots, shuffled rows)."""
    k_buf = torch.randn(pool_size + 1, hkv, d, device=DEV, dtype=dtype)
    v_buf = torch.randn(pool_size + 1, hkv, d, device=DEV, dtype=dtype)
    perm = torch.randperm(pool_size, device=DEV) + 1
    r2t = torch.zeros(len(seq_lens) + 4, max(seq_lens) + 8, dtype=torch.int64, device=DEV)
    rows = torch.randperm(len(seq_lens) + 4, device=DEV)[: len(seq_lens)]
    used = 0
    for i, n in enumerate(seq_lens):
        r2t[rows[i], :n] = perm[used: used + n]
        used += n
    return k_buf, v_buf, r2t, rows


def check_attention_kernels() -> None:
    from sglang.kernels.decode_attention import decode_attention
    from sglang.kernels.extend_attention import extend_attention

    t_ = lambda xs: torch.tensor(xs, device=DEV)  # noqa: E731
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for hq, hkv, d in ((32, 8, 128), (32, 8, 64), (9, 3, 64)):
            prefix = [0, 300, 1000, 17]
            ext = [1024, 77, 129, 1]
            seq = [p + e for p, e in zip(prefix, ext)]
            k_buf, v_buf, r2t, rows = make_pool(seq, hkv, d, dtype, sum(seq) + 500)
            q = torch.randn(sum(ext), hq, d, device=DEV, dtype=dtype)
            out = torch.full_like(q, float("nan"))
            starts = [sum(ext[:i]) for i in range(len(ext))]
            extend_attention(q, k_buf, v_buf, r2t, rows, t_(prefix), t_(ext), t_(starts), max(ext), d ** -0.5, out=out)
            want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, prefix, ext, d ** -0.5)
            check(f"extend_attention {hq}/{hkv}x{d} prefix={prefix}", out, want, dtype)
            seq = [1, 5, 700, 4096, 33, 2000]
            k_buf, v_buf, r2t, rows = make_pool(seq, hkv, d, dtype, sum(seq) + 100)
            q = torch.randn(len(seq), hq, d, device=DEV, dtype=dtype)
            for splits in (1, 8, 16):
                out = torch.full_like(q, float("nan"))
                decode_attention(q, k_buf, v_buf, r2t, rows, t_(seq), d ** -0.5, num_splits=splits, out=out)
                want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * len(seq), d ** -0.5)
                check(f"decode_attention {hq}/{hkv}x{d} splits={splits}", out, want, dtype)
            check_cascade_kernel(dtype, hq, hkv, d)


def shared_prefix_pool(shared: list[int], rows_per_group: int, own: list[int], hkv: int, d: int, dtype: torch.dtype):
    """Groups of rows whose req_to_token rows hold the same slots for their group's shared prefix (as the
    radix cache arranges), then own slots; rows of groups interleave in the batch. Returns the pool, the
    batch's rows (req_to_token indices), seq lens and the groups (batch row numbers)."""
    bs = len(shared) * rows_per_group
    seq = [shared[i % len(shared)] + own[i % len(own)] for i in range(bs)]
    total = sum(shared) + sum(s - shared[i % len(shared)] for i, s in enumerate(seq))
    k_buf = torch.randn(total + 1, hkv, d, device=DEV, dtype=dtype)
    v_buf = torch.randn(total + 1, hkv, d, device=DEV, dtype=dtype)
    perm = torch.randperm(total, device=DEV) + 1
    r2t = torch.zeros(bs + 2, max(seq) + 8, dtype=torch.int64, device=DEV)
    rows = torch.randperm(bs + 2, device=DEV)[:bs]
    used = sum(shared)
    starts = [sum(shared[:g]) for g in range(len(shared))]
    for i in range(bs):
        g, n = i % len(shared), seq[i] - shared[i % len(shared)]
        r2t[rows[i], : shared[g]] = perm[starts[g]: starts[g] + shared[g]]
        r2t[rows[i], shared[g]: seq[i]] = perm[used: used + n]
        used += n
    groups = [list(range(g, bs, len(shared))) for g in range(len(shared))]
    return k_buf, v_buf, r2t, rows, seq, groups


def check_cascade_kernel(dtype: torch.dtype, hq: int, hkv: int, d: int) -> None:
    from sglang.kernels.cascade_decode import cascade_decode_attention, plan_cascade

    k_buf, v_buf, r2t, rows, seq, groups = shared_prefix_pool([2048, 300, 40], 21, [1, 130, 7, 900], hkv, d, dtype)
    q = torch.randn(len(seq), hq, d, device=DEV, dtype=dtype)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * len(seq), d ** -0.5)
    # the last group is declared shorter than it shares, and its last rows are left ungrouped
    for splits, psplits in ((8, 4), (16, 1)):
        plan = plan_cascade([groups[0], groups[1], groups[2][:-5]], [2048, 300, 33], len(seq), hq // hkv, DEV,
                            splits=psplits)
        out = torch.full_like(q, float("nan"))
        cascade_decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor(seq, device=DEV), d ** -0.5, plan,
                                 num_splits=splits, out=out)
        check(f"cascade_decode {hq}/{hkv}x{d} splits={splits}+{psplits}", out, want, dtype)


# -- 2. backends ----------------------------------------------------------------------------------
def backend_case(backend, dtype: torch.dtype, hq: int, hkv: int, d: int, name: str) -> None:
    req_pool = ReqToTokenPool(16, 4096, DEV)
    kv_pool = TokenKVPool(20000, 1, hkv, d, dtype, DEV)
    t_ = lambda xs: torch.tensor(xs, device=DEV)  # noqa: E731

    def extend(rows, prefix, ext):
        locs = []
        for r, p, e in zip(rows, prefix, ext):
            s = kv_pool.alloc(e)
            req_pool.write(r, p, s)
            locs.append(s)
        seq = [p + e for p, e in zip(prefix, ext)]
        return ForwardBatch(ForwardMode.EXTEND, len(rows), torch.zeros(sum(ext), dtype=torch.int64, device=DEV),
                            torch.cat([torch.arange(p, p + e) for p, e in zip(prefix, ext)]).to(DEV), t_(rows), t_(seq),
                            torch.cat(locs), req_pool.req_to_token, kv_pool, t_(prefix), t_(ext),
                            t_([sum(ext[:i]) for i in range(len(ext))]), seq, list(prefix), list(ext))

    def decode(rows, before):
        locs = kv_pool.alloc(len(rows))
        for r, s, l in zip(rows, before, locs):
            req_pool.write(r, s, l.view(1))
        seq = [s + 1 for s in before]
        return ForwardBatch(ForwardMode.DECODE, len(rows), torch.zeros(len(rows), dtype=torch.int64, device=DEV),
                            t_(before), t_(rows), t_(seq), locs, req_pool.req_to_token, kv_pool, seq_lens_cpu=seq)

    def run(batch, label):
        n = batch.num_tokens
        q = torch.randn(n, hq, d, device=DEV, dtype=dtype)
        k = torch.randn(n, hkv, d, device=DEV, dtype=dtype)
        v = torch.randn(n, hkv, d, device=DEV, dtype=dtype)
        backend.init_forward_metadata(batch)
        out = backend.forward(q, k, v, 0, batch, d ** -0.5).view(n, hq, d)
        kb, vb = kv_pool.get_kv(0)
        if batch.mode.is_decode():
            pre, ext = [s - 1 for s in batch.seq_lens_cpu], [1] * batch.batch_size
        else:
            pre, ext = batch.extend_prefix_lens_cpu, batch.extend_seq_lens_cpu
        want = ref.extend_attention_ref(q, kb, vb, batch.req_to_token, batch.req_pool_indices, pre, ext, d ** -0.5)
        check(f"{name} {hq}/{hkv}x{d} {label}", out, want, dtype)

    run(extend([3, 7, 1], [0, 0, 0], [700, 1, 64]), "prefill (no prefix)")
    req_pool.req_to_token[5, :500] = req_pool.req_to_token[3, :500]  # a radix-cache hit on row 3's prefix
    run(extend([5, 1, 9], [500, 64, 0], [40, 200, 33]), "extend (mixed cached prefixes)")
    run(decode([3, 7, 1, 5, 9], [700, 1, 264, 540, 33]), "decode")
    # mixed: rows 3 and 5 ride along with one token each (decode rows of a mixed chunk)
    run(extend([3, 1, 5, 9], [701, 265, 541, 34], [1, 50, 1, 300]), "extend (mixed one-token rows)")
    # cascade decode: rows 3, 5 and 11 share row 3's first 500 slots
    req_pool.req_to_token[11, :500] = req_pool.req_to_token[3, :500]
    run(extend([11], [500], [20]), "extend (row 11 on the shared prefix)")
    b = decode([7, 3, 1, 5, 11, 9], [2, 702, 315, 542, 520, 334])
    b.prefix_groups = PrefixGroups(rows=[1, 3, 4], indptr=[0, 3], shared_lens=[500])
    run(b, "cascade decode")


def check_backends() -> None:
    from sglang.runtime.attention.triton_backend import TritonAttentionBackend

    for dtype in (torch.bfloat16,):  # flashinfer JIT-compiles per dtype: one is enough here
        for hq, hkv, d in ((32, 8, 128), (9, 3, 64)):
            backend_case(TritonAttentionBackend(None), dtype, hq, hkv, d, "triton backend")
            try:
                from sglang.runtime.attention.flashinfer_backend import FlashInferAttentionBackend

                mr = SimpleNamespace(device=DEV, model_config=SimpleNamespace(num_heads=hq, head_dim=d))
                backend_case(FlashInferAttentionBackend(mr), dtype, hq, hkv, d, "flashinfer backend")
                if d in (64, 128, 256):  # every extend through FlashInfer's prefill, decode on triton
                    tb = TritonAttentionBackend(mr, extend_with_flashinfer=True)
                    tb.flashinfer_min_tokens = 0
                    backend_case(tb, dtype, hq, hkv, d, "triton backend, flashinfer extends")
            except Exception as e:
                traceback.print_exc()
                FAILED.append(f"flashinfer backend {dtype} {hq}/{hkv}x{d}: {e}")


# -- 3. timings -----------------------------------------------------------------------------------
def time_kernels() -> None:
    from sglang.kernels.activation import silu_and_mul
    from sglang.kernels.decode_attention import decode_attention
    from sglang.kernels.extend_attention import extend_attention
    from sglang.kernels.norm import rmsnorm
    from sglang.runtime.layers.ops import rmsnorm_torch, silu_and_mul_torch

    dtype = torch.bfloat16
    t_ = lambda xs: torch.tensor(xs, device=DEV)  # noqa: E731

    def record(name, ms, **extra):
        REPORT["timings"].append({"name": name, "ms": ms, **extra})
        print(f"  {name:<60} {ms:8.4f} ms  {extra if extra else ''}", flush=True)

    x = torch.randn(8192, 4096, device=DEV, dtype=dtype)
    r = torch.randn_like(x)
    w = torch.ones(4096, device=DEV, dtype=dtype)
    nbytes = 4 * x.numel() * 2  # read x, r; write y, r_out
    ms = bench(lambda: rmsnorm(x, w, 1e-5, residual=r))
    record("rmsnorm+residual triton 8192x4096", ms, gbs=round(nbytes / ms / 1e6, 1))
    record("rmsnorm+residual torch 8192x4096", bench(lambda: rmsnorm_torch(x, w, 1e-5, r)))
    g = torch.randn(8192, 2 * 14336, device=DEV, dtype=dtype)
    ms = bench(lambda: silu_and_mul(g))
    record("silu_and_mul triton 8192x14336", ms, gbs=round(g.numel() * 1.5 * 2 / ms / 1e6, 1))
    record("silu_and_mul torch 8192x14336", bench(lambda: silu_and_mul_torch(g)))

    try:
        import flashinfer
    except ImportError:
        flashinfer = None
    for bs, seqlen in ((1, 1024), (1, 8192), (64, 1024), (64, 4096)):
        hq, hkv, d = 32, 8, 128
        seq = [seqlen] * bs
        k_buf, v_buf, r2t, rows = make_pool(seq, hkv, d, dtype, sum(seq) + 10)
        q = torch.randn(bs, hq, d, device=DEV, dtype=dtype)
        kv_bytes = 2 * sum(seq) * hkv * d * 2
        seq_t = t_(seq)
        for splits in (8, 16):
            ms = bench(lambda: decode_attention(q, k_buf, v_buf, r2t, rows, seq_t, d ** -0.5, num_splits=splits))
            record(f"decode_attention triton bs={bs} seq={seqlen} splits={splits}", ms, kv_gbs=round(kv_bytes / ms / 1e6, 1))
        if flashinfer is not None:
            ws = torch.zeros(128 << 20, dtype=torch.uint8, device=DEV)
            wrap = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=True)
            indptr = torch.tensor([0] + [seqlen * (i + 1) for i in range(bs)], dtype=torch.int32)
            indices = torch.cat([r2t[int(rw), :seqlen] for rw in rows]).int()
            wrap.plan(indptr, indices, torch.ones(bs, dtype=torch.int32, device=DEV), hq, hkv, d, 1,
                      q_data_type=dtype, kv_data_type=dtype)
            paged = (k_buf.view(-1, 1, hkv, d), v_buf.view(-1, 1, hkv, d))
            ms = bench(lambda: wrap.run(q, paged))
            record(f"decode_attention flashinfer bs={bs} seq={seqlen}", ms, kv_gbs=round(kv_bytes / ms / 1e6, 1))
    time_cascade(record)
    for bs, n in ((1, 1024), (1, 4096), (8, 1024), (4, 8192), (16, 2048)):
        hq, hkv, d = 32, 8, 128
        seq = [n] * bs
        k_buf, v_buf, r2t, rows = make_pool(seq, hkv, d, dtype, sum(seq) + 10)
        q = torch.randn(sum(seq), hq, d, device=DEV, dtype=dtype)
        starts, zeros, seq_t = t_([n * i for i in range(bs)]), t_([0] * bs), t_(seq)
        flops = 4 * bs * hq * d * n * n / 2
        ms = bench(lambda: extend_attention(q, k_buf, v_buf, r2t, rows, zeros, seq_t, starts, n, d ** -0.5))
        record(f"extend_attention triton bs={bs} n={n} (causal)", ms, tflops=round(flops / ms / 1e9, 1))
        if flashinfer is not None:
            ws = torch.zeros(128 << 20, dtype=torch.uint8, device=DEV)
            wrap = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(ws, "NHD")
            indptr = torch.tensor([n * i for i in range(bs + 1)], dtype=torch.int32)
            wrap.plan(indptr, indptr, hq, hkv, d, causal=True, q_data_type=dtype, kv_data_type=dtype)
            k = torch.randn(sum(seq), hkv, d, device=DEV, dtype=dtype)
            v = torch.randn_like(k)
            ms = bench(lambda: wrap.run(q, k, v))
            record(f"extend_attention flashinfer-ragged bs={bs} n={n} (causal)", ms, tflops=round(flops / ms / 1e9, 1))


def time_cascade(record) -> None:
    """Shared-prefix decode (issue 17's workload: groups of 16 rows on a 2048-token system prompt, own
    tails of 128-384) through the backends, pool write included: plain decode vs cascade, triton and
    flashinfer. The `kv_gbs` figure counts the KV a plain decode reads, so cascade can exceed the HBM."""
    from sglang.runtime.attention.triton_backend import TritonAttentionBackend

    dtype = torch.bfloat16
    for (hq, hkv, d), label in (((32, 8, 64), "1B"), ((32, 8, 128), "8B")):
        for groups in (4, 16, 64):
            k_buf, v_buf, r2t, rows, seq, grp = shared_prefix_pool([2048] * groups, 16, [128, 200, 300, 384], hkv, d,
                                                                    dtype)
            bs = len(seq)
            kv_pool = TokenKVPool(k_buf.shape[0] + bs, 1, hkv, d, dtype, DEV)
            kv_pool.k_buffer[0][: k_buf.shape[0]] = k_buf  # layer 0 of the pool holds the test KV
            kv_pool.v_buffer[0][: v_buf.shape[0]] = v_buf
            before = [s - 1 for s in seq]
            batch = ForwardBatch(ForwardMode.DECODE, bs, torch.zeros(bs, dtype=torch.int64, device=DEV),
                                 torch.tensor(before, device=DEV), rows, torch.tensor(seq, device=DEV),
                                 r2t[rows, torch.tensor(before, device=DEV)], r2t, kv_pool, seq_lens_cpu=seq)
            flat = [r for g in grp for r in g]
            groups_field = PrefixGroups(rows=flat, indptr=[16 * i for i in range(groups + 1)], shared_lens=[2048] * groups)
            q = torch.randn(bs, hq, d, device=DEV, dtype=dtype)
            k = torch.randn(bs, hkv, d, device=DEV, dtype=dtype)
            v = torch.randn_like(k)
            kv_bytes = 2 * sum(seq) * hkv * d * 2
            graphed = TritonAttentionBackend(None)  # cascade as a CUDA graph runs it: the static plan
            graphed.init_cascade_graphs(bs, kv_group=hq // hkv)
            backends = [("triton", TritonAttentionBackend(None)), ("triton-graph-plan", graphed)]
            try:
                from sglang.runtime.attention.flashinfer_backend import FlashInferAttentionBackend

                mr = SimpleNamespace(device=DEV, model_config=SimpleNamespace(num_heads=hq, head_dim=d))
                backends.append(("flashinfer", FlashInferAttentionBackend(mr)))
            except Exception as e:  # flashinfer missing: triton only
                print(f"  (flashinfer unavailable: {e})")
            for name, backend in backends:
                for cascade in (False, True):
                    batch.prefix_groups = groups_field if cascade else None
                    try:
                        if cascade and name == "triton-graph-plan":
                            backend.init_forward_metadata_replay(batch)
                        else:
                            backend.init_forward_metadata(batch)
                        backend.forward(q, k, v, 0, batch, d ** -0.5)  # plans once (host), outside the timing
                        ms = bench(lambda: backend.forward(q, k, v, 0, batch, d ** -0.5))
                        record(f"shared-prefix decode {label} {name} {'cascade' if cascade else 'plain'} "
                               f"bs={bs} groups={groups}", ms, kv_gbs=round(kv_bytes / ms / 1e6, 1))
                    except Exception as e:
                        traceback.print_exc()
                        FAILED.append(f"shared-prefix decode {label} {name} cascade={cascade}: {e}")


def sweep_extend() -> None:
    """Launch configs of the triton extend kernel (Hopper tuning): correctness and TFLOP/s per config."""
    from sglang.kernels.extend_attention import extend_attention

    dtype = torch.bfloat16
    t_ = lambda xs: torch.tensor(xs, device=DEV)  # noqa: E731
    rows_out = REPORT.setdefault("extend_sweep", [])
    for hq, hkv, d in ((32, 8, 128), (32, 8, 64)):
        for bs, n in ((1, 4096), (8, 1024), (4, 8192)):
            seq = [n] * bs
            k_buf, v_buf, r2t, rows = make_pool(seq, hkv, d, dtype, sum(seq) + 10)
            q = torch.randn(sum(seq), hq, d, device=DEV, dtype=dtype)
            starts, zeros, seq_t = t_([n * i for i in range(bs)]), t_([0] * bs), t_(seq)
            flops = 4 * bs * hq * d * n * n / 2
            want = None
            if n <= 4096:
                want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [0] * bs, seq, d ** -0.5)
            for cfg in ((64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2),
                        (128, 32, 4, 3), (64, 128, 4, 2), (128, 64, 8, 4)):
                try:
                    out = extend_attention(q, k_buf, v_buf, r2t, rows, zeros, seq_t, starts, n, d ** -0.5, config=cfg)
                    err = rel_err(out, want) if want is not None else float("nan")
                    ms = bench(lambda: extend_attention(q, k_buf, v_buf, r2t, rows, zeros, seq_t, starts, n,
                                                        d ** -0.5, config=cfg))
                except Exception as e:  # e.g. out of shared memory for a large tile
                    err, ms = float("nan"), float("nan")
                    print(f"  config {cfg} failed: {type(e).__name__}: {str(e)[:100]}")
                rec = {"heads": f"{hq}/{hkv}x{d}", "bs": bs, "n": n, "config": cfg, "ms": ms,
                       "tflops": flops / ms / 1e9 if ms == ms else None, "rel_err": err}
                rows_out.append(rec)
                if err == err and err > TOL[dtype]:
                    FAILED.append(f"extend sweep {rec}")
            done = [r for r in rows_out if r["heads"] == f"{hq}/{hkv}x{d}" and r["bs"] == bs and r["n"] == n
                    and r["ms"] == r["ms"]]
            if done:
                best = min(done, key=lambda r: r["ms"])
                print(f"  {hq}/{hkv}x{d} bs={bs} n={n}: best cfg={best['config']} {best['ms']:.4f} ms "
                      f"({best['tflops']:.0f} TFLOP/s)", flush=True)


def sweep_decode() -> None:
    """Stage-1 launch configs of the triton decode kernel: correctness and time per config."""
    from sglang.kernels.decode_attention import decode_attention

    dtype = torch.bfloat16
    t_ = lambda xs: torch.tensor(xs, device=DEV)  # noqa: E731
    rows_out = REPORT.setdefault("decode_sweep", [])
    for hq, hkv, d in ((32, 8, 128), (32, 8, 64)):
        for bs, seqlen in ((1, 1024), (64, 1024), (256, 700), (64, 4096)):
            seq = [seqlen] * bs
            k_buf, v_buf, r2t, rows = make_pool(seq, hkv, d, dtype, sum(seq) + 10)
            q = torch.randn(bs, hq, d, device=DEV, dtype=dtype)
            seq_t = t_(seq)
            want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * bs, d ** -0.5)
            kv_bytes = 2 * sum(seq) * hkv * d * 2
            for splits in (8, 16):
                for cfg in ((32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 8, 2), (128, 4, 2), (128, 8, 2)):
                    out = torch.full_like(q, float("nan"))
                    try:
                        decode_attention(q, k_buf, v_buf, r2t, rows, seq_t, d ** -0.5, num_splits=splits, out=out, config=cfg)
                        err = rel_err(out, want)
                        ms = bench(lambda: decode_attention(q, k_buf, v_buf, r2t, rows, seq_t, d ** -0.5,
                                                            num_splits=splits, config=cfg))
                    except Exception as e:  # e.g. out of shared memory for a large tile
                        err, ms = float("nan"), float("nan")
                        print(f"  config {cfg} failed: {type(e).__name__}: {str(e)[:100]}")
                    rec = {"heads": f"{hq}/{hkv}x{d}", "bs": bs, "seq": seqlen, "splits": splits, "config": cfg,
                           "ms": ms, "kv_gbs": kv_bytes / ms / 1e6 if ms == ms else None, "rel_err": err}
                    rows_out.append(rec)
                    if err == err and err > TOL[dtype]:
                        FAILED.append(f"decode sweep {rec}")
            best = min((r for r in rows_out if r["heads"] == f"{hq}/{hkv}x{d}" and r["bs"] == bs and r["seq"] == seqlen
                        and r["ms"] == r["ms"]), key=lambda r: r["ms"])
            print(f"  {hq}/{hkv}x{d} bs={bs} seq={seqlen}: best splits={best['splits']} cfg={best['config']} "
                  f"{best['ms']:.4f} ms ({best['kv_gbs']:.0f} GB/s)", flush=True)


# -- 4. end-to-end greedy -------------------------------------------------------------------------
def check_greedy(model: str, new_tokens: int) -> None:
    from bench_one_batch import Driver
    from model_dirs import model_dir

    from sglang.runtime.model_runner import ModelRunner
    from sglang.runtime.server_args import ServerArgs

    path = model_dir(model)
    common = dict(model_path=path, load_format="dummy", max_total_tokens=4096, max_running_requests=8)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (5, 17, 33, 64)]
    cpu = ModelRunner(ServerArgs(device="cpu", dtype="float32", attention_backend="torch", **common))
    want_logits: list = []
    want = Driver(cpu).greedy(prompts, new_tokens, want_logits)
    state = cpu.model.state_dict()
    for dtype, backend, graphs in (("float32", "triton", True), ("bfloat16", "triton", True),
                                   ("bfloat16", "flashinfer", True), ("bfloat16", "flashinfer", False),
                                   ("bfloat16", "torch", False)):
        label = f"{model} {dtype} {backend} graphs={graphs}"
        try:
            gpu = ModelRunner(ServerArgs(device="cuda", dtype=dtype, attention_backend=backend,
                                         disable_cuda_graph=not graphs, cuda_graph_max_bs=8, **common))
            gpu.model.load_state_dict(state)  # same weights as the CPU reference
            got_logits: list = []
            got = Driver(gpu).greedy(prompts, new_tokens, got_logits)
            # logits of the prefill and of the first decode step (both runs fed the same tokens so far)
            lerr = [rel_err(a, b) for a, b in zip(got_logits[:2], want_logits[:2])]
            agree = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(got, want)]
            exact = all(a == new_tokens for a in agree)
            REPORT["greedy"].append({"case": label, "tokens_equal_prefix": agree, "exact": exact, "logits_rel_err": lerr})
            print(f"  {'ok  ' if exact else 'DIFF'} greedy {label}: equal prefix lengths {agree} of {new_tokens}; "
                  f"logits rel err prefill {lerr[0]:.1e} decode {lerr[1]:.1e}", flush=True)
            if not exact and dtype == "float32" or lerr[0] > (1e-4 if dtype == "float32" else 5e-2):
                FAILED.append(f"greedy {label}")
            del gpu
            torch.cuda.empty_cache()
        except Exception as e:
            traceback.print_exc()
            FAILED.append(f"greedy {label}: {e}")


# -- 5. KV pool sizing from free memory ----------------------------------------------------------
def check_memory(model: str) -> None:
    from model_dirs import model_dir

    from sglang.runtime.model_runner import ModelRunner
    from sglang.runtime.server_args import ServerArgs

    for frac in (0.5, 0.85):
        torch.cuda.empty_cache()
        r = ModelRunner(ServerArgs(model_path=model_dir(model), load_format="dummy", device="cuda",
                                   dtype="bfloat16", mem_fraction_static=frac, disable_cuda_graph=True))
        free, total = torch.cuda.mem_get_info(DEV)
        used = (total - free) / total
        rec = {"model": model, "mem_fraction_static": frac, "kv_pool_tokens": r.max_total_num_tokens,
               "gpu_used_fraction_after_init": round(used, 4), "total_gib": round(total / 2**30, 1)}
        REPORT.setdefault("memory", []).append(rec)
        ok = abs(used - frac) < 0.03
        print(f"  {'ok  ' if ok else 'FAIL'} memory {rec}", flush=True)
        if not ok:
            FAILED.append(f"memory sizing {frac}: used {used:.3f}")
        del r
        torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="check_kernels.json")
    sections = ["kernels", "backends", "timings", "greedy", "memory", "sweep", "sweep_extend"]
    p.add_argument("--only", nargs="*", default=sections, choices=sections,
                   help="sections to run (run separately when one may leave the CUDA context broken)")
    p.add_argument("--greedy-model", default="smollm2-135m")
    p.add_argument("--new-tokens", type=int, default=16)
    args = p.parse_args()
    torch.manual_seed(0)
    REPORT["device"] = torch.cuda.get_device_name(DEV)
    steps = [("kernels", lambda: (check_elementwise(), check_attention_kernels())), ("backends", check_backends),
             ("timings", time_kernels), ("greedy", lambda: check_greedy(args.greedy_model, args.new_tokens)),
             ("memory", lambda: check_memory("llama-3.2-1b")), ("sweep", sweep_decode),
             ("sweep_extend", sweep_extend)]
    for name, fn in steps:
        if name not in args.only:
            continue
        print(f"== {name}", flush=True)
        try:
            fn()
        except Exception as e:
            traceback.print_exc()
            FAILED.append(f"{name}: {type(e).__name__}: {e}")
        Path(args.out).write_text(json.dumps({**REPORT, "failed": FAILED}, indent=1))
    n_ok = sum(c["ok"] for c in REPORT["checks"])
    print(f"\n{n_ok}/{len(REPORT['checks'])} kernel/backend checks passed; failed: {FAILED or 'none'}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
