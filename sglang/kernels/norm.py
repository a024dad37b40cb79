"""RMSNorm, optionally fused with the residual add that precedes it in every decoder layer.

    fused:  r = x + residual;  y = r * rsqrt(mean(r^2) + eps) * weight;  returns (y, r)

One program per row: the row is read once, the sum of squares is taken in fp32, and both the
normalised row and the new residual are written in the same pass (the unfused torch version reads
the row three times and writes two temporaries).
"""
from __future__ import annotations

from typing import Optional

import torch

from sglang.kernels._triton import next_pow2, require_triton, tl, triton

require_triton()


@triton.jit
def _rmsnorm_kernel(
    X, R, W, Y, R_OUT,
    n_cols, stride_x, stride_r, stride_y, stride_ro, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x = x + tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        # the residual stream is kept in the activation dtype, as the unfused model does
        x = x.to(R_OUT.dtype.element_ty)
        tl.store(R_OUT + row * stride_ro + cols, x, mask=mask)
        x = x.to(tl.float32)
    var = tl.sum(x * x, axis=0) / n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.math.rsqrt(var + eps) * w
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"rmsnorm expects x of shape [rows, hidden], got {tuple(x.shape)}")
    if weight.shape != (x.shape[1],):
        raise ValueError(f"rmsnorm weight has shape {tuple(weight.shape)}, expected ({x.shape[1]},)")
    if x.stride(1) != 1:
        raise ValueError("rmsnorm needs rows with unit stride (x.stride(1) == 1)")


def rmsnorm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of x ([rows, hidden]); with `residual`, first adds it and returns (normed, x + residual)."""
    _check(x, weight)
    rows, n = x.shape
    y = torch.empty_like(x)
    block = next_pow2(n)
    warps = 4 if block <= 2048 else 8
    if residual is None:
        if rows:
            _rmsnorm_kernel[(rows,)](x, x, weight, y, y, n, x.stride(0), 0, y.stride(0), 0, eps,
                                     HAS_RESIDUAL=False, BLOCK=block, num_warps=warps)
        return y
    if residual.shape != x.shape:
        raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    r_out = torch.empty_like(residual)
    if rows:
        _rmsnorm_kernel[(rows,)](x, residual, weight, y, r_out, n, x.stride(0), residual.stride(0),
                                 y.stride(0), r_out.stride(0), eps,
                                 HAS_RESIDUAL=True, BLOCK=block, num_warps=warps)
    return y, r_out
