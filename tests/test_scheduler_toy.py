"""Scheduler bookkeeping against an exact toy model that reads its context from the KV pool
(tests/scheduler_toy_runner.py): prefix reuse, chunking, retraction, policies, aborts, logprobs, stops."""
from __future__ import annotations

import copy
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scheduler_toy_runner import EOS, ToyRunner, ToyTokenizer, reference_input_logprobs, toy_greedy, toy_logits

from sglang.runtime.detokenizer import TEXT_IDS_KEY, ClientText
from sglang.runtime.sampling.sampling_params import SamplingParams
from sglang.runtime.scheduler.req import TokenizedRequest
from sglang.runtime.scheduler.scheduler import Scheduler
from sglang.runtime.server_args import ServerArgs


class Harness:
    """Runs a Scheduler synchronously (no thread) and collects outputs."""

    def __init__(self, runner: ToyRunner | None = None, overlap: bool = False, detokenize: bool = True,
                 **server_kw) -> None:
        """detokenize=False: as in the engine, plain requests' outputs carry ids; the harness makes their
        text as the engine does (ClientText), keeping the raw outputs in `raw`."""
        self.runner = runner or ToyRunner()
        self.final: dict[str, dict] = {}
        self.partial: dict[str, list[dict]] = {}
        self.raw: dict[str, list[dict]] = {}
        self.texts: dict[str, ClientText] = {}
        self.sched = Scheduler(ServerArgs(**server_kw), self.runner, ToyTokenizer(), self._on_output, detokenize)
        self.sched.overlap.force = overlap  # CPU: only to check that outputs are unchanged

    def _on_output(self, rid: str, out: dict, finished: bool) -> None:
        self.raw.setdefault(rid, []).append(copy.deepcopy(out))
        if rid in self.texts:
            out = self.texts[rid].fill(out)
        if finished:
            assert rid not in self.final, "finished twice"
            self.final[rid] = out
        else:
            self.partial.setdefault(rid, []).append(out)

    def submit(self, rid: str, prompt: list[int], max_new_tokens: int = 8, **kw) -> None:
        sp = SamplingParams.from_dict({"max_new_tokens": max_new_tokens, "temperature": 0, **kw.pop("sp", {})})
        self.texts[rid] = ClientText(ToyTokenizer(), sp, prompt)
        self.sched.submit(TokenizedRequest(rid=rid, input_ids=prompt, sampling_params=sp, **kw))

    def run(self, max_steps: int = 100000, on_step=None) -> dict[str, dict]:
        for i in range(max_steps):
            self.sched.drain_inbox(block=False)
            if on_step is not None:
                on_step(i)
                self.sched.drain_inbox(block=False)
            if not self.sched.step() and self.sched.inbox.empty():
                break
        self.sched.check_invariant()
        return self.final


def ids_of(out: dict) -> list[int]:
    return ToyTokenizer().encode(out["text"])


def shared_prefix_prompts(n: int, prefix_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(2, 64) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(2, 64) for _ in range(rng.randrange(1, 12))] for _ in range(n)]


def test_64_concurrent_shared_prefix_match_sequential_and_reuse_cache():
    prompts = shared_prefix_prompts(64, 500)
    h = Harness()
    for i, p in enumerate(prompts):
        h.submit(f"r{i}", p, max_new_tokens=16)
    out = h.run()
    assert len(out) == 64
    for i, p in enumerate(prompts):
        assert ids_of(out[f"r{i}"]) == toy_greedy(p, 16)
        assert out[f"r{i}"]["meta_info"]["finish_reason"]["type"] == "length"
    cached = [out[f"r{i}"]["meta_info"]["cached_tokens"] for i in range(64)]
    assert sum(c >= 500 for c in cached) >= 63  # only the first computes the shared prefix
    # one by one gives the same outputs
    h1 = Harness()
    for i, p in enumerate(prompts[:8]):
        h1.submit(f"s{i}", p, max_new_tokens=16)
        h1.run()
        assert h1.final[f"s{i}"]["text"] == out[f"r{i}"]["text"]


@pytest.mark.parametrize("overlap", [False, True])
def test_tiny_pool_forces_retraction_and_outputs_are_unchanged(overlap):
    prompts = shared_prefix_prompts(12, 20, seed=1)
    big = Harness()
    small = Harness(ToyRunner(pool_size=120), overlap=overlap)
    for h in (big, small):
        for i, p in enumerate(prompts):
            h.submit(f"r{i}", p, max_new_tokens=40)
    ref, got = big.run(), small.run()
    assert small.sched.counters["retractions"] > 0
    assert (small.sched.overlap.lagged_steps > 0) == overlap
    assert big.sched.counters["retractions"] == 0
    for rid in ref:
        assert got[rid]["text"] == ref[rid]["text"]
        assert got[rid]["meta_info"]["completion_tokens"] == 40


def test_chunked_prefill_equals_unchunked():
    prompts = shared_prefix_prompts(5, 30, seed=2) + [[5] * 97]
    full, chunked = Harness(), Harness(chunked_prefill_size=16)
    for h in (full, chunked):
        for i, p in enumerate(prompts):
            h.submit(f"r{i}", p, max_new_tokens=6)
    a, b = full.run(), chunked.run()
    assert {k: v["text"] for k, v in a.items()} == {k: v["text"] for k, v in b.items()}
    extends = [b for b in chunked.runner.batches if b[0] == "EXTEND"]
    assert len(extends) > len([b for b in full.runner.batches if b[0] == "EXTEND"])


def test_fcfs_and_lpm_give_the_same_outputs():
    prompts = shared_prefix_prompts(10, 40, seed=3) + shared_prefix_prompts(10, 25, seed=4)
    outs = []
    for policy in ("lpm", "fcfs"):
        h = Harness(schedule_policy=policy, max_prefill_tokens=64)
        for i, p in enumerate(prompts):
            h.submit(f"r{i}", p, max_new_tokens=5)
        outs.append({k: v["text"] for k, v in h.run().items()})
    assert outs[0] == outs[1]
    for i, p in enumerate(prompts):
        assert ToyTokenizer().encode(outs[0][f"r{i}"]) == toy_greedy(p, 5)


@pytest.mark.parametrize("overlap", [False, True])
def test_abort_waiting_and_running_frees_everything(overlap):
    h = Harness(max_prefill_tokens=32, overlap=overlap)
    for i in range(6):
        h.submit(f"r{i}", [3 + i] * 30, max_new_tokens=50)

    def on_step(step: int) -> None:
        if step == 3:
            h.sched.abort("r0")  # running by now
            h.sched.abort("r5")  # still waiting (one prompt per prefill round)
            h.sched.abort("unknown")

    out = h.run(on_step=on_step)
    assert out["r0"]["meta_info"]["finish_reason"]["type"] == "abort"
    assert out["r5"]["meta_info"]["finish_reason"]["type"] == "abort"
    assert out["r5"]["meta_info"]["completion_tokens"] == 0
    assert 0 < out["r0"]["meta_info"]["completion_tokens"] < 50
    for i in range(1, 5):
        assert ids_of(out[f"r{i}"]) == toy_greedy([3 + i] * 30, 50)


@pytest.mark.parametrize("chunk", [-1, 7])
@pytest.mark.parametrize("start", [0, 5, -1])
def test_logprobs_match_full_prefill_computation(chunk, start):
    prompt = [7, 9, 11, 13, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    h = Harness(chunked_prefill_size=chunk)
    h.submit("warm", prompt[:10], max_new_tokens=1)  # caches a prefix that logprob_start_len must cap
    h.run()
    h.submit("r", prompt, max_new_tokens=4, return_logprob=True, logprob_start_len=start, top_logprobs_num=3)
    meta = h.run()["r"]["meta_info"]
    ref = reference_input_logprobs(prompt, len(prompt) if start < 0 else start)
    got = meta["input_token_logprobs"]
    assert [t for _, t, _ in got] == [t for _, t in ref]
    for (lp, _, _), (rlp, _) in zip(got, ref):
        assert (lp is None) == (rlp is None)
        if lp is not None:
            assert lp == pytest.approx(rlp, abs=1e-5)
    assert len(meta["input_top_logprobs"]) == len(got)
    for top, (lp, tok, _) in zip(meta["input_top_logprobs"], got):
        if lp is not None:
            assert len(top) == 3 and top[0][0] >= lp - 1e-6
    gen = toy_greedy(prompt, 4)
    assert [t for _, t, _ in meta["output_token_logprobs"]] == gen
    seq = list(prompt)
    for (lp, tok, _), top in zip(meta["output_token_logprobs"], meta["output_top_logprobs"]):
        assert lp == pytest.approx(reference_input_logprobs(seq + [tok], len(seq))[0][0], abs=1e-5)
        assert top[0][1] == tok  # greedy: the chosen token is the top-1
        seq.append(tok)
    vals = [lp for lp, _, _ in got[1:]]
    expect = sum(vals) / len(vals) if vals else 0.0
    assert meta["normalized_prompt_logprob"] == pytest.approx(expect, abs=1e-5)


def test_prefill_only_request_caches_prompt():
    h = Harness()
    p = list(range(2, 40))
    h.submit("a", p, max_new_tokens=0)
    out = h.run()["a"]
    assert out["text"] == "" and out["meta_info"]["prompt_tokens"] == len(p)
    assert out["meta_info"]["finish_reason"]["type"] == "length"
    assert h.sched.cache.evictable_size() == len(p)
    h.submit("b", p + [5], max_new_tokens=2)
    out = h.run()["b"]
    assert out["meta_info"]["cached_tokens"] == len(p)
    assert ids_of(out) == toy_greedy(p + [5], 2)


def test_whole_prompt_cached_still_computes_one_token():
    h = Harness()
    p = list(range(2, 30))
    h.submit("a", p, max_new_tokens=3)
    h.submit("b", p, max_new_tokens=3)
    h.run()
    h.submit("c", p, max_new_tokens=3)
    out = h.run()
    assert out["c"]["meta_info"]["cached_tokens"] == len(p) - 1
    assert out["a"]["text"] == out["b"]["text"] == out["c"]["text"]


@pytest.mark.parametrize("overlap", [False, True])
def test_stop_token_ids_stop_strings_eos_and_min_new_tokens(overlap):
    p = [4, 5, 6, 7]
    gen = toy_greedy(p, 12)
    text = ToyTokenizer().decode(gen)
    h = Harness(overlap=overlap)
    h.submit("tok", p, 12, sp={"stop_token_ids": [gen[3]]})
    h.submit("str", p, 12, sp={"stop": [text[5:7]]})
    h.submit("str_keep", p, 12, sp={"stop": [text[5:7]], "no_stop_trim": True})
    h.submit("min", p, 12, sp={"stop_token_ids": [gen[0]], "min_new_tokens": 12})
    h.submit("stream", p, 6, stream=True)
    out = h.run()
    first = gen.index(gen[3])
    assert out["tok"]["meta_info"]["finish_reason"] == {"type": "stop", "matched": gen[3]}
    assert out["tok"]["meta_info"]["completion_tokens"] == first + 1
    assert out["tok"]["text"] == text[:first]  # the stop token's text is trimmed
    assert out["str"]["meta_info"]["finish_reason"]["matched"] == text[5:7]
    assert out["str"]["text"] == text[: text.index(text[5:7])]
    assert out["str_keep"]["text"] == text[: text.index(text[5:7]) + 2]
    # min_new_tokens bans the stop token until 12 tokens exist: it never stops early
    assert out["min"]["meta_info"]["finish_reason"]["type"] == "length"
    assert len(h.partial["stream"]) == 5 and h.partial["stream"][-1]["text"] == text[:5]
    assert all(o["meta_info"]["finish_reason"] is None for o in h.partial["stream"])


@pytest.mark.parametrize("overlap", [False, True])
def test_text_made_off_the_scheduler_equals_the_schedulers(overlap):
    """detokenize=False (the engine's schedulers): plain requests' outputs carry their new text ids and no
    text; made from them (ClientText), every output's text equals what the scheduler itself makes: stop
    token trimmed or kept, streaming, length, abort. Stop strings keep the text in the scheduler."""
    p = [4, 5, 6, 7]
    gen = toy_greedy(p, 12)
    text = ToyTokenizer().decode(gen)

    def workload(detokenize: bool) -> Harness:
        h = Harness(overlap=overlap, detokenize=detokenize)
        h.submit("tok", p, 12, sp={"stop_token_ids": [gen[3]]})
        h.submit("tok_keep", p, 12, sp={"stop_token_ids": [gen[3]], "no_stop_trim": True})
        h.submit("str", p, 12, sp={"stop": [text[5:7]]})
        h.submit("stream", p, 6, stream=True)
        h.submit("abort", p, 12, stream=True)
        h.run(on_step=lambda i: i == 4 and h.sched.abort("abort"))
        return h

    here, there = workload(True), workload(False)
    assert here.final == there.final and here.partial == there.partial
    assert there.final["tok"]["text"] == text[: gen.index(gen[3])]
    assert there.final["tok_keep"]["text"] == text[: gen.index(gen[3]) + 1]
    assert len(there.partial["stream"]) == 5 and there.final["stream"]["text"] == text[:6]
    for rid in ("tok", "tok_keep", "stream", "abort"):  # no text was made in the scheduler for these
        assert all(o["text"] == "" and TEXT_IDS_KEY in o for o in there.raw[rid])
    assert sum(len(o[TEXT_IDS_KEY]) for o in there.raw["stream"]) == 6
    assert all(TEXT_IDS_KEY not in o for o in there.raw["str"] + here.raw["stream"])


def test_eos_stops_unless_ignore_eos():
    class EosRunner(ToyRunner):
        def forward(self, batch):
            out = super().forward(batch)
            out.next_token_logits[:, EOS] = 100.0
            return out

    h = Harness(EosRunner())
    h.submit("a", [4, 5], 5)
    h.submit("b", [4, 5], 5, sp={"ignore_eos": True})
    out = h.run()
    assert out["a"]["meta_info"]["finish_reason"] == {"type": "stop", "matched": EOS}
    assert out["a"]["meta_info"]["completion_tokens"] == 1
    assert out["b"]["meta_info"]["completion_tokens"] == 5


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    pool=st.sampled_from([90, 160, 4096]),
    chunk=st.sampled_from([-1, 8, 33]),
    policy=st.sampled_from(["lpm", "fcfs"]),
    disable_cache=st.booleans(),
    abort_at=st.one_of(st.none(), st.integers(0, 20)),
    overlap=st.booleans(),
)
def test_random_workloads_keep_outputs_and_pool_exact(seed, pool, chunk, policy, disable_cache, abort_at, overlap):
    rng = random.Random(seed)
    bases = [[rng.randrange(2, 8) for _ in range(rng.randrange(1, 30))] for _ in range(3)]
    prompts = [rng.choice(bases) + [rng.randrange(2, 8) for _ in range(rng.randrange(0, 10))] for _ in range(10)]
    lens = [rng.randrange(0, 20) for _ in prompts]
    h = Harness(ToyRunner(pool_size=pool), chunked_prefill_size=chunk, schedule_policy=policy,
                disable_radix_cache=disable_cache, max_prefill_tokens=rng.choice([40, 1000]), overlap=overlap)
    starts = [rng.choice([None, 0, rng.randrange(0, len(p) + 1)]) for p in prompts]
    for i, (p, n) in enumerate(zip(prompts, lens)):
        lp = {} if starts[i] is None else {"return_logprob": True, "logprob_start_len": starts[i]}
        h.submit(f"r{i}", p, n, **lp)
    victim = f"r{rng.randrange(len(prompts))}"
    out = h.run(on_step=lambda s: h.sched.abort(victim) if s == abort_at else None)
    assert len(out) == len(prompts)
    for i, (p, n) in enumerate(zip(prompts, lens)):
        o = out[f"r{i}"]
        if o["meta_info"]["finish_reason"]["type"] == "abort":
            assert f"r{i}" == victim
            assert toy_greedy(p, n)[: o["meta_info"]["completion_tokens"]] == ids_of(o)
            continue
        assert ids_of(o) == toy_greedy(p, n)
        if starts[i] is not None:
            got = [(lp, t) for lp, t, _ in o["meta_info"]["input_token_logprobs"]]
            ref = reference_input_logprobs(p, starts[i])
            assert [t for _, t in got] == [t for _, t in ref]
            assert all((a is None and b is None) or abs(a - b) < 1e-4 for (a, _), (b, _) in zip(got, ref))
            assert len(o["meta_info"]["output_token_logprobs"]) == n


def test_overlap_runs_ahead_and_matches_sync():
    prompts = shared_prefix_prompts(6, 10, seed=7)
    outs = []
    for overlap in (False, True):
        h = Harness(overlap=overlap)
        for i, p in enumerate(prompts):
            h.submit(f"r{i}", p, max_new_tokens=10 + i, sp={"stop_token_ids": [toy_greedy(p, 9)[-1]]} if i == 2 else {})
        outs.append({k: (v["text"], v["meta_info"]["finish_reason"]) for k, v in h.run().items()})
        assert (h.sched.overlap.lagged_steps > 0) == overlap
        decodes = [b for b in h.runner.batches if b[0] == "DECODE"]
        if overlap:  # finished requests ran one wasted step each, so there are at least as many rows
            assert sum(b[1] for b in decodes) >= rows_sync
        else:
            rows_sync = sum(b[1] for b in decodes)
    assert outs[0] == outs[1]
    h = Harness(overlap=True, disable_overlap=True)
    h.submit("a", prompts[0], 5)
    h.run()
    assert h.sched.overlap.pending is None and not h.sched.overlap.enabled()


def test_order_waiting_lpm_fcfs_and_starvation_guard():
    from sglang.runtime.scheduler.req import Req
    from sglang.runtime.scheduler.schedule_policy import order_waiting

    sp = SamplingParams()
    reqs = [Req(rid=str(i), origin_input_ids=[2] * 5, sampling_params=sp, arrival=float(i)) for i in range(4)]
    prefix = {id(reqs[0]): 0, id(reqs[1]): 9, id(reqs[2]): 3, id(reqs[3]): 9}
    assert [r.rid for r in order_waiting(reqs, "lpm", prefix, 5)] == ["1", "3", "2", "0"]
    assert [r.rid for r in order_waiting(reqs, "fcfs", prefix, 5)] == ["0", "1", "2", "3"]
    reqs[2].skipped_rounds = 5  # passed over too often: first, whatever its prefix
    assert [r.rid for r in order_waiting(reqs, "lpm", prefix, 5)][0] == "2"


def test_lpm_does_not_starve_a_request_without_cache_hits():
    positions = {}
    for guard in (10**9, 3):
        h = Harness(max_prefill_tokens=40, chunked_prefill_size=-1)
        h.sched.starvation_rounds = guard
        hot = [9] * 30
        h.submit("hot0", hot + [3], 2)
        h.submit("cold", [4] * 35, 2)
        for i in range(1, 120):
            h.submit(f"hot{i}", hot + [3 + i % 50, 2 + i % 7], 2)
        out = h.run()
        assert ids_of(out["cold"]) == toy_greedy([4] * 35, 2)
        positions[guard] = list(out).index("cold")  # finishing order
    assert positions[10**9] == 120  # without the guard, every cache hit goes first
    assert positions[3] < 80


def test_long_queue_uses_lazy_matching_and_still_reuses_prefixes():
    from sglang.runtime.scheduler.schedule_policy import LPM_MAX_QUEUE

    n = LPM_MAX_QUEUE + 76  # past it, lpm falls back to fcfs order with lazy matching
    prompts = shared_prefix_prompts(n, 12, seed=9)
    h = Harness(ToyRunner(pool_size=40 * n, max_reqs=n + 1))
    for i, p in enumerate(prompts):
        h.submit(f"r{i}", p, 2)
    out = h.run()
    assert all(ids_of(out[f"r{i}"]) == toy_greedy(p, 2) for i, p in enumerate(prompts))
    assert sum(o["meta_info"]["cached_tokens"] >= 12 for o in out.values()) > 0.66 * n


def test_overlap_keeps_seeded_sampling_reproducible():
    prompts = shared_prefix_prompts(5, 8, seed=11)
    outs = []
    for overlap in (False, True):
        h = Harness(overlap=overlap)
        for i, p in enumerate(prompts):
            h.submit(f"r{i}", p, 12, sp={"temperature": 1.5, "seed": 100 + i})
        outs.append({k: v["text"] for k, v in h.run().items()})
        assert (h.sched.overlap.lagged_steps > 0) == overlap
    assert outs[0] == outs[1]
    assert len({t for t in outs[0].values()}) > 1


class _JumpOnce:
    """A stand-in constraint: after the first sampled token, roll it back and jump to [5, 6, 7];
    bans token 9 everywhere through the vocab mask."""

    def __init__(self) -> None:
        self.jumped = False

    def fill_vocab_mask(self, row) -> None:
        row[9] = False

    def advance(self, token_id: int) -> None:
        assert token_id != 9

    def is_terminated(self) -> bool:
        return False

    def jump_forward(self):
        if self.jumped:
            return None
        self.jumped = True
        return 1, [5, 6, 7]


@pytest.mark.parametrize("chunk", [-1, 4])
def test_jump_forward_rollback_re_extends_and_keeps_pool_exact(chunk):
    h = Harness(chunked_prefill_size=chunk)
    h.sched.constraint_factory = lambda req: _JumpOnce() if req.rid.startswith("jf") else None
    prompt = [3, 4, 8, 2, 11]
    h.submit("jf", prompt, 10)
    h.submit("plain", prompt, 10)
    out = h.run()
    want = [5, 6, 7]
    seq = prompt + want
    for _ in range(7):  # greedy, but token 9 is masked
        logits = toy_logits(seq)
        logits[9] = float("-inf")
        seq.append(int(logits.argmax()))
    assert ids_of(out["jf"]) == seq[len(prompt):]
    meta = out["jf"]["meta_info"]
    assert meta["completion_tokens"] == 10 and meta["completion_tokens_wo_jump_forward"] == 8
    assert ids_of(out["plain"]) == toy_greedy(prompt, 10)


def test_half_prefilled_request_yields_memory_to_decodes_and_keeps_logprobs():
    h = Harness(ToyRunner(pool_size=110), chunked_prefill_size=8, max_prefill_tokens=8)
    for i in range(3):
        h.submit(f"d{i}", [2 + i] * 6, 28)
    long_prompt = [(7 * j) % 60 + 2 for j in range(60)]
    h.submit("long", long_prompt, 3, return_logprob=True, logprob_start_len=0)
    out = h.run()
    assert h.sched.counters["chunk_yields"] > 0
    for i in range(3):
        assert ids_of(out[f"d{i}"]) == toy_greedy([2 + i] * 6, 28)
    assert ids_of(out["long"]) == toy_greedy(long_prompt, 3)
    got = out["long"]["meta_info"]["input_token_logprobs"]
    ref = reference_input_logprobs(long_prompt, 0)
    assert [t for _, t, _ in got] == [t for _, t in ref]
    assert all(a is None and b is None or abs(a - b) < 1e-4 for (a, _, _), (b, _) in zip(got, ref))


def test_jump_forward_that_completes_a_stop_string_or_the_length_finishes():
    h = Harness()
    h.sched.constraint_factory = lambda req: _JumpOnce()
    stop_text = ToyTokenizer().decode([6, 7])
    h.submit("stop", [3, 4], 10, sp={"stop": [stop_text]})
    h.submit("len", [3, 4], 3)
    out = h.run()
    assert out["stop"]["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop_text}
    assert out["stop"]["text"] == ToyTokenizer().decode([5])
    assert out["len"]["meta_info"]["finish_reason"]["type"] == "length"
    assert ids_of(out["len"]) == [5, 6, 7]


def test_a_request_that_fails_on_admission_is_aborted_and_the_loop_goes_on():
    h = Harness()

    def factory(req):
        if req.rid == "bad":
            raise RuntimeError("constraint exploded")
        return None

    h.sched.constraint_factory = factory
    h.submit("bad", [3, 4], 4)
    h.submit("good", [3, 4], 4)
    out = h.run()
    assert out["bad"]["meta_info"]["finish_reason"]["type"] == "abort"
    assert "constraint exploded" in out["bad"]["meta_info"]["finish_reason"]["message"]
    assert ids_of(out["good"]) == toy_greedy([3, 4], 4)


@pytest.mark.parametrize("overlap", [False, True])
def test_step_timing_counts_every_decode_step_and_only_when_on(overlap):
    """The benchmark hook: with timing on, every DECODE forward is a timed step (host time measured,
    no device time on CPU); off, nothing is counted."""
    h = Harness(overlap=overlap)
    h.sched.set_step_timing(True)
    for i in range(3):
        h.submit(f"r{i}", [5 + i, 6, 7], max_new_tokens=6)
    h.run()
    t = h.sched.step_timing()
    assert t["decode_steps_timed"] == h.sched.counters["forward_decode"] > 0
    assert t["host_ms_per_decode_step"] > 0 and t["gpu_ms_per_decode_step"] == 0.0
    h.sched.set_step_timing(False)
    h.submit("late", [9, 9], max_new_tokens=4)
    h.run()
    assert h.sched.step_timing()["decode_steps_timed"] == 0
