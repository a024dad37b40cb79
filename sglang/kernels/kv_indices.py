"""Flatten req_to_token rows into one index array (the CSR "indices" a paged attention kernel reads):

    indices[indptr[b] : indptr[b+1]] = req_to_token[req_pool_indices[b], start[b] : start[b] + len[b]]

A torch version needs a boolean gather (a host sync); this kernel reads lengths on the device, so it
can run inside a CUDA graph or right before one without waiting for the GPU.
"""
from __future__ import annotations

from typing import Optional

import torch

from sglang.kernels._triton import require_triton, tl, triton

require_triton()


@triton.jit
def _kv_indices_kernel(REQ_TO_TOKEN, REQ_IDX, INDPTR, STARTS, OUT, stride_r2t,
                       HAS_START: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    req = tl.load(REQ_IDX + b).to(tl.int64)
    lo = tl.load(INDPTR + b).to(tl.int64)
    n = tl.load(INDPTR + b + 1).to(tl.int64) - lo
    start = 0
    if HAS_START:
        start = tl.load(STARTS + b).to(tl.int64)
    for i0 in range(0, n, BLOCK):
        offs = i0 + tl.arange(0, BLOCK)
        mask = offs < n
        slot = tl.load(REQ_TO_TOKEN + req * stride_r2t + start + offs, mask=mask, other=0)
        tl.store(OUT + lo + offs, slot.to(OUT.dtype.element_ty), mask=mask)


def build_kv_indices(
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,
    indptr: torch.Tensor,  # [bs + 1], indptr[b+1] - indptr[b] = number of slots of request b
    out: torch.Tensor,  # [>= indptr[-1]], int32 usually
    starts: Optional[torch.Tensor] = None,  # [bs] first position to take (default 0)
) -> torch.Tensor:
    bs = req_pool_indices.shape[0]
    if indptr.shape[0] != bs + 1:
        raise ValueError(f"build_kv_indices: indptr has {indptr.shape[0]} entries, expected {bs + 1}")
    if bs:
        _kv_indices_kernel[(bs,)](req_to_token, req_pool_indices, indptr, starts if starts is not None else indptr,
                                  out, req_to_token.stride(0), HAS_START=starts is not None, BLOCK=512)
    return out
