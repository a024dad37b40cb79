"""Engine(scheduler_process=True): the scheduler in a spawned child gives the same outputs as the in-process
scheduler thread (batch, n>1, logprobs, streaming, constraints, stop strings), abort/stats/flush work, init
errors surface in the parent, and no child outlives its engine or its parent; plus stream coalescing.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from server_helpers import child_pids, process_gone, wait_gone, wait_idle

GREEDY = {"temperature": 0, "max_new_tokens": 12, "ignore_eos": True}
PROMPTS = ["The capital of France is", "def fib(n):", "Once upon a time", "1, 2, 3, 4,"]


def _make(path: str, **kw):
    from sglang.runtime.engine import Engine

    return Engine(model_path=path, load_format="dummy", dtype="float32", device="cpu", max_total_tokens=8192, **kw)


@pytest.fixture(scope="module")
def thread_engine(tiny_llama_path):
    eng = _make(tiny_llama_path)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def proc_engine(tiny_llama_path):
    eng = _make(tiny_llama_path, scheduler_process=True)
    yield eng
    eng.shutdown()


def _strip_ids(out):
    if isinstance(out, list):
        return [_strip_ids(o) for o in out]
    return {**out, "meta_info": {k: v for k, v in out["meta_info"].items() if k != "id"}}


def test_process_mode_has_no_model_in_the_parent(proc_engine, thread_engine):
    assert proc_engine.model_runner is None and thread_engine.model_runner is not None
    assert proc_engine.scheduler.proc.is_alive() and proc_engine.scheduler.proc.pid != os.getpid()
    assert (proc_engine.vocab_size, proc_engine.context_len, proc_engine.pool_size) == (
        thread_engine.vocab_size, thread_engine.context_len, thread_engine.pool_size)


def test_same_greedy_outputs_as_in_process(proc_engine, thread_engine):
    kw = dict(return_logprob=True, top_logprobs_num=2, logprob_start_len=0)
    a = thread_engine.generate(PROMPTS, GREEDY, **kw)
    b = proc_engine.generate(PROMPTS, GREEDY, **kw)
    assert _strip_ids(a) == _strip_ids(b)
    sp = {"temperature": 0.8, "max_new_tokens": 8, "n": 3, "seed": 7}
    assert _strip_ids(thread_engine.generate(PROMPTS[:2], sp)) == _strip_ids(proc_engine.generate(PROMPTS[:2], sp))
    stop = {"temperature": 0, "max_new_tokens": 16, "stop": [" the", "e"]}
    assert _strip_ids(thread_engine.generate(PROMPTS, stop)) == _strip_ids(proc_engine.generate(PROMPTS, stop))
    wait_idle(proc_engine)


@pytest.mark.parametrize("constraint", [{"regex": r"(yes|no), [0-9]{3}"},
                                        {"json_schema": json.dumps({"type": "object", "properties": {
                                            "a": {"type": "integer"}}, "required": ["a"]})},
                                        {"ebnf": 'root ::= "x" "y"+'}])
def test_constrained_decoding_matches(proc_engine, thread_engine, constraint):
    sp = {"temperature": 0, "max_new_tokens": 24, **constraint}
    assert _strip_ids(thread_engine.generate("Answer: ", sp)) == _strip_ids(proc_engine.generate("Answer: ", sp))


def test_bad_requests_raise_in_the_parent(proc_engine):
    with pytest.raises(ValueError, match="regex"):
        proc_engine.generate("x", {"regex": "(unclosed"})
    with pytest.raises(ValueError, match="temperature"):
        proc_engine.generate("x", {"temperature": -1})
    assert proc_engine.generate("x", {"max_new_tokens": 2})["meta_info"]["completion_tokens"] <= 2


def test_streaming_sync_and_async(proc_engine):
    final = proc_engine.generate(PROMPTS[0], GREEDY)
    chunks = list(proc_engine.generate(PROMPTS[0], GREEDY, stream=True))
    assert len(chunks) == GREEDY["max_new_tokens"] and chunks[-1]["text"] == final["text"]
    assert [c["meta_info"]["finish_reason"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]

    async def run():
        outs = [o async for o in proc_engine.async_generate(PROMPTS[0], GREEDY, stream=True)]
        single = await proc_engine.async_generate(PROMPTS[1], GREEDY)
        return outs, single

    outs, single = asyncio.run(run())
    assert outs[-1]["text"] == final["text"] and len(outs) == len(chunks)
    assert single["text"] == proc_engine.generate(PROMPTS[1], GREEDY)["text"]


def test_coalesced_stream_skips_to_the_latest(proc_engine):
    """Outputs that pile up while the consumer is away are coalesced into the latest one.

    Deterministic: after the first output the consumer blocks (its event loop too) until the scheduler
    is idle. Results of calls like stats() come back on the same pipe as outputs, after them, so by then
    every output has been delivered to the stream: the next read gets them all and yields only the last."""
    sp = {"temperature": 0, "max_new_tokens": 60, "ignore_eos": True}

    async def run():
        outs = []
        async for o in proc_engine.async_generate(PROMPTS[2], sp, stream=True, coalesce=True):
            outs.append(o)
            if len(outs) == 1:
                wait_idle(proc_engine)
        return outs

    outs = asyncio.run(run())
    full = proc_engine.generate(PROMPTS[2], sp)
    assert len(outs) == 2
    assert outs[0]["meta_info"]["finish_reason"] is None
    # the same output as a plain run (cached_tokens may differ: the second run hits the prefix cache)
    last, ref = outs[-1], full
    assert last["text"] == ref["text"]
    assert last["meta_info"]["completion_tokens"] == ref["meta_info"]["completion_tokens"] == sp["max_new_tokens"]
    assert last["meta_info"]["prompt_tokens"] == ref["meta_info"]["prompt_tokens"]
    assert last["meta_info"]["finish_reason"] == ref["meta_info"]["finish_reason"]


def test_abort_then_pool_is_whole(proc_engine):
    sp = {"temperature": 0, "max_new_tokens": 2000, "ignore_eos": True}
    it = proc_engine.generate("abort me", sp, stream=True, rid="proc-abort")
    next(it)
    next(it)
    proc_engine.abort("proc-abort")
    last = list(it)[-1]
    assert last["meta_info"]["finish_reason"]["type"] == "abort"
    wait_idle(proc_engine)
    s = proc_engine.stats()
    assert s["aborted"] >= 1 and s["pool_size"] == proc_engine.pool_size
    assert proc_engine.flush_cache() is True
    s = proc_engine.stats()
    assert s["pool_free"] == s["pool_size"] and s["cache_hit_rate"] >= 0.0
    proc_engine.check_invariant()


def test_background_server_streams_over_process_engine(proc_engine):
    import httpx

    from sglang.runtime.server.launch import BackgroundServer

    with BackgroundServer(proc_engine) as srv:
        body = {"text": PROMPTS[0], "sampling_params": GREEDY, "stream": True}
        with httpx.stream("POST", srv.url + "/generate", json=body, timeout=60) as r:
            events = [ln[5:].strip() for ln in r.iter_lines() if ln.startswith("data:")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["text"] == proc_engine.generate(PROMPTS[0], GREEDY)["text"]
        chat = {"model": proc_engine.server_args.model_path, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 10, "temperature": 0, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=chat, timeout=60) as r:
            chunks = [json.loads(ln[5:]) for ln in r.iter_lines() if ln.startswith("data:") and "[DONE]" not in ln]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        whole = httpx.post(srv.url + "/v1/chat/completions", json={**chat, "stream": False}, timeout=60).json()
        assert text == whole["choices"][0]["message"]["content"]
    wait_idle(proc_engine)


def test_init_error_raises_promptly_with_the_in_process_error(tmp_path, tiny_llama_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((open(os.path.join(tiny_llama_path, "config.json"))).read())
    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["NoSuchModelForCausalLM"]}))
    for name in os.listdir(tiny_llama_path):
        if name != "config.json":
            (bad / name).write_bytes(open(os.path.join(tiny_llama_path, name), "rb").read())
    with pytest.raises(Exception) as in_proc:
        _make(str(bad))
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # spawn's helper process lives on by design: not a leaked child
    before = set(child_pids(os.getpid()))
    t0 = time.monotonic()
    with pytest.raises(type(in_proc.value)) as in_child:
        _make(str(bad), scheduler_process=True)
    assert time.monotonic() - t0 < 120
    assert str(in_child.value) == str(in_proc.value)
    assert set(child_pids(os.getpid())) <= before  # the failed child was reaped
    with pytest.raises(ValueError, match="does not exist"):
        _make(str(tmp_path / "missing"), scheduler_process=True)


def test_child_exits_when_the_parent_dies(tiny_llama_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from sglang.runtime.engine import Engine
        e = Engine(model_path={tiny_llama_path!r}, load_format="dummy", device="cpu", max_total_tokens=2048,
                   scheduler_process=True)
        print(e.scheduler.proc.pid, flush=True)
        os._exit(0)  # no shutdown: the child must notice on its own
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    pid = int(out.stdout.split()[-1])
    assert not wait_gone([pid], timeout=30), "the scheduler process outlived its parent"


def test_shutdown_leaves_no_child(proc_engine):
    proc = proc_engine.scheduler.proc
    pid = proc.pid
    proc_engine.shutdown()
    assert not proc.is_alive() and proc.exitcode == 0
    assert process_gone(pid)
    with pytest.raises(RuntimeError, match="shut down"):
        proc_engine.generate("x", GREEDY)


@pytest.mark.parametrize("coalesce", [False, True])
def test_merge_streams_coalesces_per_stream(coalesce):
    from sglang.runtime.server.common import merge_streams

    def out(i: int, k: int, last: bool) -> dict:
        return {"text": "x" * k, "meta_info": {"id": str(i), "finish_reason": {"type": "length"} if last else None}}

    async def stream(i: int):
        for k in range(2, 6):  # outputs that are ready at once: a consumer that falls behind
            yield out(i, k, k == 5)

    async def run():
        streams = {i: stream(i) for i in range(3)}
        first = {i: out(i, 1, False) for i in range(3)}
        return [(i, o["text"]) async for i, o in merge_streams(streams, first, coalesce=coalesce)]

    got = asyncio.run(run())
    for i in range(3):
        texts = [t for j, t in got if j == i]
        assert texts[0] == "x" and texts[-1] == "x" * 5 and texts == sorted(texts, key=len)
        assert len(texts) == (2 if coalesce else 5)
