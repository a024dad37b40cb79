"""What a request carries for its images and videos, between preprocessing and the model forward.

A `MultimodalItem` is one image or one video: its preprocessed pixels (crops or frames), where its run of
placeholder tokens starts in the request's prompt (`offset`), how many tokens it expands to, and its
content hash. The model fills `features` once (the projected embeddings, one row per placeholder token);
a runtime cache keyed by `hash` can hand them to later requests, which then skip the vision tower.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

IMAGE, VIDEO = "image", "video"


@dataclass
class MultimodalItem:
    modality: str  # IMAGE | VIDEO
    offset: int  # prompt position of the item's first placeholder token
    num_tokens: int  # placeholder tokens = feature rows
    hash: int  # content hash of the decoded pixels (multimodal/hashing.py)
    pixel_values: Optional[torch.Tensor] = None  # image: [crops, C, H, W]; video: [frames, C, H, W]
    image_size: Optional[tuple[int, int]] = None  # (height, width) before preprocessing; any-res layout needs it
    features: Optional[torch.Tensor] = None  # [num_tokens, hidden] once computed (or taken from a cache)

    def __post_init__(self) -> None:
        if self.modality not in (IMAGE, VIDEO):
            raise ValueError(f"modality must be {IMAGE!r} or {VIDEO!r}, got {self.modality!r}")
        if self.pixel_values is None and self.features is None:
            raise ValueError("a multimodal item needs pixel_values or precomputed features")

    @property
    def end(self) -> int:
        return self.offset + self.num_tokens

    def overlap(self, start: int, length: int) -> Optional[tuple[int, int]]:
        """The part of the item's token run inside prompt positions [start, start+length), as item-relative
        (lo, hi); None when disjoint (the run is in a cached prefix or a later chunk)."""
        lo, hi = max(self.offset, start), min(self.end, start + length)
        return (lo - self.offset, hi - self.offset) if lo < hi else None
