"""ModelConfig: the model facts the runtime needs, read once from an HF folder's config.json.

Accepts both config styles: transformers 4 (`rope_theta` + `rope_scaling`) and transformers 5
(`rope_parameters` dict holding theta and the scaling type). A vision-language config (Llava, LlavaNext,
LlavaNextVideo) reads its text model's facts from `text_config` and carries the rest in `vision`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import torch

from sglang.runtime.multimodal.config import (
    VLM_ARCHITECTURES,
    VisionLanguageConfig,
    is_vlm_config,
    parse_vision_language_config,
    text_config_dict,
)

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    key = str(name).removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype {name!r} is not supported; use one of {sorted(_DTYPES)}")
    return _DTYPES[key]


@dataclass(frozen=True)
class RopeScaling:
    """Rotary scaling. `default`: none; `linear`: positions / factor; `llama3`: per-frequency blend."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    path: str
    architecture: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float
    rope_scaling: RopeScaling
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool  # per-head RMSNorm of q and k before rotary (Qwen3)
    max_position_embeddings: int
    context_len: int
    eos_token_ids: tuple[int, ...]
    bos_token_id: Optional[int]
    dtype: torch.dtype  # the checkpoint's dtype (config "dtype"/"torch_dtype"); the runner picks the run dtype
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    vision: Optional[VisionLanguageConfig] = None  # set for vision-language models (multimodal/config.py)

    @property
    def is_multimodal(self) -> bool:
        return self.vision is not None

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_path(cls, path: str, context_length: Optional[int] = None) -> "ModelConfig":
        f = os.path.join(path, "config.json")
        if not os.path.isfile(f):
            raise ValueError(f"model folder {path!r} has no config.json")
        with open(f) as fh:
            cfg = json.load(fh)
        return cls.from_dict(cfg, path=path, context_length=context_length, extra_eos=config_eos_ids(path))

    @classmethod
    def from_dict(
        cls,
        cfg: dict[str, Any],
        path: str = "",
        context_length: Optional[int] = None,
        extra_eos: Optional[set[int]] = None,
    ) -> "ModelConfig":
        archs = cfg.get("architectures") or []
        if is_vlm_config(cfg):
            return cls._from_vlm_dict(cfg, path, context_length, extra_eos)
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise ValueError(
                f"unsupported model architecture {archs or cfg.get('model_type')!r} in {path or 'config'}; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES + tuple(VLM_ARCHITECTURES))}"
            )
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"hidden_act {act!r} is not supported (only silu)")
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            layers = int(cfg["num_hidden_layers"])
            inter = int(cfg["intermediate_size"])
            vocab = int(cfg["vocab_size"])
        except KeyError as e:
            raise ValueError(f"config.json in {path or '?'} lacks required key {e.args[0]!r}") from None
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise ValueError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        theta, scaling = _rope(cfg)
        max_pos = int(cfg.get("max_position_embeddings") or 2048)
        if context_length is not None and context_length <= 0:
            raise ValueError(f"context_length must be positive, got {context_length}")
        # Qwen2 always has q/k/v biases (its config has no flag for it); Llama/Mistral say it in attention_bias.
        bias = True if arch == "Qwen2ForCausalLM" else bool(cfg.get("attention_bias", False))
        eos = _ids(cfg.get("eos_token_id")) | (extra_eos or set())
        return cls(
            path=path,
            architecture=arch,
            model_type=str(cfg.get("model_type", "")),
            hidden_size=hidden,
            intermediate_size=inter,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=vocab,
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bias,
            qk_norm=arch == "Qwen3ForCausalLM",
            max_position_embeddings=max_pos,
            context_len=int(context_length) if context_length is not None else max_pos,
            eos_token_ids=tuple(sorted(eos)),
            bos_token_id=cfg.get("bos_token_id") if isinstance(cfg.get("bos_token_id"), int) else None,
            dtype=parse_dtype(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"),
            hf_config=dict(cfg),
        )

    @classmethod
    def _from_vlm_dict(
        cls, cfg: dict[str, Any], path: str, context_length: Optional[int], extra_eos: Optional[set[int]]
    ) -> "ModelConfig":
        """The text model's config, renamed to the VLM architecture, with the vision facts attached."""
        text = text_config_dict(cfg)
        base = cls.from_dict(text, path=path, context_length=context_length, extra_eos=extra_eos)
        arch = next(a for a in cfg["architectures"] if a in VLM_ARCHITECTURES)
        vision = parse_vision_language_config(cfg, base.architecture)
        return replace(base, architecture=arch, model_type=str(cfg.get("model_type", "")), vision=vision,
                       hf_config=dict(cfg))


def config_eos_ids(folder: str) -> set[int]:
    """eos_token_id(s) of an HF folder's generation_config.json and config.json (either may be a list)."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        f = os.path.join(folder, name)
        if os.path.isfile(f):
            with open(f) as fh:
                ids |= _ids(json.load(fh).get("eos_token_id"))
    return ids


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


def _rope(cfg: dict[str, Any]) -> tuple[float, RopeScaling]:
    params = cfg.get("rope_parameters")
    # transformers 5 puts theta and scaling in one dict; some configs nest it per attention type
    if isinstance(params, dict) and "full_attention" in params and isinstance(params["full_attention"], dict):
        params = params["full_attention"]
    scaling = dict(params) if isinstance(params, dict) else dict(cfg.get("rope_scaling") or {})
    theta = float(scaling.pop("rope_theta", None) or cfg.get("rope_theta") or 10000.0)
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope scaling type {rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}")
    if rope_type == "default":
        return theta, RopeScaling()
    max_pos = int(cfg.get("max_position_embeddings") or 8192)
    return theta, RopeScaling(
        rope_type=rope_type,
        factor=float(scaling.get("factor", 1.0)),
        low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(scaling.get("original_max_position_embeddings", max_pos)),
    )
