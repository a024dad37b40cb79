"""The executor's cost model: a warm-up call (a prefill with no token generated) goes out only when it saves
prefill work that would otherwise be computed more than once.

A warm-up costs one more native call and a round trip before the requests that follow it. It saves work
only when several requests would each compute the same uncached text. Our scheduler already shares a
long common prefix inside one batch (`IN_BATCH_PREFIX_TOKENS`: a request that shares that many new
leading tokens with one admitted this round waits a round and reuses its KV), so a warm-up pays only
for shared text shorter than that window, which every request would otherwise recompute.

Text shared by every item of a batch (its hoisted constant prefix) is computed once either way (by the
hoisting warm-up, or in-batch), so a fork's warm-up counts only the parent text after it.

Token counts come from the engine's tokenizer when the engine is in this process, else from characters
(`estimate_tokens`: a client of a server has no tokenizer).
"""
from __future__ import annotations

from typing import Any, Callable

CHARS_PER_TOKEN = 4  # BPE vocabularies average about 4 characters a token on English text


def server_shared_window() -> int:
    """Shared new tokens from which the scheduler computes a common prefix once per batch by itself."""
    from sglang.runtime.scheduler.schedule_policy import IN_BATCH_PREFIX_TOKENS

    return IN_BATCH_PREFIX_TOKENS


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def token_counter(backend: Any) -> Callable[[str], int]:
    """Exact counts with the tokenizer of an in-process engine (EngineBackend.engine), else estimates."""
    tokenizer = getattr(getattr(backend, "engine", None), "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        return estimate_tokens
    return lambda text: len(tokenizer.encode(text))


def warmup_pays(shared_uncached: str, sharers: int, count: Callable[[str], int] = estimate_tokens) -> bool:
    """Whether prefilling `shared_uncached` once before `sharers` requests that all start with it saves
    computed tokens: more than one sharer, and text the server would not share in-batch by itself."""
    if sharers < 2 or not shared_uncached:
        return False
    return count(shared_uncached) < server_shared_window()
