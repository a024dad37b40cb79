"""Model loading: path resolution (default model, GGUF → HF folder conversion) and weight loading."""
from __future__ import annotations

from sglang.runtime.model_loader.default_model import cache_dir, convert_gguf, default_gguf_path, resolve_model_path

__all__ = ["cache_dir", "convert_gguf", "default_gguf_path", "resolve_model_path"]
