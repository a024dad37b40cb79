"""Llama-family decoder (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) over the
token KV pool.

One module covers them: they differ only in config values (GQA head counts, q/k/v bias for Qwen2, per-head
q/k RMSNorm for Qwen3, tied embeddings, rope theta/scaling), all read from ModelConfig. Weight names follow the HF checkpoints,
except the fused `qkv_proj` (q, k, v shards) and `gate_up_proj` (gate, up shards).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from sglang.runtime.distributed import check_tp_divisible, get_tp_size
from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.layers.activation import SiluAndMul
from sglang.runtime.layers.attention import Attention
from sglang.runtime.layers.layernorm import RMSNorm
from sglang.runtime.layers.linear import Linear, VocabEmbedding
from sglang.runtime.layers.rotary_embedding import RotaryEmbedding
from sglang.runtime.model_config import ModelConfig


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        inter = cfg.intermediate_size
        self.gate_up_proj = Linear(
            cfg.hidden_size, 2 * inter, False, dtype, device, shards={"gate": inter, "up": inter}, parallel="column"
        )
        self.down_proj = Linear(inter, cfg.hidden_size, False, dtype, device, parallel="row")
        self.act = SiluAndMul(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaAttention(nn.Module):
    def __init__(
        self, cfg: ModelConfig, layer_id: int, rotary: RotaryEmbedding, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        tp = get_tp_size()
        check_tp_divisible(cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, tp)
        # this rank's heads (tensor parallel: q and kv heads split evenly over the ranks)
        self.q_size, self.kv_size, self.head_dim = cfg.q_size // tp, cfg.kv_size // tp, cfg.head_dim
        self.qkv_proj = Linear(
            cfg.hidden_size,
            cfg.q_size + 2 * cfg.kv_size,
            cfg.attention_bias,
            dtype,
            device,
            shards={"q": cfg.q_size, "k": cfg.kv_size, "v": cfg.kv_size},
            parallel="column",
        )
        self.o_proj = Linear(cfg.q_size, cfg.hidden_size, False, dtype, device, parallel="row")
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype, device)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype, device)
        self.qk_norm = cfg.qk_norm
        # shared by all layers; kept out of the module tree so it is not treated as a per-layer buffer
        self._rotary = (rotary,)
        self.attn = Attention(cfg.num_heads // tp, cfg.num_kv_heads // tp, cfg.head_dim, layer_id, cfg.head_dim**-0.5)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, batch: ForwardBatch) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.qk_norm:  # normalise each head's vector (rows of head_dim)
            t = q.shape[0]
            q = self.q_norm(q.reshape(-1, self.head_dim)).view(t, self.q_size)
            k = self.k_norm(k.reshape(-1, self.head_dim)).view(t, self.kv_size)
        q, k = self._rotary[0](positions, q, k)
        return self.o_proj(self.attn(q, k, v, batch))


class LlamaDecoderLayer(nn.Module):
    def __init__(
        self, cfg: ModelConfig, layer_id: int, rotary: RotaryEmbedding, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg, layer_id, rotary, dtype, device)
        self.mlp = LlamaMLP(cfg, dtype, device)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, residual: Optional[torch.Tensor], batch: ForwardBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = x
            h = self.input_layernorm(x)
        else:
            h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(positions, h, batch)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        # embedding and lm_head are replicated on every tp rank (simplest correct choice: no vocab-parallel
        # gather; every rank ends with the same logits, and rank 0 samples)
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size, dtype, device)
        # a few positions past the context limit: the scheduler's last decode step may sit there
        max_positions = max(cfg.context_len, cfg.max_position_embeddings) + 64
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling, device)
        self.layers = nn.ModuleList(
            [LlamaDecoderLayer(cfg, i, self.rotary_emb, dtype, device) for i in range(cfg.num_layers)]
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, device)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        # input_embeds: a vision-language model's token embeddings with image features scattered in
        x = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, batch)
        x, _ = self.norm(x, residual)
        return x


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg, dtype, device)
        # tied: the logits reuse the embedding matrix, so there is no separate parameter to load
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, False, dtype, device)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def set_attention_backend(self, backend) -> None:
        for m in self.modules():
            if isinstance(m, Attention):
                m.backend = backend

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Final hidden states [num_tokens, hidden] (the logits processor picks rows and projects)."""
        return self.model(input_ids, positions, batch, input_embeds)

    # checkpoint name -> (our parameter name, shard) for tensors that land in a fused weight
    stacked_params = (
        (".q_proj.", ".qkv_proj.", "q"),
        (".k_proj.", ".qkv_proj.", "k"),
        (".v_proj.", ".qkv_proj.", "v"),
        (".gate_proj.", ".gate_up_proj.", "gate"),
        (".up_proj.", ".gate_up_proj.", "up"),
    )
    # checkpoint tensors with no parameter here (precomputed rotary buffers of old checkpoints)
    ignored_suffixes = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")
