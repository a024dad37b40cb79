"""SiLU-and-mul for gated MLPs: out = silu(x[:, :d]) * x[:, d:], read once, computed in fp32."""
from __future__ import annotations

import torch

from sglang.kernels._triton import next_pow2, require_triton, tl, triton

require_triton()


@triton.jit
def _silu_and_mul_kernel(X, OUT, d, stride_x, stride_o, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(X + row * stride_x + d + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(OUT + row * stride_o + cols, out.to(OUT.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [rows, 2*d] (gate then up, as a merged gate_up projection writes it) -> [rows, d]."""
    if x.dim() != 2 or x.shape[1] % 2:
        raise ValueError(f"silu_and_mul expects [rows, 2*d], got {tuple(x.shape)}")
    if x.stride(1) != 1:
        raise ValueError("silu_and_mul needs rows with unit stride")
    rows, d = x.shape[0], x.shape[1] // 2
    out = torch.empty((rows, d), dtype=x.dtype, device=x.device)
    block = min(1024, next_pow2(d))
    if rows:
        _silu_and_mul_kernel[(rows, triton.cdiv(d, block))](x, out, d, x.stride(0), out.stride(0), BLOCK=block)
    return out
