"""Decode attention over the token KV pool: one query token per request, split-KV ("flash decoding").

A long sequence is cut into `num_splits` contiguous pieces handled by separate programs, so a small
batch with long contexts still fills the GPU. Query heads that share a KV head (GQA) are handled by one
program, so each K/V row is read from memory once. Stage 1 computes, per (request, head, split), the
softmax-weighted value sum of its piece and the piece's log-sum-exp; stage 2 merges the pieces.

The grid depends only on (batch size, heads, num_splits), never on sequence lengths, which are read
from device memory inside the kernel: the launch is CUDA-graph safe.
"""
from __future__ import annotations

import torch

from sglang.kernels._triton import check_kv_layout, interpreting, next_pow2, require_triton, tl, triton

require_triton()

LOG2E = 1.4426950408889634
DEFAULT_NUM_SPLITS = 8
MAX_AUTO_SPLITS = 16


def auto_num_splits(bs: int, num_kv_heads: int, num_sms: int) -> int:
    """KV splits for a decode batch of `bs` rows: DEFAULT_NUM_SPLITS, or more for small batches, whose
    bs x heads x 8 programs would leave most of the GPU idle (8B batch-1: 64 programs on 132 SMs; each
    program then walks 1/8 of a long context alone). Depends only on the batch size, so a CUDA graph per
    batch size captures it."""
    programs = max(bs * num_kv_heads, 1)
    want = next_pow2(-(-num_sms // programs))
    return max(DEFAULT_NUM_SPLITS, min(want, MAX_AUTO_SPLITS))


LARGE_BATCH_MIN_SPLIT = 256


def auto_min_split(bs: int, num_kv_heads: int, num_sms: int) -> int:
    """Fewest keys per split: 1 (every split used) while the batch alone cannot fill the GPU, else
    LARGE_BATCH_MIN_SPLIT (bs x heads programs already cover the SMs twice over: a request of a few hundred
    keys in 8 splits of ~2 blocks each streams poorly and writes 8 partials per head)."""
    return LARGE_BATCH_MIN_SPLIT if bs * num_kv_heads >= 2 * num_sms else 1
# stage-1 launch config per padded head dim: (BLOCK_N, num_warps, num_stages), picked by the H200 sweep
# in docs/benchmarks.md (run 4): for head_dim 128 three stages beat two by 10-20% at every size measured
DECODE_CONFIG: dict[int, tuple[int, int, int]] = {64: (64, 4, 2), 128: (64, 4, 3)}


@triton.jit
def _decode_stage1_kernel(
    Q, K, V, MID_O, MID_LSE,
    REQ_TO_TOKEN, REQ_IDX, SEQ_LENS, KV_START,
    K_NEW, V_NEW, OUT_LOC,
    sm_scale_log2,
    stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_r2t,
    stride_mob, stride_moh, stride_mos, stride_lb, stride_lh,
    stride_knb, stride_knh, stride_vnb, stride_vnh,
    KV_GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, MIN_SPLIT: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PREC: tl.constexpr, FUSE_NEW: tl.constexpr, HAS_START: tl.constexpr,
):
    # one program per (request, KV head, split) serves all KV_GROUP query heads that share the KV
    # head, so each K/V row is read once (not KV_GROUP times) and the scores are a small matmul.
    # HAS_START (cascade decode): the request's keys before KV_START[b] are a shared prefix that
    # another kernel attends; this one covers only [KV_START[b], seq_len)
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    sp = tl.program_id(2)
    seq_len = tl.load(SEQ_LENS + b).to(tl.int32)
    req = tl.load(REQ_IDX + b).to(tl.int64)
    kv_lo = 0
    if HAS_START:
        kv_lo = tl.load(KV_START + b).to(tl.int32)
    # a request uses only as many splits as give each at least MIN_SPLIT keys (large batches fill the GPU
    # anyway; a longer split streams better and writes fewer partials); the others write an empty piece
    active = tl.minimum(tl.maximum(tl.cdiv(seq_len - kv_lo, MIN_SPLIT), 1), NUM_SPLITS)
    split_len = tl.cdiv(seq_len - kv_lo, active)
    lo = kv_lo + sp * split_len
    hi = tl.minimum(lo + split_len, seq_len)

    offs_h = tl.arange(0, BLOCK_H)
    h_mask = offs_h < KV_GROUP
    heads = kvh * KV_GROUP + offs_h
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=h_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST_DOT:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    if FUSE_NEW:
        # the newest token (position seq_len - 1) is this step's k/v: the split that holds it takes it
        # from registers and also stores it into the pool (exactly one program per request and KV
        # head), which saves the separate scatter kernels of the pool write
        own_new = (hi == seq_len) & (lo < hi)
        loop_hi = tl.where(own_new, hi - 1, hi)
    else:
        loop_hi = hi
    for n0 in range(lo, loop_hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < loop_hi
        slots = tl.load(REQ_TO_TOKEN + req * stride_r2t + offs_n, mask=n_mask, other=0).to(tl.int64)
        k = tl.load(K + slots[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        v = tl.load(V + slots[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST_DOT:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * sm_scale_log2
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
    if FUSE_NEW:
        if own_new:
            loc = tl.load(OUT_LOC + b).to(tl.int64)
            k_new = tl.load(K_NEW + b * stride_knb + kvh * stride_knh + offs_d, mask=d_mask, other=0.0)
            v_new = tl.load(V_NEW + b * stride_vnb + kvh * stride_vnh + offs_d, mask=d_mask, other=0.0)
            k_new = k_new.to(K.dtype.element_ty)  # attend to exactly what later steps read from the pool
            v_new = v_new.to(V.dtype.element_ty)
            tl.store(K + loc * stride_kt + kvh * stride_kh + offs_d, k_new, mask=d_mask)
            tl.store(V + loc * stride_vt + kvh * stride_vh + offs_d, v_new, mask=d_mask)
            s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], axis=1) * sm_scale_log2
            m_new = tl.maximum(m_i, s_new)
            alpha = tl.math.exp2(m_i - m_new)
            p_new = tl.math.exp2(s_new - m_new)
            acc = acc * alpha[:, None] + p_new[:, None] * v_new.to(tl.float32)[None, :]
            l_i = l_i * alpha + p_new
            m_i = m_new
    # an empty piece (short sequence) contributes weight 0: lse = -inf, values 0 (never garbage)
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    # an empty piece's values are never read (the merge skips lse -inf): not written either
    tl.store(MID_O + b * stride_mob + heads[:, None] * stride_moh + sp * stride_mos + offs_d[None, :], out,
             mask=h_mask[:, None] & d_mask[None, :] & has[:, None])
    tl.store(MID_LSE + b * stride_lb + heads * stride_lh + sp, lse, mask=h_mask)


# num_splits is a runtime value (never specialized on): cascade decode's count changes with the grouping,
# and one compiled merge kernel must serve every count up to BLOCK_S
@triton.jit(do_not_specialize=["num_splits"])
def _decode_stage2_kernel(
    MID_O, MID_LSE, O,
    stride_mob, stride_moh, stride_mos, stride_lb, stride_lh, stride_ob, stride_oh,
    num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_splits
    d_mask = offs_d < HEAD_DIM
    lse = tl.load(MID_LSE + b * stride_lb + h * stride_lh + offs_s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)  # empty sequence (padding): all weights 0, output 0
    w = tl.math.exp2(lse - m)
    # an empty piece (lse -inf) is not read: its values may be unwritten (an inactive split, a cascade row
    # in no prefix tile), and skipping them saves the bandwidth
    filled = s_mask & (lse != float("-inf"))
    o = tl.load(MID_O + b * stride_mob + h * stride_moh + offs_s[:, None] * stride_mos + offs_d[None, :],
                mask=filled[:, None] & d_mask[None, :], other=0.0)
    total = tl.sum(w, axis=0)
    out = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty), mask=d_mask)


def decode_attention(
    q: torch.Tensor,  # [bs, Hq, D]
    k_buffer: torch.Tensor,  # [pool_size, Hkv, D]
    v_buffer: torch.Tensor,
    req_to_token: torch.Tensor,  # [max_reqs, max_context]
    req_pool_indices: torch.Tensor,  # [bs]
    seq_lens: torch.Tensor,  # [bs], including the current token
    sm_scale: float,
    num_splits: int = DEFAULT_NUM_SPLITS,
    out: torch.Tensor | None = None,
    k_new: torch.Tensor | None = None,  # [bs, Hkv, D]: this step's K/V, stored into the pool by the kernel
    v_new: torch.Tensor | None = None,
    out_cache_loc: torch.Tensor | None = None,  # [bs] pool slots of this step's token
    config: tuple[int, int, int] | None = None,  # (BLOCK_N, num_warps, num_stages); None = tuned default
    min_split: int = 1,  # fewest keys per split: a request uses min(num_splits, ceil(len / min_split)) splits
) -> torch.Tensor:
    """One-token-per-request attention over req_to_token[req, :seq_len]; returns [bs, Hq, D].

    Without k_new/v_new the current token must already be in the pool. With them (and out_cache_loc),
    the kernel writes them to the pool itself and attends to them from registers (one launch less per
    K and V, which matters for small decode batches)."""
    check_decode_args("decode_attention", q, k_buffer, v_buffer, num_splits, k_new, v_new, out_cache_loc)
    if out is None:
        out = torch.empty_like(q)
    bs, hq, d = q.shape
    if bs == 0:
        return out
    mid_o, mid_lse = split_buffers(q, num_splits)
    launch_split_kv(q, k_buffer, v_buffer, req_to_token, req_pool_indices, seq_lens, sm_scale, mid_o, mid_lse,
                    num_splits, k_new=k_new, v_new=v_new, out_cache_loc=out_cache_loc, config=config,
                    min_split=min_split)
    merge_splits(mid_o, mid_lse, out)
    return out


def check_decode_args(kernel: str, q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor,
                      num_splits: int, k_new: torch.Tensor | None, v_new: torch.Tensor | None,
                      out_cache_loc: torch.Tensor | None) -> None:
    """Shapes of a decode call (the fused new-token arguments come all together or not at all)."""
    bs, hq, d = q.shape
    hkv = k_buffer.shape[1]
    check_kv_layout(kernel, hq, d, k_buffer, v_buffer)
    if num_splits < 1:
        raise ValueError(f"{kernel}: num_splits must be >= 1, got {num_splits}")
    fuse = k_new is not None
    if fuse != (v_new is not None) or fuse != (out_cache_loc is not None):
        raise ValueError(f"{kernel}: pass k_new, v_new and out_cache_loc together (or none of them)")
    if fuse and (k_new.shape != (bs, hkv, d) or v_new.shape != (bs, hkv, d) or out_cache_loc.shape != (bs,)):
        raise ValueError(f"{kernel}: k_new/v_new must be [{bs}, {hkv}, {d}] and out_cache_loc [{bs}], got "
                         f"{tuple(k_new.shape)}, {tuple(v_new.shape)}, {tuple(out_cache_loc.shape)}")


def split_buffers(q: torch.Tensor, total_splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 partial outputs [bs, Hq, total_splits, D] and their log2-sum-exp [bs, Hq, total_splits]."""
    bs, hq, d = q.shape
    return (torch.empty((bs, hq, total_splits, d), dtype=torch.float32, device=q.device),
            torch.empty((bs, hq, total_splits), dtype=torch.float32, device=q.device))


def launch_split_kv(
    q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor, seq_lens: torch.Tensor, sm_scale: float,
    mid_o: torch.Tensor, mid_lse: torch.Tensor, num_splits: int,
    k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None,
    out_cache_loc: torch.Tensor | None = None, config: tuple[int, int, int] | None = None,
    kv_start: torch.Tensor | None = None,  # [bs]: attend only keys [kv_start[b], seq_len) (cascade)
    min_split: int = 1,
) -> None:
    """Stage 1: each request's keys in num_splits pieces -> mid_o/mid_lse[:, :, :num_splits]."""
    bs, hq, d = q.shape
    hkv = k_buffer.shape[1]
    fuse = k_new is not None
    block_d = next_pow2(d)
    kn = k_new if fuse else k_buffer
    vn = v_new if fuse else v_buffer
    if config is not None:
        block_n, warps, stages = config
    elif interpreting():
        block_n, warps, stages = 16, 4, 1
    else:
        block_n, warps, stages = DECODE_CONFIG.get(block_d, (64, 4, 2))
    group = hq // hkv
    _decode_stage1_kernel[(bs, hkv, num_splits)](
        q, k_buffer, v_buffer, mid_o, mid_lse,
        req_to_token, req_pool_indices, seq_lens, kv_start if kv_start is not None else seq_lens,
        kn, vn, out_cache_loc if fuse else seq_lens,
        sm_scale * LOG2E,
        q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1),
        v_buffer.stride(0), v_buffer.stride(1), req_to_token.stride(0),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        kn.stride(0), kn.stride(1), vn.stride(0), vn.stride(1),
        KV_GROUP=group, BLOCK_H=max(16, next_pow2(group)), HEAD_DIM=d, BLOCK_D=block_d,
        BLOCK_N=block_n, NUM_SPLITS=num_splits, MIN_SPLIT=max(1, int(min_split)),
        # the interpreter's tl.dot mis-handles bf16 (triton 3.9): fp32 operands there
        UPCAST_DOT=interpreting(),
        DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
        FUSE_NEW=fuse, HAS_START=kv_start is not None,
        num_warps=warps, num_stages=stages,
    )


def merge_splits(mid_o: torch.Tensor, mid_lse: torch.Tensor, out: torch.Tensor,
                 num_splits: int | None = None) -> None:
    """Stage 2: out[b, h] = the log-sum-exp weighted mean of the first num_splits (None: all) mid_o[b, h, :]
    pieces. The kernel is specialized on the buffers' width only, not on num_splits."""
    bs, hq, total, d = mid_o.shape
    used = total if num_splits is None else num_splits
    if not 1 <= used <= total:
        raise ValueError(f"merge_splits: num_splits must be in [1, {total}], got {used}")
    _decode_stage2_kernel[(bs, hq)](
        mid_o, mid_lse, out,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1), used,
        HEAD_DIM=d, BLOCK_D=next_pow2(d), BLOCK_S=next_pow2(total),
        num_warps=2,
    )
