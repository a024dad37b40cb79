"""ViT vision towers of the LLaVA family: CLIP-ViT (class token, pre-layernorm, quick-GELU) and SigLIP (no class
token, biased patch embedding, tanh-GELU), as one module that the config switches.

`VisionTower(pixels, layers)` returns the hidden states at the requested indices with HF's numbering:
index 0 is the embedding output (after CLIP's pre-layernorm), index k the output of encoder layer k, negative
indices count from the end. The post-layernorm and pooling head are never applied to hidden states, so they
are not built (the loader skips their checkpoint tensors), and layers past the deepest requested index are
not run (LLaVA reads layer -2: the last layer is never computed).

Attention is bidirectional over one crop's patches; crops are independent rows of one batched SDPA call,
which is how the vision encoder is batched across images and requests. Weight names follow HF's
`vision_tower.*`, except the fused `qkv_proj` (q, k, v shards with their biases).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sglang.runtime.layers.activation import get_activation
from sglang.runtime.layers.layernorm import LayerNorm
from sglang.runtime.layers.linear import Linear, VocabEmbedding
from sglang.runtime.multimodal.config import VisionConfig


class PatchEmbedding(nn.Module):
    """A stride-`patch` convolution as one weight [hidden, C, p, p] (+ SigLIP's bias)."""

    def __init__(self, cfg: VisionConfig, bias: bool, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        p = cfg.patch_size
        self.patch_size = p
        shape = (cfg.hidden_size, cfg.num_channels, p, p)
        self.weight = nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)
        self.bias = (
            nn.Parameter(torch.empty(cfg.hidden_size, dtype=dtype, device=device), requires_grad=False) if bias else None
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, patches, hidden]
        x = F.conv2d(pixels.to(self.weight.dtype), self.weight, self.bias, stride=self.patch_size)
        return x.flatten(2).transpose(1, 2)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        clip = cfg.has_class_token
        self.patch_embedding = PatchEmbedding(cfg, bias=not clip, dtype=dtype, device=device)
        num_positions = cfg.grid_side**2 + (1 if clip else 0)
        self.position_embedding = VocabEmbedding(num_positions, cfg.hidden_size, dtype, device)
        self.class_embedding = (
            nn.Parameter(torch.empty(cfg.hidden_size, dtype=dtype, device=device), requires_grad=False) if clip else None
        )
        self.image_size = cfg.image_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"vision tower takes {self.image_size}x{self.image_size} crops, got {tuple(pixels.shape[-2:])}"
            )
        x = self.patch_embedding(pixels)
        if self.class_embedding is not None:
            cls = self.class_embedding.expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        return x + self.position_embedding.weight[None, : x.shape[1]]


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, h // cfg.num_heads
        self.qkv_proj = Linear(h, 3 * h, True, dtype, device, shards={"q": h, "k": h, "v": h})
        self.out_proj = Linear(h, h, True, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, S, hidden]
        n, s, _ = x.shape
        qkv = self.qkv_proj(x).view(n, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # bidirectional, scale 1/sqrt(head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(n, s, -1))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, True, dtype, device)
        self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, True, dtype, device)
        self.act = get_activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype, device)
        self.self_attn = VisionAttention(cfg, dtype, device)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype, device)
        self.mlp = VisionMLP(cfg, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.layers = nn.ModuleList([VisionEncoderLayer(cfg, dtype, device) for _ in range(cfg.num_layers)])


class VisionTower(nn.Module):
    """CLIP-ViT or SigLIP vision model; `forward(pixels, layers)` -> {index: hidden [N, S, hidden]}."""

    def __init__(self, cfg: VisionConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = VisionEmbeddings(cfg, dtype, device)
        # HF spells CLIP's pre-layernorm "pre_layrnorm"; the name is kept so checkpoints load as they are
        self.pre_layrnorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype, device) if cfg.has_class_token else None
        self.encoder = VisionEncoder(cfg, dtype, device)

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        """HF hidden-state indices (negative from the end) as indices into [embeddings, layer 1, ...]."""
        total = self.config.num_layers + 1
        out = []
        for i in layers:
            if not -total <= i < total:
                raise ValueError(f"vision feature layer {i} is out of range for {self.config.num_layers} layers")
            out.append(i % total)
        return out

    def forward(self, pixels: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Hidden states at `layers` (HF numbering), in that order, for a batch of crops [N, C, H, W]."""
        wanted = self.resolve_layers(layers)
        deepest = max(wanted)
        x = self.embeddings(pixels)
        if self.pre_layrnorm is not None:
            x = self.pre_layrnorm(x)
        states = {0: x}
        for k, layer in enumerate(self.encoder.layers[:deepest], start=1):
            x = layer(x)
            states[k] = x
        return [states[i] for i in wanted]

    # checkpoint tensors the tower never uses (hidden states skip the final norm; the pooling head is SigLIP's)
    unused_prefixes = ("post_layernorm.", "head.")
