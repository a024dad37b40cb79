"""Engine end to end on the tiny dummy-weight Llama: concurrency with a shared prefix, retraction,
chunking, policies, abort, logprobs, prefill-only, streaming, batch / n, async, and bad input."""
from __future__ import annotations

import asyncio
import random
import threading

import pytest

import sglang

GREEDY = {"temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    with sglang.Engine(model_path=tiny_llama_path, load_format="dummy", dtype="float32", max_total_tokens=20000) as e:
        yield e


def make_engine(path: str, **kw) -> sglang.Engine:
    # fp32 so that outputs compared across batch shapes are equal on a GPU as well (bf16 flips ties)
    # and a fixed pool: on a GPU the default sizes it from free memory, which other engines hold
    kw.setdefault("max_total_tokens", 20000)
    return sglang.Engine(model_path=path, load_format="dummy", dtype="float32", **kw)


def prompts_with_prefix(n: int, prefix_len: int, vocab: int = 49152, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(100, vocab) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(100, vocab) for _ in range(rng.randrange(1, 10))] for _ in range(n)]


def ids_text(outs):
    return [o["text"] for o in outs]


def test_64_concurrent_requests_sharing_a_500_token_prefix(engine):
    assert engine.flush_cache()
    prompts = prompts_with_prefix(64, 500)
    sp = {"max_new_tokens": 8, **GREEDY}
    results: dict[int, dict] = {}

    def worker(i: int) -> None:
        results[i] = engine.generate(input_ids=prompts[i], sampling_params=sp)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 64
    cached = [results[i]["meta_info"]["cached_tokens"] for i in range(64)]
    assert sum(c >= 500 for c in cached) >= 60, cached
    engine.check_invariant()
    stats = engine.stats()
    assert stats["cache_hit_rate"] > 0.8
    # the same requests one by one, from a cold cache
    engine.flush_cache()
    for i in range(0, 64, 9):
        solo = engine.generate(input_ids=prompts[i], sampling_params=sp)
        assert solo["text"] == results[i]["text"]
        engine.flush_cache()
    engine.check_invariant()


def test_tiny_pool_retracts_and_outputs_match_big_pool(engine, tiny_llama_path):
    prompts = prompts_with_prefix(10, 30, seed=1)
    sp = {"max_new_tokens": 48, **GREEDY}
    ref = engine.generate(input_ids=prompts, sampling_params=sp)
    with make_engine(tiny_llama_path, max_total_tokens=256) as small:
        got = small.generate(input_ids=prompts, sampling_params=sp)
        assert small.stats()["retractions"] > 0
        small.check_invariant()
    assert ids_text(got) == ids_text(ref)
    assert all(o["meta_info"]["completion_tokens"] == 48 for o in got)
    with make_engine(tiny_llama_path, max_total_tokens=64) as tiny:
        with pytest.raises(ValueError, match="KV cache holds only 64"):
            tiny.generate(input_ids=list(range(100, 200)), sampling_params=sp)
        # a lone request that would outgrow the pool mid-decode is refused up front (it used to be
        # admitted and aborted half-way)
        with pytest.raises(ValueError, match="needs more than the KV cache's 64 tokens"):
            tiny.generate(input_ids=list(range(100, 150)), sampling_params={"max_new_tokens": 40, **GREEDY})
        out = tiny.generate(input_ids=list(range(100, 150)), sampling_params={"max_new_tokens": 14, **GREEDY})
        assert out["meta_info"]["completion_tokens"] == 14  # exactly the pool: served whole
        tiny.check_invariant()
    assert tiny.model_runner is None  # shutdown dropped the model and the pool
    tiny.abort("anything")
    with pytest.raises(RuntimeError, match="shut down"):
        tiny.generate("hi")
    with pytest.raises(RuntimeError, match="shut down"):
        tiny.stats()


def test_chunked_prefill_fcfs_and_no_cache_equal_default(engine, tiny_llama_path):
    prompts = prompts_with_prefix(6, 70, seed=2)
    sp = {"max_new_tokens": 6, **GREEDY}
    ref = ids_text(engine.generate(input_ids=prompts, sampling_params=sp))
    for kw in ({"chunked_prefill_size": 16}, {"schedule_policy": "fcfs"}, {"disable_radix_cache": True}):
        with make_engine(tiny_llama_path, **kw) as e:
            assert ids_text(e.generate(input_ids=prompts, sampling_params=sp)) == ref, kw
            e.check_invariant()


def test_mixed_chunk_decodes_inside_prefills_with_the_same_outputs(engine, tiny_llama_path):
    """--enable-mixed-chunk: requests admitted over several rounds (small prefill budget, chunked)
    prefill while earlier ones decode in the same forward; tokens and logprobs equal the default."""
    prompts = prompts_with_prefix(10, 40, seed=5) + [[7 + i for i in range(90)]]
    sp = {"max_new_tokens": 12, **GREEDY}
    assert engine.flush_cache()
    ref = engine.generate(input_ids=prompts, sampling_params=sp, return_logprob=True)
    with make_engine(tiny_llama_path, enable_mixed_chunk=True, max_prefill_tokens=48, chunked_prefill_size=32) as e:
        outs = e.generate(input_ids=prompts, sampling_params=sp, return_logprob=True)
        stats = e.stats()
        e.check_invariant()
    assert stats["forward_mixed"] > 0
    assert ids_text(outs) == ids_text(ref)
    for o, r in zip(outs, ref):
        got = [t for _, t, _ in o["meta_info"]["output_token_logprobs"]]
        assert got == [t for _, t, _ in r["meta_info"]["output_token_logprobs"]]
        for (a, _, _), (b, _, _) in zip(o["meta_info"]["output_token_logprobs"], r["meta_info"]["output_token_logprobs"]):
            assert abs(a - b) < 1e-4


def test_logprobs_consistent_with_full_prefill(engine, tiny_llama_path):
    prompt = prompts_with_prefix(1, 40, seed=3)[0]
    kw = dict(return_logprob=True, logprob_start_len=0, top_logprobs_num=2)
    engine.flush_cache()
    full = engine.generate(input_ids=prompt, sampling_params={"max_new_tokens": 5, **GREEDY}, **kw)["meta_info"]
    with make_engine(tiny_llama_path, chunked_prefill_size=7) as e:
        e.generate(input_ids=prompt[:30], sampling_params={"max_new_tokens": 1})  # a cached prefix
        part = e.generate(input_ids=prompt, sampling_params={"max_new_tokens": 5, **GREEDY}, **kw)["meta_info"]
    assert len(full["input_token_logprobs"]) == len(prompt) == len(part["input_token_logprobs"])
    assert full["input_token_logprobs"][0][0] is None
    for a, b in zip(full["input_token_logprobs"][1:], part["input_token_logprobs"][1:]):
        assert a[1] == b[1] and a[0] == pytest.approx(b[0], abs=1e-4)
    assert [t for _, t, _ in full["output_token_logprobs"]] == [t for _, t, _ in part["output_token_logprobs"]]
    # an output token's logprob equals its input logprob when prompt + output is prefilled
    out_ids = [t for _, t, _ in full["output_token_logprobs"]]
    again = engine.generate(input_ids=prompt + out_ids, sampling_params={"max_new_tokens": 0},
                            return_logprob=True, logprob_start_len=len(prompt))["meta_info"]
    for (lp, t, _), (lp2, t2, _) in zip(full["output_token_logprobs"], again["input_token_logprobs"]):
        assert t == t2 and lp == pytest.approx(lp2, abs=1e-4)
    assert len(full["input_top_logprobs"]) == len(prompt) and len(full["output_top_logprobs"]) == 5
    vals = [lp for lp, _, _ in full["input_token_logprobs"][1:]]
    assert full["normalized_prompt_logprob"] == pytest.approx(sum(vals) / len(vals), abs=1e-5)
    engine.check_invariant()


def test_prefill_only_returns_prompt_tokens_and_caches(engine):
    engine.flush_cache()
    p = prompts_with_prefix(1, 50, seed=4)[0]
    out = engine.generate(input_ids=p, sampling_params={"max_new_tokens": 0})
    assert out["text"] == "" and out["meta_info"]["prompt_tokens"] == len(p)
    assert out["meta_info"]["completion_tokens"] == 0
    nxt = engine.generate(input_ids=p + [500], sampling_params={"max_new_tokens": 1})
    assert nxt["meta_info"]["cached_tokens"] == len(p)


def test_batch_n_stream_abort_and_async(engine):
    outs = engine.generate(["one two", "three"], {"max_new_tokens": 3, "n": 2, **GREEDY})
    assert len(outs) == 4 and outs[0]["text"] == outs[1]["text"] and outs[2]["text"] == outs[3]["text"]
    single = engine.generate("one two", {"max_new_tokens": 3, **GREEDY})
    assert single["text"] == outs[0]["text"]

    chunks = list(engine.generate("stream me", {"max_new_tokens": 5, **GREEDY}, stream=True))
    assert len(chunks) == 5 and chunks[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    assert all(chunks[-1]["text"].startswith(c["text"]) for c in chunks)

    gen = engine.generate("abort me", {"max_new_tokens": 2000, **GREEDY}, stream=True, rid="abort-1")
    assert next(gen)["meta_info"]["finish_reason"] is None
    engine.abort("abort-1")
    last = list(gen)[-1]
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    engine.abort("no-such-rid")

    async def many():
        coros = [engine.async_generate("async", {"max_new_tokens": 4, **GREEDY}) for _ in range(8)]
        res = await asyncio.gather(*coros)
        items = [o async for o in engine.async_generate("async", {"max_new_tokens": 4, **GREEDY}, stream=True)]
        return res, items

    res, items = asyncio.run(many())
    assert len({r["text"] for r in res}) == 1 and items[-1]["text"] == res[0]["text"]
    engine.check_invariant()


@pytest.mark.parametrize("kwargs, field", [
    ({"input_ids": list(range(5000))}, "prompt has 5000 tokens"),
    ({"text": "hi", "sampling_params": {"max_new_tokens": 4000}}, "max_new_tokens"),
    ({"text": "hi", "sampling_params": {"max_tokens": 3}}, "max_tokens"),
    ({"text": "hi", "sampling_params": {"temperature": -1}}, "temperature"),
    ({"text": "hi", "sampling_params": {"top_p": 0}}, "top_p"),
    ({"text": "hi", "sampling_params": {"top_p": 1.5}}, "top_p"),
    ({"text": ""}, "empty"),
    ({"input_ids": []}, "empty"),
    ({"input_ids": [1, 2, 49152]}, "input_ids contains 49152"),
    ({"input_ids": [1, -3]}, "input_ids contains -3"),
    ({"text": ["ok", "fine"], "sampling_params": [{}, {"temperature": -2}]}, "request 1: sampling_params.temperature"),
    ({"text": "hi", "logprob_start_len": 9}, "logprob_start_len"),
    ({"text": "hi", "top_logprobs_num": -1}, "top_logprobs_num"),
    ({}, "text / input_ids"),
])
def test_bad_input_is_a_value_error_naming_the_field(engine, kwargs, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        engine.generate(**kwargs)
    assert engine.generate("still serving", {"max_new_tokens": 1})["meta_info"]["completion_tokens"] == 1


def test_concurrent_callers_with_streams_and_aborts_leave_the_pool_exact(engine):
    rng = random.Random(5)
    prompts = prompts_with_prefix(24, 40, seed=6)
    errors: list[BaseException] = []

    def caller(i: int) -> None:
        try:
            sp = {"max_new_tokens": rng.randrange(1, 30), **GREEDY}
            if i % 3 == 0:
                rid = f"cc-{i}"
                chunks = engine.generate(input_ids=prompts[i], sampling_params=sp, stream=True, rid=rid)
                for j, c in enumerate(chunks):
                    if j == 2:
                        engine.abort(rid)
                assert c["meta_info"]["finish_reason"] is not None
            elif i % 3 == 1:
                out = engine.generate(input_ids=[prompts[i], prompts[i - 1]], sampling_params=sp)
                assert len(out) == 2 and out[0]["meta_info"]["prompt_tokens"] == len(prompts[i])
            else:
                out = asyncio.run(engine.async_generate(input_ids=prompts[i], sampling_params=sp))
                assert out["meta_info"]["completion_tokens"] == sp["max_new_tokens"]
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    engine.check_invariant()
    assert engine.stats()["running"] == 0 and engine.stats()["waiting"] == 0


def test_mixed_chunk_with_a_tight_pool_still_matches(engine, tiny_llama_path):
    """A pool too small to hold everything: mixing must never take the slots the admitted prefill needs
    (the step would fail); retraction and re-prefill keep the outputs equal."""
    prompts = prompts_with_prefix(8, 30, seed=9)
    sp = {"max_new_tokens": 20, **GREEDY}
    assert engine.flush_cache()
    ref = ids_text(engine.generate(input_ids=prompts, sampling_params=sp))
    with make_engine(tiny_llama_path, enable_mixed_chunk=True, max_total_tokens=160, max_prefill_tokens=40,
                     chunked_prefill_size=24) as e:
        outs = e.generate(input_ids=prompts, sampling_params=sp)
        assert all(o["meta_info"]["finish_reason"]["type"] == "length" for o in outs)
        stats = e.stats()
        e.check_invariant()
    assert stats["forward_mixed"] > 0
    assert ids_text(outs) == ref
