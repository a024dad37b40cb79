"""ModelConfig parsing: both rope config styles, head_dim, context override, eos ids, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_LLAMA_CONFIG, TINY_QWEN2_CONFIG
from sglang.runtime.layers.rotary_embedding import rope_inv_freq
from sglang.runtime.model_config import ModelConfig, RopeScaling, parse_dtype

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}


def test_transformers4_and_5_rope_styles_agree():
    v4 = ModelConfig.from_dict(dict(TINY_LLAMA_CONFIG, rope_theta=500000.0, rope_scaling=LLAMA3_SCALING))
    v5_cfg = {k: v for k, v in TINY_LLAMA_CONFIG.items() if k != "rope_theta"}
    v5 = ModelConfig.from_dict(dict(v5_cfg, rope_parameters=dict(LLAMA3_SCALING, rope_theta=500000.0)))
    assert v4.rope_theta == v5.rope_theta == 500000.0
    assert v4.rope_scaling == v5.rope_scaling == RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)
    old_key = ModelConfig.from_dict(dict(TINY_LLAMA_CONFIG, rope_scaling={"type": "linear", "factor": 2.0}))
    assert old_key.rope_scaling.rope_type == "linear" and old_key.rope_theta == 10000.0


def test_llama3_inv_freq_matches_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
                         rope_scaling=dict(LLAMA3_SCALING), max_position_embeddings=131072)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    ours = rope_inv_freq(128, 500000.0, RopeScaling("llama3", 32.0, 1.0, 4.0, 8192))
    assert torch.allclose(ours.float(), ref.float(), rtol=1e-6, atol=0)
    # the scaling changes low frequencies only: the highest frequency is untouched, the lowest / 32
    plain = rope_inv_freq(128, 500000.0, RopeScaling())
    assert ours[0] == plain[0] and torch.isclose(ours[-1], plain[-1] / 32)


def test_fields_and_overrides(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(TINY_QWEN2_CONFIG, eos_token_id=[2, 7])))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 9}))
    cfg = ModelConfig.from_path(str(tmp_path), context_length=512)
    assert cfg.architecture == "Qwen2ForCausalLM" and cfg.attention_bias and cfg.tie_word_embeddings
    assert cfg.head_dim == 16 and cfg.num_kv_heads == 2 and cfg.q_size == 64 and cfg.kv_size == 32
    assert cfg.context_len == 512 and cfg.max_position_embeddings == 2048
    assert cfg.eos_token_ids == (2, 7, 9)
    assert ModelConfig.from_dict(dict(TINY_LLAMA_CONFIG, head_dim=48)).head_dim == 48
    assert ModelConfig.from_dict(TINY_LLAMA_CONFIG).context_len == 2048
    assert parse_dtype("bf16") == torch.bfloat16 and parse_dtype("torch.float16") == torch.float16


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architectures": ["BertModel"]}, "unsupported model architecture.*supported: LlamaForCausalLM"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling type 'yarn' is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        ({"vocab_size": None}, None),
    ],
)
def test_bad_configs_are_clear_errors(change, message):
    cfg = dict(TINY_LLAMA_CONFIG, **change)
    if message is None:  # a missing required key
        del cfg["vocab_size"]
        message = "lacks required key 'vocab_size'"
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(cfg)


def test_missing_config_json(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        ModelConfig.from_path(str(tmp_path))
