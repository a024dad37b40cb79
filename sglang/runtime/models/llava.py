"""LLaVA-family vision-language models over our Llama-family decoder and KV pool: LLaVA 1.5 (one crop per
image), LLaVA-NeXT / 1.6 (any-resolution crop grid, unpadded, an image-newline embedding closing each feature
row) and LLaVA-NeXT-Video (frames through the same tower, each frame's feature grid pooled).

    features = projector(vision_tower(crops)[feature layers])      # + any-res packing or video pooling
    embeds   = embed_tokens(input_ids); embeds[placeholder rows] = features
    hidden   = decoder(embeds) over the KV pool                      # models/llama.py, unchanged

The forward takes, per batch row, the request's `MultimodalItem`s (multimodal/inputs.py: pixels, the prompt
offset of its placeholder run, its token count). Only the items that overlap this forward's new tokens are
used, so a cached prefix (the image already in the KV pool) or a later prefill chunk costs nothing; features
are computed once per item (`item.features`) with all crops and frames of the batch in one vision-tower call.
Without items the forward is the text model's forward, untouched.

Checkpoint names: transformers' layouts old (`language_model.model.*`, `vision_tower.vision_model.*`) and new
(`model.language_model.*`, `model.vision_tower.*`, top-level `lm_head`) map onto ours (`checkpoint_name`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.layers.activation import get_activation
from sglang.runtime.layers.linear import Linear
from sglang.runtime.model_config import ModelConfig
from sglang.runtime.multimodal.anyres import grid_shape, unpadded_grid
from sglang.runtime.multimodal.config import VisionLanguageConfig
from sglang.runtime.multimodal.inputs import IMAGE, MultimodalItem
from sglang.runtime.models.llama import LlamaForCausalLM
from sglang.runtime.models.vision import VisionTower

# one row's items; None or empty = a text-only row
RowItems = Optional[Sequence[MultimodalItem]]


class LlavaProjector(nn.Module):
    """linear_1 -> act -> linear_2: vision features (concatenated feature layers) into the text hidden size."""

    def __init__(self, in_size: int, out_size: int, act: str, bias: bool, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.linear_1 = Linear(in_size, out_size, bias, dtype, device)
        self.act = get_activation(act)
        self.linear_2 = Linear(out_size, out_size, bias, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class VideoPooler(nn.Module):
    """LLaVA-NeXT-Video's spatial pooling of each frame's square feature grid (stride s: side -> side // s)."""

    def __init__(self, vlm: VisionLanguageConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.mode, self.stride = vlm.spatial_pool_mode, vlm.spatial_pool_stride
        if self.mode not in ("average", "max", "conv"):
            raise ValueError(f"spatial_pool_mode must be average|max|conv, got {self.mode!r}")
        if self.mode == "conv":
            h, s = vlm.vision.hidden_size, self.stride
            self.pool = nn.Module()
            self.pool.weight = nn.Parameter(torch.empty(h, h, s, s, dtype=dtype, device=device), requires_grad=False)
            self.pool.bias = nn.Parameter(torch.empty(h, dtype=dtype, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [frames, side*side, dim] -> [frames, side'^2, dim]
        frames, n, dim = x.shape
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"video pooling needs a square feature grid per frame, got {n} features")
        grid = x.view(frames, side, side, dim).permute(0, 3, 1, 2)
        if self.mode == "average":
            grid = F.avg_pool2d(grid, self.stride, self.stride)
        elif self.mode == "max":
            grid = F.max_pool2d(grid, self.stride, self.stride)
        else:
            grid = F.conv2d(grid, self.pool.weight, self.pool.bias, stride=self.stride)
        return grid.flatten(2).transpose(1, 2)


class LlavaForConditionalGeneration(nn.Module):
    """LLaVA / LLaVA-NeXT / LLaVA-NeXT-Video; which one is `config.vision.kind`."""

    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        if cfg.vision is None:
            raise ValueError(f"{cfg.architecture} needs a vision-language config (config.json has no vision_config?)")
        self.config = cfg
        self.vlm = vlm = cfg.vision
        self.vision_tower = VisionTower(vlm.vision, dtype, device)
        in_size = vlm.vision.hidden_size * len(vlm.feature_layers)
        self.multi_modal_projector = LlavaProjector(
            in_size, cfg.hidden_size, vlm.projector_act, vlm.projector_bias, dtype, device
        )
        self.image_newline = (
            nn.Parameter(torch.empty(cfg.hidden_size, dtype=dtype, device=device), requires_grad=False)
            if vlm.anyres else None
        )
        self.vision_resampler = VideoPooler(vlm, dtype, device) if vlm.kind == "llava_next_video" else None
        # the decoder sees a plain text config: the architecture name only picks the class
        self.language_model = LlamaForCausalLM(replace(cfg, architecture=vlm.text_architecture, vision=None), dtype, device)

    # -- the runner's model interface (same as LlamaForCausalLM) -------------------------------------
    @property
    def lm_head(self) -> Optional[Linear]:
        return self.language_model.lm_head

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.language_model.lm_head_weight

    def set_attention_backend(self, backend) -> None:
        self.language_model.set_attention_backend(backend)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: ForwardBatch,
        mm_items: Optional[Sequence[RowItems]] = None,
    ) -> torch.Tensor:
        """Final hidden states [num_tokens, hidden]; `mm_items[i]` are batch row i's images/videos."""
        if not mm_items or not any(mm_items):
            return self.language_model(input_ids, positions, batch)
        embeds = self.embed_multimodal(input_ids, batch, mm_items)
        return self.language_model(input_ids, positions, batch, input_embeds=embeds)

    # -- multimodal embedding -----------------------------------------------------------------------
    def embed_multimodal(
        self, input_ids: torch.Tensor, batch: ForwardBatch, mm_items: Sequence[RowItems]
    ) -> torch.Tensor:
        """Token embeddings with each placeholder row replaced by its item's feature row."""
        spans = self._item_spans(batch, mm_items)
        self.encode([item for item, _, _ in spans if item.features is None])
        vocab = self.config.vocab_size
        # placeholder ids may be per-image pad values past the vocab (radix keys); their rows are overwritten
        ids = torch.where(input_ids < vocab, input_ids, torch.zeros_like(input_ids))
        embeds = self.language_model.model.embed_tokens(ids)
        for item, dst, (lo, hi) in spans:
            feats = item.features
            if feats.shape[0] != item.num_tokens:
                raise ValueError(
                    f"{item.modality} at prompt offset {item.offset} has {feats.shape[0]} feature rows but "
                    f"{item.num_tokens} placeholder tokens"
                )
            embeds[dst : dst + hi - lo] = feats[lo:hi].to(embeds.dtype)
        return embeds

    def _item_spans(
        self, batch: ForwardBatch, mm_items: Sequence[RowItems]
    ) -> list[tuple[MultimodalItem, int, tuple[int, int]]]:
        """(item, first ragged row it fills, item-relative token range) for each item overlapping this forward."""
        if batch.mode.is_decode():
            raise ValueError("multimodal items belong to EXTEND batches (a decode step adds only text tokens)")
        if len(mm_items) != batch.batch_size:
            raise ValueError(f"mm_items has {len(mm_items)} rows for a batch of {batch.batch_size} requests")
        prefix = batch.extend_prefix_lens_cpu or batch.extend_prefix_lens.tolist()
        lens = batch.extend_seq_lens_cpu or batch.extend_seq_lens.tolist()
        spans, start = [], 0
        for row, items in enumerate(mm_items):
            for item in items or ():
                part = item.overlap(prefix[row], lens[row])
                if part is not None:
                    spans.append((item, start + item.offset + part[0] - prefix[row], part))
            start += lens[row]
        return spans

    @torch.inference_mode()
    def encode(self, items: Sequence[MultimodalItem]) -> None:
        """Fill `item.features` for every item: all crops and frames in ONE vision-tower call."""
        if not items:
            return
        pixels = [item.pixel_values for item in items]
        if any(p is None for p in pixels):
            raise ValueError("an item without features needs pixel_values")
        dev = self.multi_modal_projector.linear_1.weight.device
        crops = torch.cat([p.to(dev) for p in pixels], dim=0)
        states = self.vision_tower(crops, self.vlm.feature_layers)
        feats = torch.cat(states, dim=-1) if len(states) > 1 else states[0]
        if self.vlm.drops_first_feature:
            feats = feats[:, 1:]
        for item, part in zip(items, feats.split([p.shape[0] for p in pixels], dim=0)):
            item.features = self._item_features(item, part)

    def _item_features(self, item: MultimodalItem, feats: torch.Tensor) -> torch.Tensor:
        """One item's per-crop vision features [crops, n, dim] -> its token embeddings [tokens, hidden]."""
        if item.modality != IMAGE:
            if self.vision_resampler is None:
                raise ValueError(f"{self.config.architecture} does not take videos")
            return self.multi_modal_projector(self.vision_resampler(feats)).flatten(0, 1)
        projected = self.multi_modal_projector(feats)
        if not self.vlm.anyres:
            return projected.flatten(0, 1)
        return self._pack_anyres(projected, item.image_size)

    def _pack_anyres(self, feats: torch.Tensor, size: Optional[tuple[int, int]]) -> torch.Tensor:
        """Base crop's features, then the tile grid's feature map without its padding rows/cols, each map row
        closed by image_newline (LLaVA-NeXT's layout)."""
        if size is None:
            raise ValueError("an any-resolution image needs its original image_size (height, width)")
        vlm = self.vlm
        side = vlm.vision.grid_side
        rows, cols = grid_shape(size, vlm.image_grid_pinpoints, vlm.vision.image_size)
        base, tiles = feats[0], feats[1:]
        if tiles.shape[0] != rows * cols:
            raise ValueError(f"image of size {size} needs {rows * cols + 1} crops, got {feats.shape[0]}")
        # [rows*cols, side*side, d] -> [rows*side, cols*side, d]: tiles laid out as the image they came from
        grid = tiles.view(rows, cols, side, side, -1).permute(0, 2, 1, 3, 4).reshape(rows * side, cols * side, -1)
        top, bottom, left, right = unpadded_grid(size, rows * side, cols * side)
        grid = grid[top:bottom, left:right]
        newline = self.image_newline.to(grid.dtype).expand(grid.shape[0], 1, -1)
        return torch.cat([base, torch.cat([grid, newline], dim=1).flatten(0, 1)], dim=0)

    # -- loading --------------------------------------------------------------------------------------
    stacked_params = LlamaForCausalLM.stacked_params
    ignored_suffixes = LlamaForCausalLM.ignored_suffixes
    lm_head_param = "language_model.lm_head.weight"
    embed_param = "language_model.model.embed_tokens.weight"

    @staticmethod
    def checkpoint_name(name: str) -> Optional[str]:
        """A transformers checkpoint name (old or new Llava layout) as our parameter name; None = unused."""
        if name.startswith("model.language_model."):
            return "language_model.model." + name.removeprefix("model.language_model.")
        if name in ("lm_head.weight", "language_model.lm_head.weight"):
            return "language_model.lm_head.weight"
        name = name.removeprefix("model.")
        if name.startswith("vision_tower."):
            rest = name.removeprefix("vision_tower.").removeprefix("vision_model.")
            if rest.startswith(VisionTower.unused_prefixes):
                return None
            return "vision_tower." + rest
        return name
