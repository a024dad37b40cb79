"""Linear layers and the vocab embedding, with weights created uninitialised on the target device.

Fused projections (qkv_proj, gate_up_proj) are one weight made of named row shards; the loader copies each
checkpoint tensor (q_proj, k_proj, ...) into its shard, so the model does one matmul instead of three.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> nn.Parameter:
    # torch.empty: the loader (checkpoint or dummy init) writes every element; no wasted init pass
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class Linear(nn.Module):
    """y = x W^T (+ b). `shards` maps a shard name to its output size, in row order (fused weights)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        dtype: torch.dtype,
        device: torch.device,
        shards: Optional[dict[str, int]] = None,
    ) -> None:
        super().__init__()
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.weight = _param((vocab_size, hidden_size), dtype, device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)
