"""Weight loading into our model modules: from an HF folder (safetensors, sharded or not; PyTorch .bin as
a fallback), or seeded random "dummy" weights at the config's real shapes.

A model whose module tree differs from its checkpoint's names (LLaVA: transformers' old and new layouts)
provides `checkpoint_name(name) -> our name | None` (None: a tensor it does not use) and names its lm_head and
embedding parameters (`lm_head_param`, `embed_param`) for the tied / missing-lm_head rules.

Tensors are read straight onto the target device and cast there, one at a time, so a bf16 model on a GPU
never exists as an fp32 copy in host memory.

Tensor parallel: a parameter with `tp_dim` (set by layers/linear.py) holds rank `tp_rank`'s 1/tp_size of the
full tensor along that dim (of each fused shard); checkpoint tensors are sliced to it, and dummy weights are
drawn for the FULL tensor with the same generator stream as tp 1, then sliced, so tp N computes tp 1's function.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Iterator

import torch
from torch import nn

from sglang.runtime.layers.layernorm import LayerNorm, RMSNorm
from sglang.runtime.model_config import ModelConfig
from sglang.runtime.models import get_model_class

DUMMY_STD = 0.02  # small weights keep activations finite through many random layers


def build_model(config: ModelConfig, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The model with uninitialised weights (torch.empty) on `device`."""
    model = get_model_class(config)(config, dtype, device)
    return model.eval()


def load_model(
    config: ModelConfig, dtype: torch.dtype, device: torch.device, load_format: str = "auto", seed: int = 0
) -> nn.Module:
    model = build_model(config, dtype, device)
    if load_format == "dummy":
        init_dummy_weights(model, seed)
    elif load_format in ("auto", "safetensors", "gguf"):
        # gguf files were converted to an HF folder by resolve_model_path before we get here
        load_weights(model, config.path)
    else:
        raise ValueError(f"load_format must be auto|safetensors|gguf|dummy, got {load_format!r}")
    return model


# -- checkpoint files ---------------------------------------------------------------------------
def checkpoint_files(folder: str) -> list[str]:
    """The weight files of an HF folder: the safetensors index's files, else *.safetensors, else *.bin."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as fh:
            names = sorted(set(json.load(fh)["weight_map"].values()))
        return [os.path.join(folder, n) for n in names]
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    # Mistral repos also ship the original-format "consolidated" file next to the HF shards
    hf_files = [f for f in files if not os.path.basename(f).startswith("consolidated")]
    if hf_files or files:
        return hf_files or files
    bins = sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))
    if bins:
        return bins
    raise ValueError(
        f"no weights in {folder!r}: expected *.safetensors or pytorch_model*.bin "
        "(or pass load_format='dummy' for random weights)"
    )


def iterate_checkpoint(folder: str, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in checkpoint_files(folder):
        if path.endswith(".safetensors"):
            # safetensors' "cuda" device means the current device; name it fully for clarity
            dev = str(device) if device.type != "cuda" or device.index is not None else "cuda:0"
            with safe_open(path, framework="pt", device=dev) as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        else:
            state = torch.load(path, map_location=device, weights_only=True, mmap=True)
            yield from state.items()


# -- loading ------------------------------------------------------------------------------------
def load_weights(model: nn.Module, folder: str) -> None:
    """Copy every checkpoint tensor into its (possibly fused) parameter; error on any gap or mismatch."""
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    stacked = getattr(model, "stacked_params", ())
    ignored = getattr(model, "ignored_suffixes", ())
    # a model whose checkpoint layout differs from its module tree (Llava) renames; None = tensor unused
    rename = getattr(model, "checkpoint_name", lambda n: n)
    head_name = getattr(model, "lm_head_param", "lm_head.weight")
    embed_name = getattr(model, "embed_param", "model.embed_tokens.weight")
    tied = getattr(model, "lm_head", None) is None
    loaded: set[tuple[str, str | None]] = set()
    for ckpt_name, tensor in iterate_checkpoint(folder, device):
        name = rename(ckpt_name)
        if name is None or name.endswith(ignored):
            continue
        if name == head_name and tied:
            continue  # tied: the embedding matrix serves as lm_head
        target, shard = name, None
        for ckpt_part, our_part, shard_id in stacked:
            if ckpt_part in name:
                target, shard = name.replace(ckpt_part, our_part), shard_id
                break
        if target not in params:
            raise ValueError(f"checkpoint tensor {ckpt_name!r} in {folder!r} has no matching parameter in the model")
        param = params[target]
        dst = param.data
        if shard is not None:
            start, size = param.shard_offsets[shard]
            dst = dst.narrow(0, start, size)
        tensor = _tp_part(param, tensor, dst.shape)
        if tuple(dst.shape) != tuple(tensor.shape):
            raise ValueError(
                f"checkpoint tensor {ckpt_name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(dst.shape)} "
                "(config.json does not match the weights)"
            )
        dst.copy_(tensor)
        loaded.add((target, shard))
    if not tied and (head_name, None) not in loaded and (embed_name, None) in loaded:
        # an untied config whose checkpoint has no lm_head: the embedding is the output matrix
        params[head_name].data.copy_(params[embed_name].data)
        loaded.add((head_name, None))
    missing = []
    for pname, p in params.items():
        shards = getattr(p, "shard_offsets", None)
        need = [(pname, s) for s in shards] if shards else [(pname, None)]
        missing += [f"{n}[{s}]" if s else n for n, s in need if (n, s) not in loaded]
    if missing:
        more = f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
        raise ValueError(f"checkpoint in {folder!r} lacks weights for: {', '.join(missing[:8])}{more}")


def _tp_part(param: torch.Tensor, full: torch.Tensor, local_shape: torch.Size) -> torch.Tensor:
    """This rank's slice of one checkpoint tensor (or fused shard) of a tp-sharded parameter."""
    dim = getattr(param, "tp_dim", None)
    if dim is None or full.dim() <= dim:
        return full
    size = local_shape[dim]
    if full.shape[dim] != size * param.tp_size:
        return full  # the shape check below reports the mismatch with the full shapes
    return full.narrow(dim, param.tp_rank * size, size)


def _local_from_full(p: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """The local part of a whole tp-sharded parameter: per fused shard (rows) or the plain slice."""
    dim, rank, tp = p.tp_dim, p.tp_rank, p.tp_size
    shards = getattr(p, "shard_offsets", None)
    if dim == 0 and shards:
        # shards split evenly, so a local shard at rows [start, start+size) is full rows start*tp + rank*size ...
        return torch.cat([full.narrow(0, start * tp + rank * size, size) for start, size in shards.values()])
    size = p.shape[dim]
    return full.narrow(dim, rank * size, size)


@torch.no_grad()
def init_dummy_weights(model: nn.Module, seed: int) -> None:
    """Seeded random weights, generated on the parameter's device in its dtype (same seed → same weights).

    Norm weights ~ N(1, 0.1) (near identity but not exactly, so a kernel that ignores them is caught);
    everything else ~ N(0, DUMMY_STD).
    """
    norm_weights = {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, m in model.named_modules()
        if isinstance(m, (RMSNorm, LayerNorm))
    }
    generators: dict[torch.device, torch.Generator] = {}
    for name, p in model.named_parameters():
        g = generators.get(p.device)
        if g is None:
            g = generators[p.device] = torch.Generator(device=p.device)
            g.manual_seed(seed)
        mean, std = (1.0, 0.1) if name in norm_weights else (0.0, DUMMY_STD)
        if getattr(p, "tp_dim", None) is None:
            p.data.normal_(mean, std, generator=g)
            continue
        shape = list(p.shape)
        shape[p.tp_dim] *= p.tp_size
        full = torch.empty(shape, dtype=p.dtype, device=p.device).normal_(mean, std, generator=g)
        p.data.copy_(_local_from_full(p, full))
