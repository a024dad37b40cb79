"""The executor's cost model: a warm-up call (a prefill with no token generated) goes out only when it saves
prefill work that would otherwise be computed more than once.

A warm-up costs one more native call and a round trip before the requests that follow it. It saves work
only when several requests would each compute the same uncached text. Our scheduler already shares a
common prefix inside one batch (`IN_BATCH_PREFIX_TOKENS`: a request that shares that many new
leading tokens with one admitted this round waits a round and reuses its KV), so a warm-up pays only
for shared text shorter than that window, which every request would otherwise recompute.

Text shared by every item of a batch (its hoisted constant prefix) is computed once either way (by the
hoisting warm-up, or in-batch), so a fork's warm-up counts only the parent text after it.

Token counts come from the engine's tokenizer when the engine is in this process, else from characters
(`estimate_tokens`: a client of a server has no tokenizer).

At compile time `CostModel` turns the same rules into predicted seconds saved per run, from a device's
measured costs (`compiler/calibration.py`: prefill and decode per token, per-call overhead): each pass
asks it before it acts and acts only where the saving is positive (`passes.PassContext.decide`), and
`sglc compile --explain` prints the decisions. Text whose length is unknown when compiling (an argument,
an interpolated value) counts `UNKNOWN_TOKENS`; a run is assumed to carry `batch` items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sglang.compiler.calibration import DEFAULT, Calibration

CHARS_PER_TOKEN = 4  # BPE vocabularies average about 4 characters a token on English text
UNKNOWN_TOKENS = 16  # an argument or interpolated value, whose text is known only at run time
ROLE_TOKENS = 4  # a chat template's role marker (begin or end), about
DEFAULT_BATCH = 8  # items per run the predictions assume (sglc compile --batch)
DEFAULT_GEN_TOKENS = 16  # a gen without max_tokens: what the predictions assume it generates
# one more sequence in a decode batch makes each step about this much slower (decode is memory-bound: the
# weights are read once per step for the whole batch); what a speculative sequence that is thrown away costs
EXTRA_SEQUENCE_FRACTION = 0.1


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


@dataclass
class CostModel:
    """Predicted seconds saved per run (of `batch` items), from a calibration table."""

    cal: Calibration = DEFAULT
    batch: int = DEFAULT_BATCH
    count: Callable[[str], int] = field(default=estimate_tokens)

    def prefill_s(self, tokens: float) -> float:
        return tokens * self.cal.prefill_token_s

    def warmup_saving(self, shared_tokens: float, sharers: int) -> tuple[float, str]:
        """(saving, why) of one warm-up prefill of `shared_tokens` before `sharers` requests start with them:
        the copies it spares, minus the call it adds. The scheduler's in-batch sharing is NOT assumed here:
        what is cached when the step runs is known only then (a hoisted prefix, an earlier response), so the
        run decides that part (`warmup_pays`, exact tokens). Vetoing here on an estimate of it lost the
        sharing on the H200 (llm_judge computed 90k prefill tokens instead of 61k)."""
        if sharers < 2 or shared_tokens <= 0:
            return 0.0, "nothing shared to warm up"
        saving = (sharers - 1) * self.prefill_s(shared_tokens) - self.cal.call_overhead_s
        return saving, (f"{sharers - 1} copies of ~{shared_tokens:.0f} tokens spared, one more call "
                        f"(skipped at run time when the scheduler shares them in-batch)")

    def fork_warmup_saving(self, shared_tokens: float, branches: int) -> tuple[float, str]:
        """A fork's parent warm-up, per run: every item's warm-up goes out in ONE batched call, so the call
        is paid once per run while the spared copies add up over the run's `batch` items."""
        if branches < 2 or shared_tokens <= 0:
            return 0.0, "nothing shared to warm up"
        saving = self.batch * (branches - 1) * self.prefill_s(shared_tokens) - self.cal.call_overhead_s
        return saving, (f"{self.batch} item(s) x {branches - 1} copies of ~{shared_tokens:.0f} tokens spared, one "
                        "more batched call (skipped at run time when the scheduler shares them in-batch)")

    def hoist_saving(self, tokens: float) -> tuple[float, str]:
        """Text moved into the prefix every item shares: computed once instead of once per item."""
        return (self.batch - 1) * self.prefill_s(tokens), f"~{tokens:.0f} tokens shared by {self.batch} items"

    def scoring_saving(self, choices: int) -> tuple[float, str]:
        """Scoring every choice in one batched call instead of one call per choice."""
        return (choices - 1) * self.cal.call_overhead_s, f"{choices} choices in 1 call instead of {choices}"

    def speculation_saving(self, guesses: int, gen_tokens: float, resolves_s: float) -> tuple[float, str]:
        """Sending a gen for each of `guesses` possible continuations while the decision (taking `resolves_s`)
        is still pending: the right one's round trip overlaps the decision, the others are decoded for
        nothing, slowing every batch step a little for each of the run's `batch` items."""
        if guesses < 1:
            return 0.0, "no continuation to prefetch"
        gen_s = self.cal.call_overhead_s + gen_tokens * self.cal.decode_token_s
        saved = min(gen_s, self.cal.call_overhead_s + resolves_s)
        wasted = (guesses - 1) * gen_tokens * self.cal.decode_token_s * EXTRA_SEQUENCE_FRACTION * self.batch
        return saved - wasted, (f"{guesses} continuation(s) of ~{gen_tokens:.0f} tokens sent early: one round trip "
                                f"overlapped, {guesses - 1} decoded for nothing")
