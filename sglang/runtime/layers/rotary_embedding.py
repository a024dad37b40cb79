"""Rotary position embedding (neox style: rotate the two halves of each head), with a precomputed
cos/sin cache and the `linear` and Llama-3 (`llama3`) frequency scalings."""
from __future__ import annotations

import math

import torch
from torch import nn

from sglang.runtime.model_config import RopeScaling
from sglang.runtime.layers.ops import get_op


def rope_inv_freq(rot_dim: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """fp32 inverse frequencies [rot_dim / 2] after scaling (fp32 as HF computes them, so that angles at
    long positions agree with the reference to the last bit that matters)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rot_dim, 2, dtype=torch.int64).float() / rot_dim))
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    if scaling.rope_type == "llama3":
        # Long wavelengths (low frequencies) are slowed down by `factor`, short ones kept, and the
        # band between the two cut-offs interpolated linearly in (context / wavelength).
        old_ctx = scaling.original_max_position_embeddings
        low_wavelen = old_ctx / scaling.low_freq_factor
        high_wavelen = old_ctx / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        smooth = (old_ctx / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
        blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, blended, scaled)
    return inv_freq


def cos_sin_cache(rot_dim: int, max_positions: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """fp32 [max_positions, rot_dim]: cos of the rot_dim/2 angles, then their sin."""
    inv_freq = rope_inv_freq(rot_dim, theta, scaling)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(
        self,
        head_dim: int,
        max_positions: int,
        theta: float,
        scaling: RopeScaling,
        device: torch.device,
        is_neox: bool = True,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.is_neox = is_neox
        self.register_buffer(
            "cos_sin_cache", cos_sin_cache(head_dim, max_positions, theta, scaling).to(device), persistent=False
        )
        self._op = get_op("apply_rotary", device)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._op(positions, q, k, self.head_dim, self.cos_sin_cache, self.is_neox)
