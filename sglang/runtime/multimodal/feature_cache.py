"""`FeatureCache`: projected image/video features by content hash, least recently used out first, within a
byte budget, so an image sent again (in another request, or the same request retracted and redone) skips
preprocessing's expensive half, the vision tower.

The runtime fills items from it before a forward (`fill`) and stores what the model computed after (`store`).
The cache is keyed by the hash alone: one cache serves one model (features differ between models).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch

from sglang.runtime.multimodal.inputs import MultimodalItem


class FeatureCache:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.hits = self.misses = 0
        self._entries: "OrderedDict[int, torch.Tensor]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: int) -> Optional[torch.Tensor]:
        feats = self._entries.get(key)
        if feats is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return feats

    def put(self, key: int, feats: torch.Tensor) -> None:
        size = feats.numel() * feats.element_size()
        if size > self.max_bytes:
            return  # larger than the whole budget: caching it would evict everything for one entry
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old.numel() * old.element_size()
        self._entries[key] = feats
        self.used_bytes += size
        while self.used_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.used_bytes -= evicted.numel() * evicted.element_size()

    def fill(self, items: Sequence[MultimodalItem]) -> None:
        """Give items without features the cached ones of the same content."""
        for item in items:
            if item.features is None:
                item.features = self.get(item.hash)

    def store(self, items: Sequence[MultimodalItem]) -> None:
        for item in items:
            if item.features is not None:
                self.put(item.hash, item.features)
