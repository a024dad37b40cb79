"""KV storage: a token-level KV pool (page size 1, as RadixAttention) and the request -> token table.

Storage only: which prefixes are cached is the radix cache's business, which requests run is the
scheduler's. Slot 0 of the KV pool is never handed out: padded batch entries (CUDA graphs) write there.
"""
from __future__ import annotations

from typing import Optional

import torch


class ReqToTokenPool:
    """Row r maps request r's token positions to KV-pool slots: req_to_token[r, pos] = slot."""

    def __init__(self, size: int, max_context_len: int, device: torch.device | str) -> None:
        self.size = size
        self.max_context_len = max_context_len
        self.device = torch.device(device)
        self.req_to_token = torch.zeros((size, max_context_len), dtype=torch.int64, device=self.device)
        self._free: list[int] = list(range(size))

    def available_size(self) -> int:
        return len(self._free)

    def alloc(self) -> Optional[int]:
        return self._free.pop() if self._free else None

    def free(self, index: int) -> None:
        self._free.append(index)

    def write(self, index: int, start: int, slots: torch.Tensor) -> None:
        self.req_to_token[index, start : start + slots.numel()] = slots.to(self.device)

    def clear(self) -> None:
        self._free = list(range(self.size))


class TokenKVPool:
    """Per-layer K and V buffers of shape [size + 1, num_kv_heads, head_dim]; slot 0 is the pad slot."""

    def __init__(
        self,
        size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        self.size = size
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (size + 1, num_kv_heads, head_dim)
        self.k_buffer = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.v_buffer = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(num_layers)]
        self.clear()

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    # -- allocation -------------------------------------------------------------------------------
    def available_size(self) -> int:
        return int(self._free.numel()) + self._num_released

    def alloc(self, n: int) -> Optional[torch.Tensor]:
        """n free slots (int64, on the pool's device), or None when fewer than n are free. Slots come in the
        order they were freed (the released ones after the rest)."""
        if n > self.available_size():
            return None
        if n > self._free.numel():
            self._merge_released()
        out, self._free = self._free[:n], self._free[n:]
        return out

    def free(self, slots: torch.Tensor) -> None:
        """Give slots back. They are kept aside and joined to the free list only when an allocation needs
        them: concatenating onto the whole free list (millions of slots) at every free made a burst of
        finishing requests cost pool size x requests."""
        if slots.numel():
            self._released.append(slots.to(self.device, torch.int64))
            self._num_released += int(slots.numel())

    def free_slots(self) -> torch.Tensor:
        """Every free slot, in allocation order (checks and tests)."""
        self._merge_released()
        return self._free

    def _merge_released(self) -> None:
        if self._released:
            self._free = torch.cat([self._free, *self._released])
            self._released, self._num_released = [], 0

    def clear(self) -> None:
        self._free = torch.arange(1, self.size + 1, dtype=torch.int64, device=self.device)
        self._released: list[torch.Tensor] = []
        self._num_released = 0

    # -- data -------------------------------------------------------------------------------------
    def set_kv(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k_buffer[layer_id][slots] = k.to(self.dtype)
        self.v_buffer[layer_id][slots] = v.to(self.dtype)

    def get_kv(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k_buffer[layer_id], self.v_buffer[layer_id]
