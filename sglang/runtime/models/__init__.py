"""Model implementations (our own torch modules) and the architecture → class registry."""
from __future__ import annotations

from torch import nn

from sglang.runtime.model_config import SUPPORTED_ARCHITECTURES, ModelConfig


def get_model_class(config: ModelConfig) -> type[nn.Module]:
    from sglang.runtime.models.llama import LlamaForCausalLM

    # one implementation: the differences are config values (see models/llama.py)
    registry = {arch: LlamaForCausalLM for arch in SUPPORTED_ARCHITECTURES}
    if config.architecture not in registry:
        raise ValueError(
            f"unsupported model architecture {config.architecture!r}; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return registry[config.architecture]
