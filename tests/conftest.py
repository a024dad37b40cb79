"""Shared test fixtures: the real default model (SmolLM2-135M-Instruct, converted once into the cache)
and tiny dummy-weight Llama / Qwen2 configs that reuse SmolLM2's tokenizer (vocab 49152).

Tests never contact a model hub: the offline switches are set before anything imports transformers.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")

# What both tiny configs share: small enough that a forward takes milliseconds on CPU; vocab
# matches SmolLM2 so its tokenizer works.
_TINY_COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "vocab_size": 49152,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dtype": "float32",
}

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    **_TINY_COMMON,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "pad_token_id": 2,
    "tie_word_embeddings": False,
    "attention_bias": False,
}

TINY_QWEN2_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    **_TINY_COMMON,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}


def make_tiny_model_dir(folder: Path, config: dict, tokenizer_src: str | None) -> str:
    """Write config.json (+ SmolLM2's tokenizer files when `tokenizer_src` is given) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer_src is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_src) / name
            if src.is_file():
                shutil.copy(src, folder / name)
    return str(folder)


@pytest.fixture(scope="session")
def default_model_path() -> str:
    """HF folder of SmolLM2-135M-Instruct (converted from the GGUF on first use, then cached)."""
    from sglang.runtime.model_loader import resolve_model_path

    return resolve_model_path("default")


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory, default_model_path) -> str:
    """A 2-layer Llama config (GQA 4/2 heads, untied lm_head) with no weights: load with load_format='dummy'."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama"), TINY_LLAMA_CONFIG, default_model_path)


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory, default_model_path) -> str:
    """A 2-layer Qwen2 config (qkv bias, tied embeddings) with no weights: load with load_format='dummy'."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_qwen2"), TINY_QWEN2_CONFIG, default_model_path)


@pytest.fixture(scope="session")
def default_engine(default_model_path):
    """One in-process Engine on the real default model (CPU, fp32), shared by every test that only needs
    to generate with it. Tests must leave it idle (nothing running) so the pool invariant can be checked."""
    from sglang.runtime.engine import Engine

    engine = Engine(model_path=default_model_path, device="cpu", dtype="float32", max_total_tokens=16384)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def server(engine):
    """A real uvicorn server (background thread, free loopback port) over the test module's own `engine`
    fixture; a module needing other server args overrides this fixture."""
    from sglang.runtime.server.launch import BackgroundServer

    with BackgroundServer(engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def tok(default_model_path):
    """SmolLM2's tokenizer (loaded once per process), for the constrained-decoding tests."""
    from constrained_helpers import smol_tokenizer

    return smol_tokenizer(default_model_path)


@pytest.fixture(scope="module")
def vocab(default_model_path):
    """The TokenVocab of SmolLM2's tokenizer (built once per process), for the constrained-decoding tests."""
    from constrained_helpers import smol_vocab

    return smol_vocab(default_model_path)
