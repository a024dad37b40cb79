"""Model path resolution and GGUF conversion cache."""
from __future__ import annotations

import os

import pytest

from sglang.runtime.model_loader import default_model
from sglang.runtime.model_loader.default_model import converted_dir_for, default_gguf_path, resolve_model_path
from sglang.runtime.tokenizer import eos_token_ids, get_tokenizer


def test_default_resolves_to_converted_folder(default_model_path):
    assert os.path.isfile(os.path.join(default_model_path, "config.json"))
    assert os.path.isfile(os.path.join(default_model_path, "model.safetensors"))
    assert default_model_path == str(converted_dir_for(default_gguf_path()))


def test_second_resolve_does_not_reconvert(default_model_path, monkeypatch):
    mtime = os.path.getmtime(os.path.join(default_model_path, "model.safetensors"))

    def fail(*a, **k):
        raise AssertionError("reconverted a cached GGUF")

    monkeypatch.setattr(default_model, "_write_hf_folder", fail)
    assert resolve_model_path("default") == default_model_path
    assert resolve_model_path(default_gguf_path()) == default_model_path
    assert os.path.getmtime(os.path.join(default_model_path, "model.safetensors")) == mtime


def test_hf_folder_resolves_to_itself(tiny_llama_path):
    assert resolve_model_path(tiny_llama_path) == tiny_llama_path


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="without config.json"):
        resolve_model_path(str(tmp_path))


def test_tokenizer_and_eos_ids(default_model_path, tiny_qwen2_path):
    tok = get_tokenizer(default_model_path)
    assert tok.eos_token == "<|im_end|>"
    assert tok.decode(tok("Hello world").input_ids) == "Hello world"
    assert tok.eos_token_id in eos_token_ids(default_model_path, tok)
    tiny = get_tokenizer(tiny_qwen2_path)
    assert tiny("Hello world").input_ids == tok("Hello world").input_ids
