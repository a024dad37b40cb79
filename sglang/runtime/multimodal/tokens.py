"""How many placeholder tokens an image or video expands to, and the per-image pad ids that make those
tokens part of the radix-cache key.

The counts are the model's feature-row counts (models/llava.py produces exactly this many rows), computed
from sizes alone so the tokenizer side can expand a prompt before any pixels reach the model.

Radix key: every placeholder of a model is the same token id, so two prompts with different images would
share a "prefix". `radix_key_ids` replaces each item's run with ids derived from its content hash, placed
past the vocabulary so they never equal a text token: the same image in two requests gives the same key (its
KV is shared), a different image a different one. The model reads such ids as placeholders (it overwrites
their rows), so these ids can also be the ones it is fed.
"""
from __future__ import annotations

from typing import Optional, Sequence

from sglang.runtime.multimodal.anyres import grid_shape, unpadded_grid
from sglang.runtime.multimodal.config import VisionLanguageConfig
from sglang.runtime.multimodal.inputs import MultimodalItem

PAD_ID_RANGE = 1 << 30  # pad ids are vocab_size + (hash mod this): room for many distinct images


def image_token_count(vlm: VisionLanguageConfig, image_size: Optional[tuple[int, int]] = None) -> int:
    """Feature rows of one image of `image_size` (height, width): 576 for llava-1.5 (CLIP-L/14-336);
    LLaVA-NeXT adds the unpadded tile grid plus one newline per grid row."""
    base = vlm.tokens_per_crop
    if not vlm.anyres:
        return base
    if image_size is None:
        raise ValueError("an any-resolution model needs the image size to count its tokens")
    _check_size(image_size)
    side = vlm.vision.grid_side
    rows, cols = grid_shape(image_size, vlm.image_grid_pinpoints, vlm.vision.image_size)
    top, bottom, left, right = unpadded_grid(image_size, rows * side, cols * side)
    return base + (bottom - top) * (right - left + 1)


def video_token_count(vlm: VisionLanguageConfig, num_frames: int) -> int:
    """Feature rows of a video of `num_frames` frames: each frame's grid pooled by the spatial stride."""
    if vlm.kind != "llava_next_video":
        raise ValueError(f"{vlm.kind} models do not take videos (use a LLaVA-NeXT-Video model)")
    if num_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    pooled = vlm.vision.grid_side // vlm.spatial_pool_stride
    return num_frames * pooled * pooled


def pad_id(item_hash: int, vocab_size: int) -> int:
    return vocab_size + item_hash % PAD_ID_RANGE


def radix_key_ids(input_ids: Sequence[int], items: Sequence[MultimodalItem], vocab_size: int) -> list[int]:
    """`input_ids` with each item's placeholder run replaced by its hash-derived pad id (see module doc)."""
    out = list(input_ids)
    for item in items:
        if item.end > len(out):
            raise ValueError(f"{item.modality} at offset {item.offset} runs past the prompt ({len(out)} tokens)")
        out[item.offset : item.end] = [pad_id(item.hash, vocab_size)] * item.num_tokens
    return out


def _check_size(size: tuple[int, int]) -> None:
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image size must be (height, width) > 0, got {size}")


def expand_placeholders(
    input_ids: Sequence[int], inputs: Sequence, image_token_id: int, video_token_id: Optional[int] = None
) -> tuple[list[int], list[MultimodalItem]]:
    """A prompt with ONE placeholder token per image/video (what a chat template or `<image>` gives) ->
    the prompt with each placeholder repeated to its token count, and the items with their offsets.

    `inputs` are `processing.ProcessedInput`s in prompt order; their kinds must match the placeholders'."""
    ids: list[int] = []
    items: list[MultimodalItem] = []
    pending = list(inputs)
    for tok in input_ids:
        if tok != image_token_id and (video_token_id is None or tok != video_token_id):
            ids.append(tok)
            continue
        kind = "image" if tok == image_token_id else "video"
        if not pending:
            raise ValueError(f"the prompt has more {kind} placeholders than {kind}s given")
        inp = pending.pop(0)
        if inp.modality != kind:
            raise ValueError(f"placeholder {len(items) + 1} is for a {kind} but input {len(items) + 1} is a {inp.modality}")
        items.append(MultimodalItem(inp.modality, len(ids), inp.num_tokens, inp.hash,
                                    pixel_values=inp.pixel_values, image_size=inp.image_size))
        ids += [tok] * inp.num_tokens
    if pending:
        raise ValueError(f"{len(inputs)} images/videos given but the prompt has {len(items)} placeholders")
    return ids, items
