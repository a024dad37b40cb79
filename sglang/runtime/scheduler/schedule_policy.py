"""Which waiting requests go into the next prefill batch, and how many tokens each may take.

`order_waiting` sorts the queue: `lpm` (longest cached prefix first: batches requests that share a
prefix while it is hot) or `fcfs` (arrival order). A request that has been passed over
`starvation_rounds` times jumps ahead of both orders, so a long prompt with no cached prefix is not
starved forever by a stream of cache hits.

`PrefillAdder` admits requests in that order under three budgets:
  - total tokens: pool free + evictable, minus what running requests are expected to still decode
    (their remaining max_new_tokens scaled by `new_token_ratio`, which the scheduler adapts);
  - input tokens per batch: max_prefill_tokens (the first request is always admitted, chunked if needed);
  - chunk: chunked_prefill_size; a request longer than what is left of it is cut, and the rest of
    it runs in the next rounds (one chunked request at a time).
Once something is admitted, a request that does not fit what is left of the input or chunk budget is
skipped, not a stop: later, smaller requests (e.g. questions on an already cached system prompt) fill the
rest of the batch, so a burst's extend batches run full (`fits_batch`). Only running out of memory or of
request rows ends the round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sglang.runtime.scheduler.req import Req

# lpm needs a tree lookup per waiting request (~10-20 us of host each); past this queue length the order falls
# back to fcfs. Sized for a burst: at rate inf, 64 groups x 16 shuffled requests (2048 + 128 tokens) under fcfs
# fill each round with new groups' long prompts while cached siblings wait: the median request got its first
# token after 25 of 33 extend rounds; lpm takes the cached siblings first: after 17 (CPU simulation with the
# forward timeline; before skip-to-fill below, fcfs took 36 rounds, the median after 28).
LPM_MAX_QUEUE = 1024
# waiting requests examined (radix-matched) per admission round once something was admitted: with thousands of
# request slots the slot limit no longer ends the scan, and deferred same-prefix siblings would be matched again
# every step (a bound on host work per step; it did not explain the H200 shared-prefix stall of run 6)
MAX_SCAN_PER_ROUND = 128
# a request that shares this many new (uncached) leading tokens with one already admitted in this
# round waits one round, so it reuses that request's prefix from the cache instead of recomputing it.
# Short on purpose: a batch sent at once (a compiled program's items) must not compute more than the same
# requests arriving one by one, which find each other's text cached. At 32, 256 few-shot items whose
# questions share ~8-10 leading tokens computed 15049 prefill tokens against 14032 for SGLang's
# staggered frontend; at 8, 13991 (CPU, dummy weights). The price: such a sibling waits one round.
IN_BATCH_PREFIX_TOKENS = 8
# cap on how many decode tokens to reserve per running request (long max_new_tokens rarely run out)
RESERVE_CAP = 4096


def order_waiting(waiting: list[Req], policy: str, prefix_lens: dict[int, int], starvation_rounds: int) -> list[Req]:
    """Return the waiting queue in admission order. prefix_lens: id(req) -> cached prefix length."""
    starving = [r for r in waiting if r.skipped_rounds >= starvation_rounds]
    rest = [r for r in waiting if r.skipped_rounds < starvation_rounds]
    starving.sort(key=lambda r: r.arrival)
    if policy == "lpm" and len(waiting) <= LPM_MAX_QUEUE:
        rest.sort(key=lambda r: (-prefix_lens.get(id(r), 0), r.arrival))
    else:
        rest.sort(key=lambda r: r.arrival)
    return starving + rest


@dataclass
class Admission:
    req: Req
    prefix_len: int  # tokens reused from the cache
    extend_len: int  # tokens computed this round
    chunked: bool  # extend_len < what the request still needs


@dataclass
class PrefillAdder:
    rem_total_tokens: int
    rem_input_tokens: int
    rem_chunk_tokens: Optional[int]  # None: chunking off
    rem_requests: int
    num_running: int = 0  # decoding requests not in this batch
    # the in-batch prefix rule (IN_BATCH_PREFIX_TOKENS); off without a prefix cache, where a deferred sibling
    # would find nothing cached next round either and siblings would be admitted one per round
    defer_siblings: bool = True
    admitted: list[Admission] = field(default_factory=list)
    _shared_keys: set = field(default_factory=set)
    blocked: bool = False  # out of budget: nothing more this round
    out_of_memory: bool = False  # blocked by the total-token (KV memory) budget

    @staticmethod
    def reserve_for(req: Req, new_token_ratio: float) -> int:
        """Decode tokens to keep free for a running (or admitted) request."""
        return int(min(req.remaining_new_tokens(), RESERVE_CAP) * new_token_ratio)

    def try_add(
        self, req: Req, prefix_len: int, new_token_ratio: float, *, lock_cost: int = 0, must_continue: bool = False
    ) -> bool:
        """Admit req (with prefix_len cached tokens) if the budgets allow. lock_cost: evictable
        tokens that locking its prefix takes out of the budget. must_continue: the in-progress
        chunked request, always admitted first if memory allows."""
        if self.blocked or self.rem_requests <= 0:
            return False
        need = req.seq_len - prefix_len  # tokens without KV yet
        key = None
        if self.defer_siblings and not must_continue and need > IN_BATCH_PREFIX_TOKENS:
            key = (prefix_len, tuple(req.all_ids[: prefix_len + IN_BATCH_PREFIX_TOKENS]))
            # only a request that could take those tokens from the cache next round waits for them: the
            # logprob window of a scoring row caps its cached prefix (Req.max_prefix_len)
            if key in self._shared_keys and req.max_prefix_len() >= prefix_len + IN_BATCH_PREFIX_TOKENS:
                return False  # wait one round for the sibling's prefix to be cached
        extend = need
        chunked = False
        if self.admitted and not must_continue and not self.fits_batch(extend):
            return False  # it would be cut or overflow the batch: next round; a smaller one may still fit
        if self.rem_chunk_tokens is not None and extend > self.rem_chunk_tokens:
            extend, chunked = max(self.rem_chunk_tokens, 1), True
        reserve = 0 if chunked else self.reserve_for(req, new_token_ratio)
        if extend + reserve + lock_cost > self.rem_total_tokens:
            if not self.admitted and not self.num_running and extend + lock_cost <= self.rem_total_tokens:
                reserve = 0  # let one request in even if its decode may later need a retraction
            else:
                self.blocked = self.out_of_memory = True
                return False
        self.rem_total_tokens -= extend + reserve + lock_cost
        self.rem_input_tokens -= extend
        if self.rem_chunk_tokens is not None:
            self.rem_chunk_tokens -= extend
        self.rem_requests -= 1
        self.admitted.append(Admission(req, prefix_len, extend, chunked))
        if key is not None and extend >= IN_BATCH_PREFIX_TOKENS:  # those tokens are computed this round
            self._shared_keys.add(key)
        if chunked or not self.fits_batch(1):
            self.blocked = True  # the chunk (or input) budget is spent
        return True

    def fits_batch(self, extend: int) -> bool:
        """Whether `extend` more tokens fit this round's input and chunk budgets uncut."""
        return extend <= self.rem_input_tokens and (self.rem_chunk_tokens is None or extend <= self.rem_chunk_tokens)
