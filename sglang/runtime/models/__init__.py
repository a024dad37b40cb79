"""Model implementations (our own torch modules) and the architecture → class registry."""
from __future__ import annotations

from torch import nn

from sglang.runtime.model_config import SUPPORTED_ARCHITECTURES, ModelConfig
from sglang.runtime.multimodal.config import VLM_ARCHITECTURES


def get_model_class(config: ModelConfig) -> type[nn.Module]:
    from sglang.runtime.models.llama import LlamaForCausalLM
    from sglang.runtime.models.llava import LlavaForConditionalGeneration

    # one implementation per family: the differences are config values (see models/llama.py, models/llava.py)
    registry: dict[str, type[nn.Module]] = {arch: LlamaForCausalLM for arch in SUPPORTED_ARCHITECTURES}
    registry.update({arch: LlavaForConditionalGeneration for arch in VLM_ARCHITECTURES})
    if config.architecture not in registry:
        raise ValueError(
            f"unsupported model architecture {config.architecture!r}; supported: {', '.join(registry)}"
        )
    return registry[config.architecture]
