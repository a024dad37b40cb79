"""The scheduler's parts on their own, without a model: PrefillManager admission under the token
budgets, DecodeManager retraction order, CacheManager accounting after release."""
from __future__ import annotations

import pytest
import torch

from sglang.runtime.detokenizer import DecodeStream
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool
from sglang.runtime.sampling.sampling_params import SamplingParams
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.decode import DecodeManager
from sglang.runtime.scheduler.prefill import PrefillManager
from sglang.runtime.scheduler.req import FinishKind, Req
from sglang.runtime.scheduler.request_table import RequestTable
from sglang.runtime.server_args import ServerArgs


def make_cache(pool_size: int = 64, rows: int = 8, radix: bool = True) -> CacheManager:
    return CacheManager(ReqToTokenPool(rows, 128, "cpu"), TokenKVPool(pool_size, 1, 1, 2, torch.float32, "cpu"),
                        disable_radix_cache=not radix)


def make_req(rid: str, prompt: list[int], max_new_tokens: int = 4, arrival: float = 0.0, outputs: int = 0) -> Req:
    sp = SamplingParams.from_dict({"max_new_tokens": max_new_tokens})
    return Req(rid=rid, origin_input_ids=list(prompt), sampling_params=sp, arrival=arrival,
               output_ids=[7] * outputs)


def hold_kv(cache: CacheManager, req: Req) -> None:
    """Give req KV for all but its last token, as a running (decode-ready) request has."""
    slots, node = cache.match(req)
    cache.admit(req, slots, node)
    n = req.seq_len - 1 - req.kv_len
    cache.extend_slots(req, n)
    req.kv_len += n


class Parts:
    def __init__(self, cache: CacheManager, **args) -> None:
        self.outputs: list[tuple[str, dict, bool]] = []
        self.args = ServerArgs(schedule_policy="fcfs", **args)
        self.cache = cache
        self.table = RequestTable(cache, None, lambda *o: self.outputs.append(o), stream_interval=1)
        self.prefill = PrefillManager(self.args, cache, runner=None, device=torch.device("cpu"))
        self.decode = DecodeManager(self.args, cache, self.prefill, self.table, runner=None,
                                    device=torch.device("cpu"))

    def add_waiting(self, *reqs: Req) -> None:
        for r in reqs:
            self.table.add(r)
            self.prefill.add(r)

    def add_running(self, *reqs: Req) -> None:
        for r in reqs:
            self.table.add(r)
            hold_kv(self.cache, r)
        self.decode.add(reqs)


# -- PrefillManager ---------------------------------------------------------------------------------
def test_admission_stops_at_the_input_token_budget_and_keeps_the_rest_waiting():
    p = Parts(make_cache(), max_prefill_tokens=20, chunked_prefill_size=-1)
    reqs = [make_req(f"r{i}", [2 + i] * 8, arrival=float(i)) for i in range(3)]
    p.add_waiting(*reqs)
    admitted = p.prefill.admit([], new_token_ratio=0.0)
    assert [a.req.rid for a in admitted] == ["r0", "r1"]  # 8 + 8 <= 20 < 8 + 8 + 8
    assert [a.extend_len for a in admitted] == [8, 8]
    assert p.prefill.waiting == [reqs[2]]
    assert all(r.req_pool_idx is not None for r in reqs[:2]) and reqs[2].req_pool_idx is None
    assert reqs[2].skipped_rounds == 0  # not overtaken: it arrived last


def test_admission_chunks_a_long_prompt_and_admits_nothing_after_it():
    p = Parts(make_cache(), max_prefill_tokens=100, chunked_prefill_size=5)
    p.add_waiting(make_req("long", list(range(2, 14))), make_req("short", [3, 4]))
    admitted = p.prefill.admit([], new_token_ratio=0.0)
    assert [(a.req.rid, a.extend_len, a.chunked) for a in admitted] == [("long", 5, True)]
    assert [r.rid for r in p.prefill.waiting] == ["short"]


def test_admission_keeps_a_reserve_for_the_running_requests_decode():
    cache = make_cache(pool_size=40)
    p = Parts(cache, chunked_prefill_size=-1)
    p.add_running(make_req("run", [5] * 10, max_new_tokens=20))  # 9 slots, up to 20 more tokens
    p.add_waiting(make_req("new", [6] * 12, max_new_tokens=1))
    assert p.prefill.admit(p.decode.running, new_token_ratio=1.0) == []  # 31 - 20 reserved < 12 + 1
    assert [a.req.rid for a in p.prefill.admit(p.decode.running, new_token_ratio=0.5)] == ["new"]


# -- DecodeManager ----------------------------------------------------------------------------------
def test_retraction_takes_the_least_advanced_request_first_and_requeues_it():
    cache = make_cache(pool_size=34)
    p = Parts(cache)
    a = make_req("a", [2] * 6, max_new_tokens=50, outputs=5)  # 10 slots
    b = make_req("b", [3] * 9, max_new_tokens=50, outputs=2)  # 10 slots
    c = make_req("c", [4] * 6, max_new_tokens=50, outputs=2)  # 7 slots: same progress as b, shorter prompt
    p.add_running(a, b, c)
    filler = make_req("filler", [9] * 5)
    hold_kv(cache, filler)  # with the next slot, 5 slots nobody can evict: 2 left for 3 requests
    cache.extend_slots(filler, 1)
    filler.kv_len += 1
    ratio = p.decode.new_token_ratio
    p.decode.make_room()
    assert [r.rid for r in p.decode.running] == ["a", "c"]  # b: fewest outputs, longest prompt
    assert p.prefill.waiting == [b] and b.req_pool_idx is None
    assert b.skipped_rounds == p.prefill.starvation_rounds and b.num_retractions == 1
    assert p.decode.counters["retractions"] == 1 and p.decode.new_token_ratio > ratio
    assert cache.available() >= len(p.decode.running)


def test_a_half_prefilled_request_yields_before_any_retraction():
    cache = make_cache(pool_size=20)
    p = Parts(cache)
    p.add_running(make_req("a", [2] * 5, outputs=1), make_req("b", [3] * 5, outputs=1))  # 10 slots
    half = make_req("half", [4] * 30, max_new_tokens=1)
    p.table.add(half)
    cache.admit(half, *cache.match(half))
    cache.extend_slots(half, 10)  # as if its first chunk of 10 had run
    half.kv_len = 10
    p.prefill.chunked = half  # (what PrefillManager.run leaves after a chunk)
    p.decode.make_room()
    assert [r.rid for r in p.decode.running] == ["a", "b"] and p.decode.counters["retractions"] == 0
    assert p.prefill.chunked is None and p.prefill.waiting == [half] and p.prefill.counters["chunk_yields"] == 1


def test_a_lone_request_that_cannot_grow_is_aborted():
    cache = make_cache(pool_size=6)
    p = Parts(cache, disable_radix_cache=True)
    req = make_req("solo", [2] * 7)
    p.add_running(req)  # all 6 slots
    p.decode.make_room()
    assert p.decode.running == [] and req.finished_reason.kind == FinishKind.ABORT
    assert p.outputs[-1][0] == "solo" and p.outputs[-1][2] is True and "solo" not in p.table
    cache.check_idle()


# -- CacheManager -----------------------------------------------------------------------------------
@pytest.mark.parametrize("radix", [True, False])
def test_release_returns_every_slot_and_the_next_request_reuses_the_prefix(radix):
    cache = make_cache(pool_size=32, radix=radix)
    first = make_req("first", list(range(2, 12)))
    hold_kv(cache, first)
    cache.cache_unfinished(first)
    with pytest.raises(AssertionError):
        cache.check_idle()  # first still holds a row and locked KV
    cache.release(first)
    cache.release(first)  # idempotent
    cache.check_idle()
    second = make_req("second", list(range(2, 12)) + [40, 41])
    slots, node = cache.match(second)
    assert int(slots.numel()) == (9 if radix else 0)  # the first's computed tokens
    cache.admit(second, slots, node)
    assert second.kv_len == second.prefix_len == int(slots.numel())
    cache.release(second)
    cache.check_idle()
    cache.flush()
    assert cache.stats()["pool_free"] == 32 and cache.stats()["pool_evictable"] == 0


def test_batch_sampler_reuses_the_info_of_a_steady_batch_only():
    """Steady decode (same rows, nothing step-dependent) reuses its SamplingBatchInfo and skips the
    logprobs nobody reads; a seeded batch or one whose rows changed is rebuilt every step."""
    from sglang.runtime.scheduler.sample import BatchSampler

    sampler = BatchSampler(16, eos_ids=[1], seed=0)
    logits = torch.randn(3, 16)
    greedy = SamplingParams.from_dict({"temperature": 0.0})
    plain = [Req(rid=f"p{i}", origin_input_ids=[2, 3], sampling_params=greedy) for i in range(3)]
    ids, lps = sampler.sample(plain, logits)
    assert lps is None and sampler.info_reuses == 0
    ids2, _ = sampler.sample(plain, logits)
    assert sampler.info_reuses == 1 and torch.equal(ids, ids2) and ids.tolist() == logits.argmax(-1).tolist()
    sampler.sample(plain[:2], logits[:2])  # the batch changed: rebuilt
    assert sampler.info_reuses == 1

    seeded = [Req(rid=f"s{i}", origin_input_ids=[2, 3],
                  sampling_params=SamplingParams.from_dict({"temperature": 1.0, "seed": i})) for i in range(3)]
    first, _ = sampler.sample(seeded, logits)
    seeded[0].output_ids.append(int(first[0]))
    sampler.sample(seeded, logits)
    assert sampler.info_reuses == 1  # a seeded draw depends on the position: never reused

    wants = [Req(rid="l", origin_input_ids=[2, 3], sampling_params=greedy, return_logprob=True)]
    _, lps = sampler.sample(wants, logits[:1])
    assert lps is not None and lps.item() == pytest.approx(torch.log_softmax(logits[0], -1).max().item(), abs=1e-5)


def test_row_checks_flag_exactly_the_rows_that_can_finish_or_need_the_full_path():
    """The array checks agree with the per-row rules: a stop id (EOS unless ignore_eos) once
    min_new_tokens is reached, max_new_tokens, or a row that always needs the full path."""
    import numpy as np

    from sglang.runtime.scheduler.row_checks import RowChecks

    def req(i, outputs=0, **sp):
        return Req(rid=f"r{i}", origin_input_ids=[5], sampling_params=SamplingParams.from_dict(sp),
                   output_ids=[9] * outputs)

    reqs = [
        req(0, max_new_tokens=8),                                   # token 1 (EOS): stops
        req(1, max_new_tokens=8, ignore_eos=True),                  # EOS ignored
        req(2, max_new_tokens=8, stop_token_ids=[4]),               # its own stop id
        req(3, max_new_tokens=8, stop_token_ids=[4], min_new_tokens=3),  # too early for it
        req(4, outputs=2, max_new_tokens=3),                        # reaches its length
        req(5, max_new_tokens=8),                                   # plain
        req(6, max_new_tokens=8),                                   # streams: an append and an output
        req(7, max_new_tokens=8, stop=["x"]),                       # stop strings need its text: always
    ]
    reqs[6].stream = True
    for r in reqs:
        r.text_tracker = DecodeStream(None, r.sampling_params)
    checks = RowChecks(reqs, eos_ids=[1])
    mask = checks.full_path_mask(np.array([1, 1, 4, 4, 7, 7, 7, 7]))
    assert mask.tolist() == [True, False, True, False, True, False, False, True]
    assert checks.stream.tolist() == [False] * 6 + [True, False] and checks.any_stream


def test_default_max_running_requests_grows_with_the_kv_pool():
    """Unset, max_running_requests comes from the KV pool: the old 256 for small pools, thousands for
    a small model on a big GPU, never more than the request table's memory share allows."""
    from sglang.runtime.server_args import MAX_RUNNING_REQUESTS, default_max_running_requests

    assert default_max_running_requests(65536, 32768, 8192) == 256
    # Llama-3.2-1B on an H200: ~3.6M tokens of 32 KiB, 128k context
    big = default_max_running_requests(3_600_000, 32768, 131072)
    assert 1000 < big <= MAX_RUNNING_REQUESTS
    assert big * 131072 * 8 <= 0.02 * 3_600_000 * 32768 + 131072 * 8  # the table's share
    assert default_max_running_requests(10 ** 9, 32768, 1024) == MAX_RUNNING_REQUESTS
    with pytest.raises(ValueError, match="max_running_requests"):
        ServerArgs(max_running_requests=0)


def test_an_admission_round_matches_a_bounded_number_of_deferred_siblings(monkeypatch):
    """Siblings sharing one long prefix wait a round for it to be cached (in-batch deferral); with many
    request slots free, one round must not radix-match the whole queue of them."""
    from sglang.runtime.scheduler import schedule_policy
    from sglang.runtime.scheduler.prefill import MAX_SCAN_PER_ROUND

    n = MAX_SCAN_PER_ROUND + 50
    shared = list(range(2, 2 + schedule_policy.IN_BATCH_PREFIX_TOKENS + 8))
    p = Parts(make_cache(pool_size=8192, rows=n + 1), max_prefill_tokens=100_000, chunked_prefill_size=-1,
              max_running_requests=n + 1)
    p.add_waiting(*[make_req(f"r{i}", shared + [3000 + i], arrival=float(i)) for i in range(n)])
    calls = []
    real = p.cache.match
    monkeypatch.setattr(p.cache, "match", lambda req: calls.append(req.rid) or real(req))
    admitted = p.prefill.admit([], new_token_ratio=0.0)
    assert [a.req.rid for a in admitted] == ["r0"]  # the others wait for r0's prefix
    assert len(calls) == MAX_SCAN_PER_ROUND
    assert len(p.prefill.waiting) == n - 1


def _prefill_rounds(radix: bool, groups: int, per_group: int, order_seed: int = 0) -> list[list[str]]:
    """Admission rounds (each admitted request's prefill done at once, as the forward would) until the
    queue of `groups` x `per_group` siblings (a long shared prefix each, arrivals shuffled) is empty."""
    import random

    shared = [list(range(1000 * g + 2, 1000 * g + 2 + 3 * IN_BATCH)) for g in range(groups)]
    reqs = [make_req(f"g{g}q{j}", shared[g] + [50_000 + 100 * g + j] * 4, arrival=0.0)
            for g in range(groups) for j in range(per_group)]
    random.Random(order_seed).shuffle(reqs)
    for i, r in enumerate(reqs):
        r.arrival = float(i)
    n = len(reqs)
    p = Parts(make_cache(pool_size=4 * n * len(reqs[0].origin_input_ids), rows=n + 1, radix=radix),
              max_prefill_tokens=100_000, chunked_prefill_size=-1, max_running_requests=n + 1)
    p.add_waiting(*reqs)
    rounds = []
    while p.prefill.waiting:
        admitted = p.prefill.admit([], new_token_ratio=0.0)
        assert admitted, "a round with free budget admitted nothing"
        for a in admitted:
            p.cache.extend_slots(a.req, a.extend_len)
            a.req.kv_len += a.extend_len
            p.cache.cache_unfinished(a.req)
        rounds.append([a.req.rid for a in admitted])
        assert len(rounds) <= n
    return rounds


IN_BATCH = 8  # schedule_policy.IN_BATCH_PREFIX_TOKENS, checked below


@pytest.mark.parametrize("radix", [True, False])
def test_queued_siblings_get_their_prefill_within_a_few_rounds(radix):
    """Shared-prefix serving at rate inf: everyone is queued before the first round. With the radix cache, one
    round prefills a leader per group and the next ones the siblings on the cached prefix; without it,
    deferring siblings would gain nothing, so each round admits all it scans (it used to admit one per group:
    per_group rounds)."""
    from sglang.runtime.scheduler.prefill import MAX_SCAN_PER_ROUND
    from sglang.runtime.scheduler.schedule_policy import IN_BATCH_PREFIX_TOKENS

    assert IN_BATCH == IN_BATCH_PREFIX_TOKENS
    groups, per_group = 6, 24
    rounds = _prefill_rounds(radix, groups, per_group)
    n = groups * per_group
    if radix:
        assert len(rounds) <= 2 + -(-n // MAX_SCAN_PER_ROUND)
        first = {rid.split("q")[0] for rid in rounds[0]}
        assert len(rounds[0]) == groups and len(first) == groups  # one leader per group, then siblings
    else:
        assert len(rounds) == -(-n // MAX_SCAN_PER_ROUND)


def _one_round(reqs: list[Req]) -> list[str]:
    p = Parts(make_cache(pool_size=4096, rows=len(reqs) + 1), max_prefill_tokens=100_000, chunked_prefill_size=-1,
              max_running_requests=len(reqs) + 1)
    p.add_waiting(*reqs)
    return [a.req.rid for a in p.prefill.admit([], new_token_ratio=0.0)]


def test_rows_sharing_a_short_uncached_run_wait_for_it_in_batch():
    """Items of one batch whose new text shares a run shorter than the old 32-token window (a few-shot
    program's questions: "Context: The chef reads a map (scene 1" / "(scene 17") are not recomputed by
    every row: the later ones wait a round and find it cached, as staggered arrivals would."""
    shared = list(range(100, 100 + IN_BATCH + 2))  # 10 tokens: under 32, over the window
    rounds = _prefill_rounds_of([make_req(f"r{i}", shared + [500 + i] * 6, arrival=float(i)) for i in range(4)])
    assert rounds == [["r0"], ["r1", "r2", "r3"]]
    # a shorter shared run is not worth a round
    short = list(range(100, 100 + IN_BATCH - 2))
    assert _one_round([make_req(f"s{i}", short + [500 + i] * 12, arrival=float(i)) for i in range(3)]) == \
        ["s0", "s1", "s2"]


def _prefill_rounds_of(reqs: list[Req]) -> list[list[str]]:
    p = Parts(make_cache(pool_size=4096, rows=len(reqs) + 1), max_prefill_tokens=100_000, chunked_prefill_size=-1,
              max_running_requests=len(reqs) + 1)
    p.add_waiting(*reqs)
    rounds = []
    while p.prefill.waiting:
        admitted = p.prefill.admit([], new_token_ratio=0.0)
        for a in admitted:
            p.cache.extend_slots(a.req, a.extend_len)
            a.req.kv_len += a.extend_len
            p.cache.cache_unfinished(a.req)
        rounds.append([a.req.rid for a in admitted])
        assert len(rounds) <= len(reqs)
    return rounds


def test_a_scoring_row_whose_logprob_window_starts_early_does_not_wait_for_nothing():
    """A row that wants input logprobs from position s can reuse at most s - 1 cached tokens: when the shared
    run lies past that, waiting a round would not save a token, so it is admitted with its sibling."""
    shared = list(range(100, 100 + 3 * IN_BATCH))
    a = make_req("a", shared + [1, 2, 3], arrival=0.0)
    b = make_req("b", shared + [4, 5, 6], arrival=1.0)
    b.return_logprob, b.logprob_start_len = True, 1  # the whole prompt's logprobs: nothing can come from the cache
    assert b.max_prefix_len() == 0 and _one_round([a, b]) == ["a", "b"]
    c = make_req("c", shared + [7, 8, 9], arrival=1.0)
    c.return_logprob, c.logprob_start_len = True, len(shared)  # the window starts after the shared run
    assert _one_round([a, c]) == ["a"]
