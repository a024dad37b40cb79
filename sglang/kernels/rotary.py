"""Rotary position embedding applied to q and k in place.

`cos_sin_cache` is [max_position, rotary_dim] with cos in the first half of each row and sin in the
second (rotary_dim/2 frequencies each). Two pairing conventions:
  neox (HF Llama/Qwen `rotate_half`): element i pairs with i + rotary_dim/2;
  gpt-j (interleaved): element 2i pairs with 2i+1.
Only the first `rotary_dim` elements of each head rotate (partial rotary); the rest pass through.
"""
from __future__ import annotations

import torch

from sglang.kernels._triton import next_pow2, require_triton, tl, triton

require_triton()


@triton.jit
def _rotary_kernel(
    Q, K, POS, CS,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cs,
    num_q_heads, num_kv_heads,
    HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, IS_NEOX: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    pos = tl.load(POS + t).to(tl.int64)
    i = tl.arange(0, BLOCK_HALF)
    mask = i < HALF
    cos = tl.load(CS + pos * stride_cs + i, mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(CS + pos * stride_cs + HALF + i, mask=mask, other=0.0).to(tl.float32)
    if IS_NEOX:
        i1 = i
        i2 = i + HALF
    else:
        i1 = 2 * i
        i2 = 2 * i + 1
    # one program handles head h of q and, when h < num_kv_heads, head h of k
    if h < num_q_heads:
        base = Q + t * stride_qt + h * stride_qh
        x1 = tl.load(base + i1, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(base + i2, mask=mask, other=0.0).to(tl.float32)
        tl.store(base + i1, (x1 * cos - x2 * sin).to(Q.dtype.element_ty), mask=mask)
        tl.store(base + i2, (x2 * cos + x1 * sin).to(Q.dtype.element_ty), mask=mask)
    if h < num_kv_heads:
        base = K + t * stride_kt + h * stride_kh
        x1 = tl.load(base + i1, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(base + i2, mask=mask, other=0.0).to(tl.float32)
        tl.store(base + i1, (x1 * cos - x2 * sin).to(K.dtype.element_ty), mask=mask)
        tl.store(base + i2, (x2 * cos + x1 * sin).to(K.dtype.element_ty), mask=mask)


def apply_rotary_(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    head_dim: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q ([tokens, Hq*head_dim] or [tokens, Hq, head_dim]) and k likewise, in place; returns them."""
    t = positions.shape[0]
    if q.shape[0] != t or k.shape[0] != t:
        raise ValueError(f"rotary: q/k have {q.shape[0]}/{k.shape[0]} tokens but positions has {t}")
    qv, kv = q.view(t, -1, head_dim), k.view(t, -1, head_dim)
    if qv.stride(2) != 1 or kv.stride(2) != 1:
        raise ValueError("rotary: q and k need unit stride in the head dimension")
    rot = cos_sin_cache.shape[1]
    if rot % 2 or rot > head_dim:
        raise ValueError(f"rotary: cos_sin_cache width {rot} must be even and <= head_dim {head_dim}")
    half = rot // 2
    hq, hk = qv.shape[1], kv.shape[1]
    if t:
        _rotary_kernel[(t, max(hq, hk))](
            qv, kv, positions, cos_sin_cache,
            qv.stride(0), qv.stride(1), kv.stride(0), kv.stride(1), cos_sin_cache.stride(0),
            hq, hk, HALF=half, BLOCK_HALF=next_pow2(half), IS_NEOX=is_neox, num_warps=1,
        )
    return q, k
