"""CLIP-style preprocessing of images and video frames into the vision tower's crops, for LLaVA (one crop),
LLaVA-NeXT (base crop + any-resolution tiles) and LLaVA-NeXT-Video (one crop per sampled frame).

Per crop, as transformers' CLIP / LLaVA image processors: resize so the shortest edge is `shortest_edge`
(bicubic), centre-crop to `crop_size`, scale to [0, 1], normalise by mean/std. Any-resolution: the image is
resized to fit the chosen canvas (multimodal/anyres.py), centred on a black canvas, cut into crops, and
the whole image squashed to one crop goes first (the "base"). llava-1.5's `do_pad` pads to a square of
the mean colour first, as the original LLaVA did.

`MultimodalProcessor.process_image(src)` / `.process_video(path, num_frames)` -> `ProcessedInput` (pixels,
original size, content hash, token count); `tokens.expand_placeholders` then places them in a prompt.
CPU-only and independent of the model, so it can run in a worker pool off the scheduler's step.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from sglang.runtime.multimodal.anyres import fit_size, grid_shape, select_best_resolution
from sglang.runtime.multimodal.config import CLIP_MEAN, CLIP_STD, SIGLIP_MEAN, SIGLIP_STD, VisionLanguageConfig
from sglang.runtime.multimodal.hashing import hash_image, hash_video
from sglang.runtime.multimodal.image_io import load_image
from sglang.runtime.multimodal.inputs import IMAGE, VIDEO
from sglang.runtime.multimodal.tokens import image_token_count, video_token_count

BICUBIC = 3  # PIL.Image.Resampling.BICUBIC


@dataclass(frozen=True)
class ProcessorConfig:
    crop_size: int
    shortest_edge: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    resample: int = BICUBIC
    do_center_crop: bool = True
    do_pad: bool = False  # llava-1.5: pad to a square of the mean colour before resizing

    @classmethod
    def for_model(cls, vlm: VisionLanguageConfig, folder: Optional[str] = None) -> "ProcessorConfig":
        """From the folder's preprocessor_config.json when there is one, else the tower's defaults."""
        siglip = vlm.vision.model_type == "siglip_vision_model"
        side = vlm.vision.image_size
        mean, std = (SIGLIP_MEAN, SIGLIP_STD) if siglip else (CLIP_MEAN, CLIP_STD)
        raw: dict[str, Any] = {}
        path = os.path.join(folder, "preprocessor_config.json") if folder else None
        if path and os.path.isfile(path):
            with open(path) as fh:
                raw = json.load(fh)
        # "size" / "crop_size" are a dict ({"shortest_edge": n} or {"height": n, ...}) or, in old files, an int
        size, crop = raw.get("size") or {}, raw.get("crop_size") or {}
        shortest = (size.get("shortest_edge") or size.get("height")) if isinstance(size, dict) else size
        crop_side = crop.get("height") if isinstance(crop, dict) else crop
        return cls(
            crop_size=int(crop_side or side),
            shortest_edge=int(shortest or side),
            image_mean=tuple(raw.get("image_mean", mean)),
            image_std=tuple(raw.get("image_std", std)),
            rescale_factor=float(raw.get("rescale_factor", 1 / 255)),
            resample=int(raw.get("resample", BICUBIC)),
            # SigLIP's processor squashes to the square size instead of cropping
            do_center_crop=bool(raw.get("do_center_crop", not siglip)),
            do_pad=bool(raw.get("do_pad", False)) and vlm.kind == "llava",
        )


@dataclass
class ProcessedInput:
    modality: str  # IMAGE | VIDEO
    pixel_values: torch.Tensor  # [crops or frames, 3, crop, crop] float32
    image_size: tuple[int, int]  # (height, width) of the decoded image / frame
    hash: int
    num_tokens: int


# -- per-crop transform ---------------------------------------------------------------------------
def resize_shortest_edge(img, shortest: int, resample: int):
    """Resize so the shorter side is `shortest`, the longer scaled by the same factor (truncated)."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest * long / short)
    size = (shortest, new_long) if width <= height else (new_long, shortest)
    return img.resize(size, resample=resample)


def center_crop(arr: np.ndarray, crop: int) -> np.ndarray:
    """[H, W, C] -> [crop, crop, C] from the centre, zero-padded where the image is smaller."""
    height, width = arr.shape[:2]
    if height < crop or width < crop:
        padded = np.zeros((max(height, crop), max(width, crop), arr.shape[2]), dtype=arr.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = arr
        arr, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - crop) // 2, (width - crop) // 2
    return arr[top : top + crop, left : left + crop]


def normalize(arr: np.ndarray, cfg: ProcessorConfig) -> np.ndarray:
    """uint8 [H, W, C] -> float32 [C, H, W], rescaled and normalised."""
    x = arr.astype(np.float32) * np.float32(cfg.rescale_factor)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)
    std = np.asarray(cfg.image_std, dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


def crop_pixels(img, cfg: ProcessorConfig) -> np.ndarray:
    """One RGB PIL image -> one normalised crop [3, crop, crop]."""
    if cfg.do_center_crop:
        arr = center_crop(np.asarray(resize_shortest_edge(img, cfg.shortest_edge, cfg.resample)), cfg.crop_size)
    else:
        arr = np.asarray(img.resize((cfg.crop_size, cfg.crop_size), resample=cfg.resample))
    return normalize(arr, cfg)


def pad_to_square(img, fill: tuple[float, float, float]):
    from PIL import Image

    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), tuple(int(c * 255) for c in fill))
    canvas.paste(img, ((side - width) // 2, (side - height) // 2))
    return canvas


# -- any-resolution tiling ------------------------------------------------------------------------
def anyres_crops(img, vlm: VisionLanguageConfig, cfg: ProcessorConfig) -> np.ndarray:
    """[1 + rows*cols, 3, crop, crop]: the whole image as one crop, then the canvas tiles row by row."""
    from PIL import Image

    size = (img.height, img.width)
    canvas_h, canvas_w = select_best_resolution(size, vlm.image_grid_pinpoints)
    new_h, new_w = fit_size(size, (canvas_h, canvas_w))
    canvas = Image.new("RGB", (canvas_w, canvas_h), (0, 0, 0))
    canvas.paste(img.resize((new_w, new_h), resample=cfg.resample), ((canvas_w - new_w) // 2, (canvas_h - new_h) // 2))
    tile = cfg.crop_size
    rows, cols = grid_shape(size, vlm.image_grid_pinpoints, vlm.vision.image_size)
    tiles = [canvas.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    base = img.resize((cfg.shortest_edge, cfg.shortest_edge), resample=cfg.resample)
    return np.stack([crop_pixels(t, cfg) for t in [base, *tiles]])


class MultimodalProcessor:
    """Images and videos -> the model's pixel crops, sizes, hashes and token counts."""

    def __init__(self, vlm: VisionLanguageConfig, cfg: Optional[ProcessorConfig] = None) -> None:
        self.vlm = vlm
        self.cfg = cfg or ProcessorConfig.for_model(vlm)

    @classmethod
    def from_model_path(cls, folder: str, vlm: VisionLanguageConfig) -> "MultimodalProcessor":
        return cls(vlm, ProcessorConfig.for_model(vlm, folder))

    def process_image(self, src: Any) -> ProcessedInput:
        img = load_image(src)
        size = (img.height, img.width)
        digest = hash_image(np.asarray(img))
        if self.vlm.anyres:
            crops = anyres_crops(img, self.vlm, self.cfg)
        else:
            if self.cfg.do_pad:
                img = pad_to_square(img, self.cfg.image_mean)
            crops = crop_pixels(img, self.cfg)[None]
        return ProcessedInput(IMAGE, torch.from_numpy(crops), size, digest, image_token_count(self.vlm, size))

    def process_video(self, src: Any, num_frames: int) -> ProcessedInput:
        from PIL import Image

        from sglang.runtime.multimodal.video import load_video_frames

        frames = load_video_frames(src, num_frames)  # [T, H, W, 3] uint8
        pixels = np.stack([crop_pixels(Image.fromarray(f), self.cfg) for f in frames])
        size = (int(frames.shape[1]), int(frames.shape[2]))
        return ProcessedInput(VIDEO, torch.from_numpy(pixels), size, hash_video(frames),
                              video_token_count(self.vlm, len(frames)))
