"""Linear layers and the vocab embedding, with weights created uninitialised on the target device.

Fused projections (qkv_proj, gate_up_proj) are one weight made of named row shards; the loader copies each
checkpoint tensor (q_proj, k_proj, ...) into its shard, so the model does one matmul instead of three.

Tensor parallelism (runtime/distributed.py): a "column" Linear keeps this rank's 1/tp of the output rows (of
each fused shard), a "row" Linear its 1/tp of the input columns and sums the partial outputs over the ranks.
Parameters carry `tp_dim` (0 or 1) so the loader slices checkpoint (and dummy) tensors the same way.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sglang.runtime.distributed import get_tp_rank, get_tp_size, tensor_model_parallel_all_reduce


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    # torch.empty: the loader (checkpoint or dummy init) writes every element; no wasted init pass
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class Linear(nn.Module):
    """y = x W^T (+ b). `shards` maps a shard name to its output size, in row order (fused weights).

    Sizes are the full (unsharded) ones; `parallel` = "column" | "row" | None (replicated) says how the
    weight splits over the tp ranks this layer is built for (distributed.tp_context)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        dtype: torch.dtype,
        device: torch.device,
        shards: Optional[dict[str, int]] = None,
        parallel: Optional[str] = None,
    ) -> None:
        super().__init__()
        tp = get_tp_size() if parallel is not None else 1
        self.tp_rank, self.tp_size = (get_tp_rank(), tp) if tp > 1 else (0, 1)
        self.reduce = parallel == "row" and tp > 1
        if tp > 1:
            dim_size = out_features if parallel == "column" else in_features
            if parallel not in ("column", "row") or dim_size % tp or any(v % tp for v in (shards or {}).values()):
                raise ValueError(f"Linear({in_features}, {out_features}, parallel={parallel!r}) cannot split over tp_size={tp}")
            if parallel == "column":
                out_features //= tp
                shards = {k: v // tp for k, v in shards.items()} if shards else None
            else:
                in_features //= tp
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param((out_features, in_features), dtype, device)
        self.bias = _param((out_features,), dtype, device) if bias else None
        if shards is not None:
            if sum(shards.values()) != out_features:
                raise ValueError(f"shard sizes {shards} do not add up to out_features {out_features}")
            offsets, start = {}, 0
            for name, size in shards.items():
                offsets[name] = (start, size)
                start += size
            # the loader reads this attribute to place each checkpoint tensor
            for p in (self.weight, self.bias):
                if p is not None:
                    p.shard_offsets = offsets
        if self.tp_size > 1:  # the loader's cue: which dim of the full tensor is split, and this rank's part
            self.weight.tp_dim = 0 if parallel == "column" else 1
            if self.bias is not None and parallel == "column":
                self.bias.tp_dim = 0  # a row-parallel bias stays whole: added once, after the sum
            for p in (self.weight, self.bias):
                if p is not None:
                    p.tp_rank, p.tp_size = self.tp_rank, self.tp_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.reduce:
            return F.linear(x, self.weight, self.bias)
        out = tensor_model_parallel_all_reduce(F.linear(x, self.weight))
        return out if self.bias is None else out + self.bias


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.weight = _param((vocab_size, hidden_size), dtype, device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)
