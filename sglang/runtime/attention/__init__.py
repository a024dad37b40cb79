"""Attention backends over the token KV pool: torch (reference), triton, flashinfer.

`create_attention_backend(name, model_runner)` picks one: an explicit name, else torch on CPU and
triton on CUDA (flashinfer by name). Backends are imported lazily (they pull in GPU libraries).
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

from sglang.runtime.attention.base import AttentionBackend

_BACKENDS = {
    "torch": ("torch_backend", "TorchAttentionBackend"),
    "triton": ("triton_backend", "TritonAttentionBackend"),
    "flashinfer": ("flashinfer_backend", "FlashInferAttentionBackend"),
}


def default_backend_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "torch"
    # [kernels] triton by default on CUDA: measured on H200 (docs/benchmarks.md, run 2) its decode is
    # faster than FlashInfer's at every batch size we ran, and it needs no extra package; flashinfer by flag
    return "triton"


def create_attention_backend(name: Optional[str], model_runner) -> AttentionBackend:
    device = torch.device(getattr(model_runner, "device", "cpu"))
    name = name or default_backend_name(device)
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    # Triton kernels also run on CPU under its interpreter (kernel tests use that); FlashInfer never does
    interpreted = name == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
    if name != "torch" and device.type != "cuda" and not interpreted:
        raise ValueError(f"attention backend {name!r} needs a CUDA device; on {device.type} use 'torch'")
    module_name, class_name = _BACKENDS[name]
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"attention backend {name!r} is not available ({e}); try attention_backend='torch'") from e
    return cls(model_runner)


__all__ = ["AttentionBackend", "create_attention_backend", "default_backend_name"]
