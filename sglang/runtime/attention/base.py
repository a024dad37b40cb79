"""The attention backend interface. A backend stores the new K/V into the token pool and attends the new
queries to the whole sequence (cached prefix + new tokens, causal among the new ones).

Every backend must give the same result as `TorchAttentionBackend` (the reference) within dtype bounds.
"""
from __future__ import annotations

import abc

import torch

from sglang.runtime.forward_batch import ForwardBatch


class AttentionBackend(abc.ABC):
    """One instance per model runner. Stateless across forwards apart from `init_forward_metadata`."""

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        """Precompute per-batch metadata (index arrays, plans) once per forward, before layer 0."""

    @abc.abstractmethod
    def forward(
        self,
        q: torch.Tensor,  # [num_tokens, num_heads, head_dim]
        k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim]
        layer_id: int,
        batch: ForwardBatch,
        scaling: float,
    ) -> torch.Tensor:  # [num_tokens, num_heads * head_dim]
        """Write k, v to batch.kv_pool at batch.out_cache_loc for `layer_id`, then attend."""

    def needs_eager(self, batch: ForwardBatch) -> bool:
        """Whether this batch must run eagerly even where a CUDA graph exists (e.g. cascade decode, whose
        grid follows the batch's prefix grouping). Backends without such batches never need it."""
        return False
