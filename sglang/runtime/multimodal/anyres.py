"""Any-resolution tiling (LLaVA-NeXT): which canvas an image is fitted to, the crop grid it becomes, and how
much of the feature grid is padding. Pure arithmetic on sizes, shared by the preprocessor (resize + pad +
crop), the model (unpad + newline) and the token count, so the three always agree.

Sizes are (height, width) throughout, as transformers' `image_sizes` and `image_grid_pinpoints`.
"""
from __future__ import annotations

import math
from typing import Sequence


def select_best_resolution(size: tuple[int, int], pinpoints: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The canvas that keeps the most of the image's pixels after an aspect-preserving downscale, ties going
    to the one that wastes the least area (LLaVA-NeXT's rule)."""
    height, width = size
    best, best_effective, best_waste = None, 0, float("inf")
    for cand_h, cand_w in pinpoints:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = cand_w * cand_h - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (cand_h, cand_w), effective, waste
    if best is None:
        raise ValueError(f"no any-resolution canvas fits an image of size {size} (pinpoints {list(pinpoints)})")
    return best


def grid_shape(size: tuple[int, int], pinpoints: Sequence[tuple[int, int]], crop: int) -> tuple[int, int]:
    """(rows, cols) of `crop`-pixel tiles covering the image's canvas."""
    canvas_h, canvas_w = select_best_resolution(size, pinpoints)
    return canvas_h // crop, canvas_w // crop


def num_crops(size: tuple[int, int], pinpoints: Sequence[tuple[int, int]], crop: int) -> int:
    """Crops fed to the vision tower for one image: the grid's tiles plus the whole image resized (the base)."""
    rows, cols = grid_shape(size, pinpoints, crop)
    return rows * cols + 1


def fit_size(size: tuple[int, int], canvas: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) of the image scaled to fit inside `canvas` with its aspect ratio kept (the rest of
    the canvas is padding, split evenly on both sides). Rounds up, as LLaVA-NeXT's preprocessor does."""
    height, width = size
    canvas_h, canvas_w = canvas
    scale_w, scale_h = canvas_w / width, canvas_h / height
    if scale_w < scale_h:
        return min(canvas_h, math.ceil(height * scale_w)), canvas_w
    return canvas_h, min(canvas_w, math.ceil(width * scale_h))


def unpadded_grid(size: tuple[int, int], grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
    """Rows/cols of a (grid_h, grid_w) feature grid that show the image rather than padding:
    (top, bottom, left, right) slice bounds. The image of `size` was fitted into the grid's aspect ratio and
    centred, so the padding is on two opposite sides."""
    height, width = size
    if width / height > grid_w / grid_h:  # wider than the grid: padding above and below
        new_h = int(round(height * (grid_w / width), 7))
        pad = (grid_h - new_h) // 2
        return pad, grid_h - pad, 0, grid_w
    new_w = int(round(width * (grid_h / height), 7))
    pad = (grid_w - new_w) // 2
    return 0, grid_h, pad, grid_w - pad
