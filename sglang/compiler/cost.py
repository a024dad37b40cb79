"""The executor's cost model: a warm-up call (a prefill with no token generated) goes out only when it saves
prefill work that would otherwise be computed more than once.

A warm-up costs one more native call and a round trip before the requests that follow it. It saves work
only when several requests would each compute the same uncached text. Our scheduler already shares a
long common prefix inside one batch (`IN_BATCH_PREFIX_TOKENS`: a request that shares that many new
leading tokens with one admitted this round waits a round and reuses its KV), so a warm-up pays only
for shared text shorter than that window, which every request would otherwise recompute.

Token counts are estimated from characters (no tokenizer on the client): `estimate_tokens` errs high,
so a borderline prefix is left to the server rather than paid for with a call.
"""
from __future__ import annotations

CHARS_PER_TOKEN = 3  # BPE vocabularies average 3-4 characters a token on English text; 3 errs high


def server_shared_window() -> int:
    """Shared new tokens from which the scheduler computes a common prefix once per batch by itself."""
    from sglang.runtime.scheduler.schedule_policy import IN_BATCH_PREFIX_TOKENS

    return IN_BATCH_PREFIX_TOKENS


def estimate_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def warmup_pays(shared_uncached: str, sharers: int) -> bool:
    """Whether prefilling `shared_uncached` once before `sharers` requests that all start with it saves
    computed tokens: more than one sharer, and text the server would not share in-batch by itself."""
    if sharers < 2 or not shared_uncached:
        return False
    return estimate_tokens(shared_uncached) < server_shared_window()
