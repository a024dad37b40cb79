"""SiLU(gate) * up over a merged gate_up projection output."""
from __future__ import annotations

import torch
from torch import nn

from sglang.runtime.layers.ops import get_op


class SiluAndMul(nn.Module):
    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self._op = get_op("silu_and_mul", device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, 2I] -> [T, I]
        return self._op(x)
