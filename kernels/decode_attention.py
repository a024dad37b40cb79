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

from ._triton import interpreting, next_pow2, require_triton, tl, triton

require_triton()

LOG2E = 1.4426950408889634
DEFAULT_NUM_SPLITS = 8


@triton.jit
def _decode_stage1_kernel(
    Q, K, V, MID_O, MID_LSE,
    REQ_TO_TOKEN, REQ_IDX, SEQ_LENS,
    sm_scale_log2,
    stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_r2t,
    stride_mob, stride_moh, stride_mos, stride_lb, stride_lh,
    KV_GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    # one program per (request, KV head, split) serves all KV_GROUP query heads that share the KV
    # head, so each K/V row is read once (not KV_GROUP times) and the scores are a small matmul
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    sp = tl.program_id(2)
    seq_len = tl.load(SEQ_LENS + b).to(tl.int32)
    req = tl.load(REQ_IDX + b).to(tl.int64)
    split_len = tl.cdiv(seq_len, NUM_SPLITS)
    lo = sp * split_len
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
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
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
    # an empty piece (short sequence) contributes weight 0: lse = -inf, values 0 (never garbage)
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    tl.store(MID_O + b * stride_mob + heads[:, None] * stride_moh + sp * stride_mos + offs_d[None, :], out,
             mask=h_mask[:, None] & d_mask[None, :])
    tl.store(MID_LSE + b * stride_lb + heads * stride_lh + sp, lse, mask=h_mask)


@triton.jit
def _decode_stage2_kernel(
    MID_O, MID_LSE, O,
    stride_mob, stride_moh, stride_mos, stride_lb, stride_lh, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < NUM_SPLITS
    d_mask = offs_d < HEAD_DIM
    lse = tl.load(MID_LSE + b * stride_lb + h * stride_lh + offs_s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)  # empty sequence (padding): all weights 0, output 0
    w = tl.math.exp2(lse - m)
    o = tl.load(MID_O + b * stride_mob + h * stride_moh + offs_s[:, None] * stride_mos + offs_d[None, :],
                mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    total = tl.sum(w, axis=0)
    out = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty), mask=d_mask)


def decode_attention(
    q: torch.Tensor,  # [bs, Hq, D]
    k_buffer: torch.Tensor,  # [pool_size, Hkv, D]
    v_buffer: torch.Tensor,
    req_to_token: torch.Tensor,  # [max_reqs, max_context]
    req_pool_indices: torch.Tensor,  # [bs]
    seq_lens: torch.Tensor,  # [bs], including the current token (already in the pool)
    sm_scale: float,
    num_splits: int = DEFAULT_NUM_SPLITS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-token-per-request attention over req_to_token[req, :seq_len]; returns [bs, Hq, D]."""
    bs, hq, d = q.shape
    hkv = k_buffer.shape[1]
    if k_buffer.shape[2] != d or v_buffer.shape[1:] != k_buffer.shape[1:]:
        raise ValueError(f"decode_attention: k/v buffers {tuple(k_buffer.shape)}/{tuple(v_buffer.shape)} "
                         f"do not match q head_dim {d}")
    if hq % hkv:
        raise ValueError(f"decode_attention: {hq} query heads is not a multiple of {hkv} kv heads")
    if num_splits < 1:
        raise ValueError(f"decode_attention: num_splits must be >= 1, got {num_splits}")
    if out is None:
        out = torch.empty_like(q)
    if bs == 0:
        return out
    block_d = next_pow2(d)
    mid_o = torch.empty((bs, hq, num_splits, d), dtype=torch.float32, device=q.device)
    mid_lse = torch.empty((bs, hq, num_splits), dtype=torch.float32, device=q.device)
    block_n = 16 if interpreting() else 64
    group = hq // hkv
    _decode_stage1_kernel[(bs, hkv, num_splits)](
        q, k_buffer, v_buffer, mid_o, mid_lse,
        req_to_token, req_pool_indices, seq_lens,
        sm_scale * LOG2E,
        q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1),
        v_buffer.stride(0), v_buffer.stride(1), req_to_token.stride(0),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        KV_GROUP=group, BLOCK_H=max(16, next_pow2(group)), HEAD_DIM=d, BLOCK_D=block_d,
        BLOCK_N=block_n, NUM_SPLITS=num_splits,
        # the interpreter's tl.dot mis-handles bf16 (triton 3.9): fp32 operands there
        UPCAST_DOT=interpreting(),
        DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=4, num_stages=2,
    )
    _decode_stage2_kernel[(bs, hq)](
        mid_o, mid_lse, out,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1),
        HEAD_DIM=d, BLOCK_D=block_d, NUM_SPLITS=num_splits, BLOCK_S=next_pow2(num_splits),
        num_warps=2,
    )
    return out
