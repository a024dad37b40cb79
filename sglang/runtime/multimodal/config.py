"""Vision-language model facts read from an HF config.json of transformers' Llava / LlavaNext / LlavaNextVideo
layouts: the vision tower (CLIP-ViT or SigLIP), the projector, the image/video placeholder tokens, the
any-resolution grid and the video pooling.

Published configs are partial (llava-1.5-7b's `text_config` names little more than its model type): the
missing keys are filled with transformers' defaults for that model type, as transformers itself does, so a
published config.json yields the published shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

# architecture -> the LLaVA variant it is (how image features are laid out)
VLM_ARCHITECTURES = {
    "LlavaForConditionalGeneration": "llava",
    "LlavaNextForConditionalGeneration": "llava_next",
    "LlavaNextVideoForConditionalGeneration": "llava_next_video",
}
VISION_TOWER_TYPES = ("clip_vision_model", "siglip_vision_model")
# text model type -> our decoder's architecture name (models/llama.py covers all three)
TEXT_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# CLIP's and SigLIP's normalisation (used when the folder has no preprocessor_config.json)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionConfig:
    """A ViT vision tower: CLIP (class token, pre-layernorm) or SigLIP (neither)."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int
    layer_norm_eps: float
    hidden_act: str

    @property
    def has_class_token(self) -> bool:
        return self.model_type == "clip_vision_model"

    @property
    def grid_side(self) -> int:
        """Patches along one side of a crop (24 for 336 px / 14 px patches)."""
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class VisionLanguageConfig:
    kind: str  # llava | llava_next | llava_next_video
    vision: VisionConfig
    text_architecture: str
    image_token_id: int
    video_token_id: Optional[int]
    feature_layers: tuple[int, ...]  # vision hidden-state indices whose features are concatenated
    select_strategy: str  # "default": drop the class token; "full": keep every position
    projector_act: str
    projector_bias: bool
    image_grid_pinpoints: tuple[tuple[int, int], ...]  # (height, width) canvases of any-resolution tiling
    spatial_pool_mode: str  # video: average | max | conv
    spatial_pool_stride: int

    @property
    def anyres(self) -> bool:
        return self.kind in ("llava_next", "llava_next_video")

    @property
    def drops_first_feature(self) -> bool:
        """"default" drops position 0 (CLIP's class token). transformers drops it for a tower without one
        (SigLIP) too, losing a patch; we do the same, so token counts and logits match it."""
        return self.select_strategy == "default"

    @property
    def tokens_per_crop(self) -> int:
        """Features of one 336-px crop after the select strategy (576 for CLIP-L/14-336, "default")."""
        n = self.vision.grid_side**2 + (1 if self.vision.has_class_token else 0)
        return n - 1 if self.drops_first_feature else n


def is_vlm_config(cfg: dict[str, Any]) -> bool:
    return any(a in VLM_ARCHITECTURES for a in cfg.get("architectures") or [])


def complete_sub_config(sub: dict[str, Any], default_type: str, where: str) -> dict[str, Any]:
    """A text_config / vision_config with transformers' defaults for its model type filled in."""
    from transformers import AutoConfig

    model_type = sub.get("model_type", default_type)
    known = {k: v for k, v in sub.items() if k != "model_type"}
    try:
        full = AutoConfig.for_model(model_type, **known).to_dict()
    except ValueError as exc:
        raise ValueError(f"{where}: unknown model_type {model_type!r} ({exc})") from None
    full["model_type"] = model_type
    return full


def text_config_dict(cfg: dict[str, Any]) -> dict[str, Any]:
    """The language model's config of a VLM config, completed, with an architecture our decoder knows."""
    text = complete_sub_config(cfg.get("text_config") or {}, "llama", "text_config")
    arch = TEXT_ARCHITECTURES.get(text["model_type"])
    if arch is None:
        raise ValueError(
            f"vision-language model with text model {text['model_type']!r} is not supported; "
            f"supported: {', '.join(TEXT_ARCHITECTURES)}"
        )
    text["architectures"] = [arch]
    # the top level may carry what the text part leaves out (older exports)
    for key in ("tie_word_embeddings", "eos_token_id", "bos_token_id", "dtype", "torch_dtype"):
        if text.get(key) is None and cfg.get(key) is not None:
            text[key] = cfg[key]
    if text.get("dtype") is None and text.get("torch_dtype") is None:
        text["dtype"] = "float32"
    return text


def parse_vision_language_config(cfg: dict[str, Any], text_architecture: str) -> VisionLanguageConfig:
    kind = next(VLM_ARCHITECTURES[a] for a in cfg["architectures"] if a in VLM_ARCHITECTURES)
    v = complete_sub_config(cfg.get("vision_config") or {}, "clip_vision_model", "vision_config")
    if v["model_type"] not in VISION_TOWER_TYPES:
        raise ValueError(f"vision tower {v['model_type']!r} is not supported; supported: {', '.join(VISION_TOWER_TYPES)}")
    vision = VisionConfig(
        model_type=v["model_type"],
        hidden_size=int(v["hidden_size"]),
        intermediate_size=int(v["intermediate_size"]),
        num_layers=int(v["num_hidden_layers"]),
        num_heads=int(v["num_attention_heads"]),
        image_size=int(v["image_size"]),
        patch_size=int(v["patch_size"]),
        num_channels=int(v.get("num_channels", 3)),
        layer_norm_eps=float(v.get("layer_norm_eps", 1e-5)),
        hidden_act=str(v.get("hidden_act", "quick_gelu")),
    )
    layer = cfg.get("vision_feature_layer", -2)
    layers = (int(layer),) if isinstance(layer, int) else tuple(int(x) for x in layer)
    strategy = cfg.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise ValueError(f"vision_feature_select_strategy must be default|full, got {strategy!r}")
    image_token = cfg.get("image_token_id", cfg.get("image_token_index"))
    if image_token is None:
        raise ValueError("vision-language config lacks image_token_index (the image placeholder token id)")
    video_token = cfg.get("video_token_id", cfg.get("video_token_index"))
    pins = cfg.get("image_grid_pinpoints") or [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    return VisionLanguageConfig(
        kind=kind,
        vision=vision,
        text_architecture=text_architecture,
        image_token_id=int(image_token),
        video_token_id=int(video_token) if video_token is not None else None,
        feature_layers=layers,
        select_strategy=strategy,
        projector_act=str(cfg.get("projector_hidden_act", "gelu")),
        projector_bias=bool(cfg.get("multimodal_projector_bias", True)),
        image_grid_pinpoints=tuple((int(h), int(w)) for h, w in pins),
        spatial_pool_mode=str(cfg.get("spatial_pool_mode", "average")),
        spatial_pool_stride=int(cfg.get("spatial_pool_stride", 2)),
    )
