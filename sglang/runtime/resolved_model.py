"""The model a runtime serves, resolved ONCE at start-up: `ServerArgs.model_path` → HF folder + ModelConfig.

"default" and *.gguf paths are converted to an HF folder here (once, in the starting process, not by
every process that later needs the model); everything downstream (the ModelRunner of each tp rank, the
scheduler process, the tokenizer) receives the resolved folder and config instead of resolving again.
This is the one place `ModelConfig.from_path` is called.
"""
from __future__ import annotations

from dataclasses import dataclass

from sglang.runtime.model_config import ModelConfig
from sglang.runtime.model_loader.default_model import resolve_model_path
from sglang.runtime.server_args import ServerArgs


@dataclass(frozen=True)
class ResolvedModel:
    """An HF model folder and its config (context length already applied); picklable for child processes."""

    path: str
    config: ModelConfig


def resolve_model(server_args: ServerArgs) -> ResolvedModel:
    """ValueError naming the path when it is neither "default", a .gguf file nor an HF folder, or when
    its config.json describes a model the runtime cannot run."""
    path = resolve_model_path(server_args.model_path)
    return ResolvedModel(path, ModelConfig.from_path(path, server_args.context_length))
