"""The attention layer of a model: hands q, k, v to the runner's AttentionBackend (which stores k, v in the
token KV pool and attends over the cached prefix plus the new tokens)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from sglang.runtime.forward_batch import ForwardBatch

if TYPE_CHECKING:
    from sglang.runtime.attention.base import AttentionBackend


class Attention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, layer_id: int, scaling: float) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.layer_id = layer_id
        self.scaling = scaling
        # set by the model runner (not a submodule: backends hold no parameters)
        self.backend: Optional["AttentionBackend"] = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        if self.backend is None:
            raise RuntimeError("attention backend not set: call model.set_attention_backend(backend) first")
        t = q.shape[0]
        return self.backend.forward(
            q.reshape(t, self.num_heads, self.head_dim),
            k.reshape(t, self.num_kv_heads, self.head_dim),
            v.reshape(t, self.num_kv_heads, self.head_dim),
            self.layer_id,
            batch,
            self.scaling,
        )
