"""The swappable element-wise ops: torch reference versions and the choice of implementation per device.

Signatures (shared with sglang.kernels, so a kernel is a drop-in replacement):
    rmsnorm(x [T, H], weight [H], eps, residual=None) -> y | (y, x + residual)
    apply_rotary(positions [T], q [T, Hq*D], k [T, Hk*D], head_dim, cos_sin_cache [P, rot], is_neox)
        -> (q, k) rotated (the torch version returns new tensors; kernels may rotate in place)
    silu_and_mul(x [T, 2I]) -> [T, I]   (gate half first, then up)

On CUDA the Triton kernels of sglang.kernels are used when importable; set SGLANG_TORCH_OPS=1 to force
the torch versions (e.g. to bisect a numerical difference).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F


def rmsnorm_torch(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: Optional[torch.Tensor] = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if residual is not None:
        # the residual stream stays in the activation dtype, as in HF's decoder layer
        r = x + residual
        return rmsnorm_torch(r, weight, eps), r
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def apply_rotary_torch(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    head_dim: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    rot = cos_sin_cache.shape[1]
    half = rot // 2
    cs = cos_sin_cache.index_select(0, positions)
    cos, sin = cs[:, None, :half], cs[:, None, half:]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        xv = x.view(t, -1, head_dim)
        r, rest = xv[..., :rot].float(), xv[..., rot:]
        if is_neox:
            x1, x2 = r[..., :half], r[..., half:]
            out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            x1, x2 = r[..., 0::2], r[..., 1::2]
            out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        out = out.to(x.dtype)
        if rest.shape[-1]:
            out = torch.cat([out, rest], dim=-1)
        return out.reshape(x.shape)

    return rotate(q), rotate(k)


def silu_and_mul_torch(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


_TORCH_OPS: dict[str, Callable] = {
    "rmsnorm": rmsnorm_torch,
    "apply_rotary": apply_rotary_torch,
    "silu_and_mul": silu_and_mul_torch,
}


def _kernel_op(name: str) -> Optional[Callable]:
    """The Triton version of `name`, or None when the kernels are not importable here."""
    try:
        if name == "rmsnorm":
            from sglang.kernels.norm import rmsnorm

            return rmsnorm
        if name == "apply_rotary":
            from sglang.kernels.rotary import apply_rotary_

            return apply_rotary_
        if name == "silu_and_mul":
            from sglang.kernels.activation import silu_and_mul

            return silu_and_mul
    except Exception:  # triton missing or broken: the torch version is always correct
        return None
    return None


def get_op(name: str, device: torch.device | str) -> Callable:
    """The implementation of op `name` to use for tensors on `device`."""
    if name not in _TORCH_OPS:
        raise KeyError(f"unknown op {name!r}; known: {sorted(_TORCH_OPS)}")
    if torch.device(device).type == "cuda" and os.environ.get("SGLANG_TORCH_OPS", "0") != "1":
        op = _kernel_op(name)
        if op is not None:
            return op
    return _TORCH_OPS[name]
