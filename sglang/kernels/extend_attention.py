"""Extend (prefill) attention over the token KV pool, ragged layout.

For request b the new tokens are q[extend_start_loc[b] : + extend_len[b]]; they sit at positions
prefix_len[b] .. seq_len[b]-1 of the sequence. The caller has already written their K/V into the pool,
so every key of the sequence (cached prefix and new tokens alike) is read through
req_to_token[req_pool_indices[b], :seq_len]. Query at position p attends keys 0..p (causal).

Grid: (request, q head, block of BLOCK_M new tokens). Each program streams the keys it may see in
blocks of BLOCK_N with an online softmax (flash-attention style) and never materialises the scores.
Programs past a request's extend length exit at once, so the grid is sized by the longest extend.
"""
from __future__ import annotations

import torch

from sglang.kernels._triton import check_kv_layout, interpreting, next_pow2, require_triton, tl, triton

require_triton()


@triton.jit
def _extend_attn_kernel(
    Q, K, V, O,
    REQ_TO_TOKEN, REQ_IDX, PREFIX_LENS, EXTEND_LENS, EXTEND_START,
    sm_scale_log2,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh, stride_r2t,
    KV_GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST_DOT: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    mb = tl.program_id(2)
    ext_len = tl.load(EXTEND_LENS + b).to(tl.int32)
    if mb * BLOCK_M < ext_len:
        prefix = tl.load(PREFIX_LENS + b).to(tl.int32)
        start = tl.load(EXTEND_START + b).to(tl.int64)
        req = tl.load(REQ_IDX + b).to(tl.int64)
        kvh = h // KV_GROUP

        offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        m_mask = offs_m < ext_len
        d_mask = offs_d < HEAD_DIM
        q_ptrs = Q + (start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :]
        q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST_DOT:
            q = q.to(tl.float32)
        q_pos = prefix + offs_m

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        # the last query of this block sits at prefix + min(ext_len, (mb+1)*BLOCK_M) - 1
        kv_end = prefix + tl.minimum(ext_len, (mb + 1) * BLOCK_M)
        for n0 in range(0, kv_end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_mask = offs_n < kv_end
            slots = tl.load(REQ_TO_TOKEN + req * stride_r2t + offs_n, mask=n_mask, other=0).to(tl.int64)
            k = tl.load(K + slots[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                        mask=n_mask[:, None] & d_mask[None, :], other=0.0)
            if UPCAST_DOT:
                k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * sm_scale_log2
            # key 0 is always visible, so every row gets a finite max in the first block
            visible = (offs_n[None, :] <= q_pos[:, None]) & n_mask[None, :]
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(V + slots[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :],
                        mask=n_mask[:, None] & d_mask[None, :], other=0.0)
            if UPCAST_DOT:
                acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision=DOT_PREC)
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
            m_i = m_new
        out = acc / l_i[:, None]
        o_ptrs = O + (start + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :]
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


LOG2E = 1.4426950408889634
# launch config per padded head dim: (BLOCK_M, BLOCK_N, num_warps, num_stages); the H200 sweep of
# benchmarks/check_kernels.py (--only sweep_extend) measures the alternatives
EXTEND_CONFIG: dict[int, tuple[int, int, int, int]] = {64: (128, 64, 4, 3), 128: (64, 64, 4, 2)}


def extend_attention(
    q: torch.Tensor,  # [num_tokens, Hq, D]
    k_buffer: torch.Tensor,  # [pool_size, Hkv, D]
    v_buffer: torch.Tensor,  # [pool_size, Hkv, D]
    req_to_token: torch.Tensor,  # [max_reqs, max_context]
    req_pool_indices: torch.Tensor,  # [bs]
    prefix_lens: torch.Tensor,  # [bs]
    extend_lens: torch.Tensor,  # [bs]
    extend_start_loc: torch.Tensor,  # [bs]
    max_extend_len: int,
    sm_scale: float,
    out: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,  # (BLOCK_M, BLOCK_N, num_warps, num_stages); None = tuned
) -> torch.Tensor:
    """Attention of the new (ragged) tokens over their whole sequence in the pool; returns [T, Hq, D]."""
    t, hq, d = q.shape
    hkv = k_buffer.shape[1]
    check_kv_layout("extend_attention", hq, d, k_buffer, v_buffer)
    if d < 16:
        raise ValueError(f"extend_attention needs head_dim >= 16 (tl.dot), got {d}")
    if out is None:
        out = torch.empty_like(q)
    bs = req_pool_indices.shape[0]
    if t == 0 or bs == 0 or max_extend_len <= 0:
        return out
    block_d = next_pow2(d)
    if config is not None:
        block_m, block_n, warps, stages = config
    elif interpreting():
        block_m, block_n, warps, stages = 16, 16, 4, 1
    else:
        block_m, block_n, warps, stages = EXTEND_CONFIG[64 if block_d <= 64 else 128]
    grid = (bs, hq, triton.cdiv(max_extend_len, block_m))
    _extend_attn_kernel[grid](
        q, k_buffer, v_buffer, out,
        req_to_token, req_pool_indices, prefix_lens, extend_lens, extend_start_loc,
        sm_scale * LOG2E,
        q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1),
        v_buffer.stride(0), v_buffer.stride(1), out.stride(0), out.stride(1), req_to_token.stride(0),
        KV_GROUP=hq // hkv, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        # the interpreter's tl.dot mis-handles bf16 (triton 3.9): fp32 operands there
        UPCAST_DOT=interpreting(),
        # fp32 models get true fp32 products (the default would be tf32, ~1e-3 relative error)
        DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=stages,
    )
    return out
