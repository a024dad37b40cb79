"""Plain-torch references for the kernels in this package (fp32/fp64 math, no tricks), used by the
kernel tests on CPU and by the GPU correctness script at real sizes."""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def rel_err(out: torch.Tensor, want: torch.Tensor) -> float:
    """Relative error of a kernel's output against its reference, in fp64 (the kernel checks' one measure)."""
    out, want = out.double(), want.double()
    return float((out - want).norm() / want.norm().clamp_min(1e-12))


def rmsnorm_ref(x: torch.Tensor, w: torch.Tensor, eps: float, residual: Optional[torch.Tensor] = None):
    if residual is not None:
        r = (x.float() + residual.float()).to(x.dtype)
        return rmsnorm_ref(r, w, eps), r
    xf = x.double()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.double()
    return y.to(x.dtype)


def silu_and_mul_ref(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    xf = x.double()
    return (torch.nn.functional.silu(xf[..., :d]) * xf[..., d:]).to(x.dtype)


def cos_sin_cache(rot_dim: int, max_pos: int, base: float = 10000.0) -> torch.Tensor:
    """[max_pos, rot_dim]: cos of the rot_dim/2 frequencies, then their sin."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim))
    f = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)
    return torch.cat([f.cos(), f.sin()], dim=-1).float()


def rotary_ref(pos, q, k, head_dim: int, cache: torch.Tensor, is_neox: bool = True):
    rot = cache.shape[1]
    half = rot // 2
    cos, sin = cache[pos, :half].double(), cache[pos, half:].double()

    def one(x):
        t = x.shape[0]
        xv = x.view(t, -1, head_dim).double().clone()
        r = xv[..., :rot]
        if is_neox:
            x1, x2 = r[..., :half], r[..., half:]
        else:
            x1, x2 = r[..., 0::2], r[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        o1, o2 = x1 * c - x2 * s, x2 * c + x1 * s
        if is_neox:
            xv[..., :rot] = torch.cat([o1, o2], dim=-1)
        else:
            xv[..., :rot] = torch.stack([o1, o2], dim=-1).flatten(-2)
        return xv.to(x.dtype).view_as(x)

    return one(q), one(k)


def extend_attention_ref(
    q: torch.Tensor,  # [T, Hq, D] ragged new tokens
    k_buf: torch.Tensor,
    v_buf: torch.Tensor,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    prefix_lens: Sequence[int],
    extend_lens: Sequence[int],
    scale: float,
) -> torch.Tensor:
    """Dense fp64 attention per request over req_to_token[row, :prefix+extend], causal."""
    hq, hkv = q.shape[1], k_buf.shape[1]
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    start = 0
    for i, (p, e) in enumerate(zip(prefix_lens, extend_lens)):
        slots = req_to_token[int(req_pool_indices[i]), : p + e].long()
        k = k_buf[slots].double().repeat_interleave(hq // hkv, dim=1)  # [S, Hq, D]
        v = v_buf[slots].double().repeat_interleave(hq // hkv, dim=1)
        qi = q[start: start + e].double()
        s = torch.einsum("thd,shd->hts", qi, k) * scale
        qpos = torch.arange(p, p + e, device=q.device)[:, None]
        kpos = torch.arange(p + e, device=q.device)[None, :]
        s = s.masked_fill(kpos > qpos, float("-inf"))
        out[start: start + e] = torch.einsum("hts,shd->thd", s.softmax(-1), v)
        start += e
    return out.to(q.dtype)
