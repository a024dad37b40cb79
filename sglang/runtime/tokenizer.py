"""Tokenizer loading from a local HF folder (never a hub) and the end-of-sequence ids of a model."""
from __future__ import annotations

from typing import Any

from sglang.runtime.model_config import config_eos_ids


def get_tokenizer(path: str, **kwargs: Any):
    """AutoTokenizer from a local HF folder; "default" / *.gguf paths are resolved (converted) first."""
    from transformers import AutoTokenizer

    from sglang.runtime.model_loader.default_model import resolve_model_path

    folder = resolve_model_path(path)
    kwargs.setdefault("local_files_only", True)
    try:
        return AutoTokenizer.from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as e:
        raise ValueError(f"could not load a tokenizer from {folder!r}: {e}") from e


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of every text, exactly as `tokenizer.encode(text)` gives them one at a time.

    A fast HF tokenizer encodes a list in one call on all cores (its Rust batch encoder). Admission runs
    in one thread, so a batched request of many long prompts (a select's items x choices copies of one
    few-shot prompt) would otherwise tokenize them in turn before the scheduler sees any of them."""
    if len(texts) > 1 and getattr(tokenizer, "is_fast", False):
        return [list(ids) for ids in tokenizer(texts)["input_ids"]]
    return [list(tokenizer.encode(t)) for t in texts]


def eos_token_ids(model_path: str, tokenizer: Any = None) -> list[int]:
    """All ids that end generation: generation_config.json's and config.json's eos_token_id plus the
    tokenizer's eos (SmolLM2: <|im_end|>). Sorted, without duplicates. `model_path` is an HF folder."""
    ids = config_eos_ids(model_path)
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)
