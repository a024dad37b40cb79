"""The router in front of two of our servers (tiny dummy-weight Llama, loopback): same greedy outputs as
one server, cache-aware routing keeps a prefix group on one worker (decisions and cached_tokens), a
stopped worker's requests are retried on the other, the health check drops and re-adds a worker, and
a stream cut after it began ends with an error event."""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx
import pytest
from server_helpers import wait_idle

from sglang.runtime.router.app import create_router_app
from sglang.runtime.router.router import Router
from sglang.runtime.server.launch import BackgroundServer, free_port

GREEDY = {"max_new_tokens": 6, "temperature": 0.0, "ignore_eos": True}
PROMPTS = [f"Question {i}: what comes after {i}?" for i in range(6)]


def _engine(path):
    from sglang.runtime.engine import Engine

    return Engine(model_path=path, load_format="dummy", max_total_tokens=32768)


@pytest.fixture(scope="module")
def engines(tiny_llama_path):
    pair = [_engine(tiny_llama_path), _engine(tiny_llama_path)]  # same seeded dummy weights
    yield pair
    for e in pair:
        e.shutdown()


@pytest.fixture
def workers(engines):
    servers = [BackgroundServer(e) for e in engines]
    yield servers
    for s in servers:
        s.stop()
    for e in engines:
        wait_idle(e, settle=True)


def _serve_router(urls, policy="round_robin", **kwargs) -> tuple[Router, BackgroundServer]:
    router = Router.from_urls(urls, policy, **kwargs)
    health_loop = kwargs.get("check_interval") is not None
    return router, BackgroundServer(None, {}, app=create_router_app(router, health_loop=health_loop))


def _generate(base: str, text: str, **extra) -> httpx.Response:
    r = httpx.post(f"{base}/generate", json={"text": text, "sampling_params": GREEDY, **extra}, timeout=60)
    assert r.status_code == 200, r.text
    return r


def _last_event(r: httpx.Response) -> dict:
    events = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]", events
    return json.loads(events[-2])


def _flush(engines, urls) -> None:
    for e in engines:
        wait_idle(e)
    for u in urls:
        assert httpx.post(f"{u}/flush_cache", timeout=30).status_code == 200


def test_router_gives_the_same_greedy_outputs_as_one_server(workers):
    a, b = workers
    router, front = _serve_router([a.url, b.url])
    with front:
        used = set()
        for p in PROMPTS:
            via = _generate(front.url, p)
            used.add(via.headers["x-sglang-worker"])
            assert via.json()["text"] == _generate(a.url, p).json()["text"]
            streamed = _generate(front.url, p, stream=True)
            used.add(streamed.headers["x-sglang-worker"])
            assert _last_event(streamed)["text"] == via.json()["text"]
        assert used == {a.url, b.url}
        model = httpx.get(f"{front.url}/v1/models").json()["data"][0]["id"]
        body = {"model": model, "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0}
        direct = httpx.post(f"{a.url}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        for _ in range(2):  # both workers
            r = httpx.post(f"{front.url}/v1/completions", json=body, timeout=60)
            assert r.json()["choices"][0]["text"] == direct
        streamed = httpx.post(f"{front.url}/v1/completions", json={**body, "stream": True}, timeout=60)
        events = [line[5:].strip() for line in streamed.text.splitlines() if line.startswith("data:")]
        assert events[-1] == "[DONE]"
        assert "".join(c["text"] for e in events[:-1] for c in json.loads(e).get("choices", [])) == direct
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0}
        direct = httpx.post(f"{a.url}/v1/chat/completions", json=chat, timeout=60).json()
        via = httpx.post(f"{front.url}/v1/chat/completions", json=chat, timeout=60).json()
        assert via["choices"][0]["message"] == direct["choices"][0]["message"]
        assert httpx.get(f"{front.url}/get_model_info").json() == httpx.get(f"{a.url}/get_model_info").json()
        bad = httpx.post(f"{front.url}/generate", content=b"{not json", timeout=30)
        assert bad.status_code == 400  # the worker's own answer to a malformed body, passed on
        assert httpx.get(f"{front.url}/health").status_code == 200


def test_cache_aware_keeps_each_prefix_group_on_one_worker(workers, engines):
    urls = [w.url for w in workers]
    groups = [f"Group {g} system prompt. " + "Answer briefly and politely, citing sources. " * 6
              for g in range(3)]
    workload = [f"{groups[g]}Question {i}?" for i in range(4) for g in range(3)]
    cached = {}
    for policy in ("cache_aware", "round_robin"):
        _flush(engines, urls)
        router, front = _serve_router(urls, policy)
        with front:
            metas = [_generate(front.url, text).json()["meta_info"] for text in workload]
            flushed = httpx.post(f"{front.url}/flush_cache", timeout=30)
        cached[policy] = sum(m["cached_tokens"] for m in metas)
        if policy == "cache_aware":
            by_group = {g: {d.worker for d in list(router.decisions)[g::3]} for g in range(3)}
            assert all(len(ws) == 1 for ws in by_group.values()), by_group
            assert set().union(*by_group.values()) == set(urls)  # groups spread over both workers
            for m in metas[3:]:  # every request after its group's first finds the prefix cached
                assert m["cached_tokens"] >= m["prompt_tokens"] // 2, m
        assert flushed.status_code in (200, 400)
    assert cached["cache_aware"] > cached["round_robin"]


def test_a_stopped_worker_loses_no_request(workers, engines):
    a, b = workers
    reference = {p: _generate(a.url, p).json()["text"] for p in PROMPTS}
    router, front = _serve_router([a.url, b.url])
    done = []
    four_done = threading.Event()

    def one(i: int) -> str:
        p = PROMPTS[i % len(PROMPTS)]
        r = httpx.post(f"{front.url}/generate", json={"text": p, "sampling_params": GREEDY, "stream": i % 2 == 0},
                       timeout=60)
        assert r.status_code == 200, r.text
        text = _last_event(r)["text"] if i % 2 == 0 else r.json()["text"]
        done.append(i)
        if len(done) >= 4:
            four_done.set()
        return text == reference[p]

    with front, concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(16)]
        assert four_done.wait(60)  # an event, not a polled clock: stop b once 4 requests are answered
        b.stop()  # mid-run: its in-flight requests finish, new ones are refused
        assert all(f.result() for f in futures)
        assert all(one(i) for i in range(16, 20))  # sequential: round robin offers b at least once more
        states = {w["url"]: w for w in httpx.get(f"{front.url}/workers").json()["workers"]}
        assert states[b.url]["healthy"] is False and states[a.url]["healthy"] is True
        assert router.counters["retries"] >= 1
        assert all(w["in_flight"] == 0 for w in states.values())
        assert "sglang_router_events_total" in httpx.get(f"{front.url}/metrics").text


def test_health_check_drops_and_readds_a_worker(workers, engines):
    a, b = workers
    router, front = _serve_router([a.url, b.url], check_interval=0.05, fail_threshold=1)

    def healthy() -> set:
        return {w["url"] for w in httpx.get(f"{front.url}/workers").json()["workers"] if w["healthy"]}

    def wait_for(expected: set) -> None:
        deadline = time.monotonic() + 30
        while healthy() != expected:
            assert time.monotonic() < deadline, healthy()
            time.sleep(0.05)

    with front:
        wait_for({a.url, b.url})
        b.stop()
        wait_for({a.url})
        assert {_generate(front.url, p).headers["x-sglang-worker"] for p in PROMPTS[:3]} == {a.url}
        revived = BackgroundServer(engines[1], port=b.port)
        try:
            wait_for({a.url, b.url})
            assert {_generate(front.url, p).headers["x-sglang-worker"] for p in PROMPTS[:4]} == {a.url, b.url}
        finally:
            revived.stop()


def test_no_healthy_worker_is_503_with_retry_after():
    dead = f"http://127.0.0.1:{free_port()}"
    _, front = _serve_router([dead])
    with front:
        assert httpx.get(f"{front.url}/health").status_code == 503
        r = httpx.post(f"{front.url}/generate", json={"text": "x"}, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] and "no healthy worker" in r.json()["error"]["message"]
        listed = httpx.get(f"{front.url}/workers").json()
        assert listed["policy"] == "round_robin" and listed["workers"][0]["healthy"] is False
        added = httpx.post(f"{front.url}/workers", params={"url": "ftp://nowhere"})
        assert added.status_code == 400
        assert httpx.request("DELETE", f"{front.url}/workers", params={"url": dead}).status_code == 200
        assert httpx.get(f"{front.url}/workers").json()["workers"] == []


def _cut_stream_app():
    """A worker whose stream sends one event, then its connection breaks."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {}

    @app.post("/generate")
    async def generate() -> StreamingResponse:
        async def events():
            yield b'data: {"text": "partial"}\n\n'
            raise RuntimeError("worker crashed")
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_http_stream_cut_after_it_began_ends_with_an_error_event():
    with BackgroundServer(None, {}, app=_cut_stream_app()) as worker:
        _, front = _serve_router([worker.url])
        with front:
            r = httpx.post(f"{front.url}/generate", json={"text": "x", "stream": True}, timeout=30)
            events = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
    assert json.loads(events[0]) == {"text": "partial"}
    assert "after the response started streaming" in json.loads(events[1])["error"]["message"]
    assert events[-1] == "[DONE]"


def test_sglang_router_command_line(capsys):
    from sglang.cli import main

    assert main(["router", "--worker-urls", "localhost:1"]) == 2
    assert "must start with http://" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["router", "--help"])
    assert "--balance-abs-threshold" in capsys.readouterr().out


def test_bench_router_compares_both_policies_in_one_run(workers, engines, tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench_dir))
    try:
        spec = importlib.util.spec_from_file_location("bench_router", bench_dir / "bench_router.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        for e in engines:
            wait_idle(e)
        # one request at a time: each group's later requests find their prefix cached wherever it went
        out = bench.main(["--worker-urls", *[w.url for w in workers], "--router-port", str(free_port()),
                          "--gsp-num-groups", "4", "--gsp-prompts-per-group", "4", "--gsp-system-prompt-len", "48",
                          "--gsp-question-len", "4", "--gsp-output-len", "2", "--max-concurrency", "1",
                          "--out", str(tmp_path / "router.json")])
    finally:
        sys.path.remove(str(bench_dir))
    ca, rr = out["cache_aware"], out["round_robin"]
    assert ca["completed"] == rr["completed"] == 16 and ca["failed"] == rr["failed"] == 0
    # cache-aware: 1 cold request per group; round robin: each group lands cold on both workers
    assert ca["cache_hit_rate"] == pytest.approx(12 * 48 / (16 * 52), abs=0.05)
    assert rr["cache_hit_rate"] < ca["cache_hit_rate"] - 0.1
    assert json.loads((tmp_path / "router.json").read_text())["throughput_ratio"] > 0
