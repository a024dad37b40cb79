"""Content hashes of decoded images and videos: the key of the feature cache and of the radix pad ids.

The hash covers the decoded pixels (and their shape), not the file bytes, so the same picture sent as a PNG
path and as a data URL is one image, while any pixel difference is another.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

HASH_BITS = 63  # fits a signed int64 tensor and a JSON integer


def hash_arrays(arrays: Iterable[np.ndarray], tag: str = "") -> int:
    """One 63-bit hash of arrays' shapes, dtypes and bytes, in order (`tag` separates modalities)."""
    h = hashlib.blake2b(tag.encode(), digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return int.from_bytes(h.digest(), "little") >> (64 - HASH_BITS)


def hash_image(pixels: np.ndarray) -> int:
    """Hash of one decoded image [H, W, C] uint8."""
    return hash_arrays([pixels], "image")


def hash_video(frames: np.ndarray) -> int:
    """Hash of decoded video frames [T, H, W, C] uint8 (the sampled ones: another sampling is another input)."""
    return hash_arrays([frames], "video")
