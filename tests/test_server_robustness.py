"""HTTP server robustness (issue 13): inputs that used to be 500s get a 400/413 naming the problem, the
connection stays usable, output sizes are capped, and admission work (constraint compiles, long prompts)
runs in a bounded pool off the event loop with a time budget, so /health answers meanwhile.

A real uvicorn server on a free loopback port over a tiny dummy-weight Llama with a small KV pool.
Slow admissions are simulated by wrapping `engine.async_generate` so that it blocks on an Event: the
tests wait on events, never on wall-clock time.
"""
from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from server_helpers import wait_until

from sglang.runtime.server import common
from sglang.runtime.server.launch import BackgroundServer

POOL = 1024


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    from sglang.runtime.engine import Engine

    eng = Engine(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=POOL,
                 max_batch_size_per_request=8, random_seed=1)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def server(engine):
    with BackgroundServer(engine) as srv:
        yield srv


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _schema(depth: int) -> str:
    inner = '{"type": "string"}'
    for _ in range(depth):
        inner = '{"type": "object", "properties": {"a": %s}}' % inner
    return inner


SP = '"sampling_params": {"max_new_tokens": 2%s}'
BAD_NATIVE = [
    ("deep body", '{"text": "a", "sampling_params": {"stop": %s}}' % _deep(10_000), "nested deeper"),
    ("deep text", '{"text": %s}' % _deep(10_000), "nested deeper"),
    ("lone surrogate", '{"text": "a\\ud800b", %s}' % (SP % ""), "lone surrogate"),
    ("surrogate in stop", '{"text": "a", %s}' % (SP % ', "stop": ["\\udfff"]'), "lone surrogate"),
    ("seed Infinity, stream, n=2", '{"text": "a", "stream": true, %s}' % (SP % ', "seed": Infinity, "n": 2'),
     "not valid JSON"),
    ("seed 1e30, stream, n=2", '{"text": "a", "stream": true, %s}' % (SP % ', "seed": 1e30, "n": 2'),
     "sampling_params.seed"),
    ("NaN temperature", '{"text": "a", %s}' % (SP % ', "temperature": NaN'), "not valid JSON"),
    ("n 0", '{"text": "a", %s}' % (SP % ', "n": 0'), "sampling_params.n"),
    ("n 0 stream", '{"text": "a", "stream": true, %s}' % (SP % ', "n": 0'), "sampling_params.n"),
    ("invalid stop_regex", '{"text": "a", %s}' % (SP % ', "stop_regex": "(("'), "stop_regex"),
    ("deep json_schema", '{"text": "a", %s}' % (SP % (', "json_schema": %s' % json.dumps(_schema(2000)))),
     "json_schema"),
    ("top_logprobs_num over the cap", '{"text": "a", "return_logprob": true, "top_logprobs_num": 50000, %s}'
     % (SP % ""), "top_logprobs_num"),
    ("larger than the KV pool", '{"text": "a", "sampling_params": {"max_new_tokens": 1500, "ignore_eos": true}}',
     "max_total_tokens"),
    ("5 MB prompt", json.dumps({"text": "ab " * 1_700_000, "sampling_params": {"max_new_tokens": 2}}),
     "characters"),
]


@pytest.mark.parametrize("name,body,needle", BAD_NATIVE, ids=[c[0] for c in BAD_NATIVE])
def test_bad_native_bodies_get_a_400_and_keep_the_connection(client, name, body, needle):
    r = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"
    assert r.headers.get("connection", "").lower() != "close"  # a 500 used to close the keep-alive connection
    assert client.get("/health").status_code == 200


def test_bad_openai_bodies_get_a_400(client, engine):
    model = engine.server_args.model_path
    deep = {"type": "json_schema", "json_schema": {"name": "x", "schema": json.loads(_schema(200))}}
    cases = [
        ({"model": model, "prompt": "a\ud800b", "max_tokens": 2}, "/v1/completions", "lone surrogate"),
        ({"model": model, "prompt": "a", "max_tokens": 2, "n": 0}, "/v1/completions", "n must be"),
        ({"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "response_format": deep},
         "/v1/chat/completions", "nested deeper"),
        ({"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
          "json_schema": _schema(500)}, "/v1/chat/completions", "json_schema"),
    ]
    for body, path, needle in cases:
        # json.dumps keeps the lone surrogate as an escape (httpx's json= would refuse to encode it)
        r = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 400 and needle in r.json()["error"]["message"], (path, r.text)


def test_top_logprobs_num_at_the_cap_is_served(client):
    body = {"text": "a", "return_logprob": True, "top_logprobs_num": 20, "sampling_params": {"max_new_tokens": 1}}
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["meta_info"]["output_top_logprobs"][0]) == 20


def test_request_that_fits_the_pool_exactly_is_accepted(client):
    body = {"input_ids": [5, 6], "sampling_params": {"max_new_tokens": 3, "ignore_eos": True}}
    assert client.post("/generate", json=body).status_code == 200
    body["sampling_params"]["max_new_tokens"] = POOL - 1
    r = client.post("/generate", json=body)
    assert r.status_code == 400 and "max_total_tokens" in r.json()["error"]["message"]


def test_body_size_limit(client, monkeypatch):
    monkeypatch.setattr(common, "MAX_BODY_BYTES", 1000)
    big = json.dumps({"text": "a" * 2000})
    r = client.post("/generate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1000 bytes" in r.json()["error"]["message"]
    # chunked (no Content-Length): counted while reading
    r = client.post("/generate", content=iter([big[:600].encode(), big[600:].encode()]))
    assert r.status_code == 413
    assert client.post("/generate", json={"text": "a", "sampling_params": {"max_new_tokens": 1}}).status_code == 200


def _count_499(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("sglang_http_requests_total{") and 'status="499"' in line and "/generate" in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_client_leaving_while_sending_its_body_is_a_quiet_499(client, server, caplog):
    before = _count_499(client)
    host, port = server.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"text\": ")
    wait_until(lambda: _count_499(client) != before, 30, "the server never counted the 499")
    assert _count_499(client) == before + 1
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


# --------------------------------------------------------------------------- admission off the event loop

class _Gate:
    """Wraps engine.async_generate: requests with a regex block in their admission until `release`."""

    def __init__(self, engine) -> None:
        self.real = engine.async_generate
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, **kwargs):
        if (kwargs.get("sampling_params") or {}).get("regex"):
            self.entered.set()
            assert self.release.wait(60)
        return self.real(**kwargs)


def _post_in_thread(url: str, body: dict, results: list) -> threading.Thread:
    t = threading.Thread(target=lambda: results.append(httpx.post(url + "/generate", json=body, timeout=60)))
    t.start()
    return t


def test_constraint_admission_runs_off_the_event_loop(client, server, engine, monkeypatch):
    gate = _Gate(engine)
    monkeypatch.setattr(engine, "async_generate", gate)
    results: list = []
    t = _post_in_thread(server.url, {"text": "a", "sampling_params": {"max_new_tokens": 3, "regex": "[a-z]{1,3}"}},
                        results)
    try:
        assert gate.entered.wait(60)
        # the constrained request is still being admitted: the loop serves everyone else meanwhile
        assert client.get("/health").status_code == 200
        plain = client.post("/generate", json={"text": "b", "sampling_params": {"max_new_tokens": 2}})
        assert plain.status_code == 200
        assert not results
    finally:
        gate.release.set()
        t.join(60)
    assert results[0].status_code == 200, results[0].text
    assert set(results[0].json()["text"]) <= set("abcdefghijklmnopqrstuvwxyz")


def test_admission_time_budget_and_queue_bound(client, server, engine, monkeypatch):
    gate = _Gate(engine)
    monkeypatch.setattr(engine, "async_generate", gate)
    monkeypatch.setattr(common, "PREPARE_POOL", common.PreparePool(workers=1, max_pending=1, timeout_s=0.2))
    body = {"text": "a", "sampling_params": {"max_new_tokens": 2, "regex": "[ab]"}}
    try:
        r = client.post("/generate", json=body)  # blocks past the budget: the client gets its answer
        assert r.status_code == 400 and r.json()["error"]["code"] == "prepare_timeout"
        assert gate.entered.is_set()
        r = client.post("/generate", json=body)  # the timed-out job still holds the only slot
        assert r.status_code == 503 and "busy" in r.json()["error"]["message"]
        assert client.get("/health").status_code == 200
    finally:
        gate.release.set()


def test_deeply_nested_constraint_is_a_400_not_a_500(client, engine, monkeypatch):
    def recursing(**kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(engine, "async_generate", recursing)
    r = client.post("/generate", json={"text": "a", "sampling_params": {"regex": "(" * 50 + ")" * 50}})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"]


def test_huge_chat_is_refused_before_tokenizing(client, engine):
    body = {"model": engine.server_args.model_path, "messages": [{"role": "user", "content": "ab " * 1_700_000}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "characters" in r.json()["error"]["message"]
    # > 8192 characters (runs of spaces: few tokens) are tokenized in the pool; with no max_tokens the
    # output may fill what the KV pool (smaller than the context here) has left, so this is not a 400;
    # the bias on EOS (id 2) ends it at once
    long_ok = {"model": engine.server_args.model_path, "messages": [{"role": "user", "content": " " * 9000 + "hi"}],
               "temperature": 0, "logit_bias": {"2": 100}}
    r = client.post("/v1/chat/completions", json=long_ok)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 100 and r.json()["choices"][0]["finish_reason"] == "stop"


def test_admission_queues_jobs_beyond_its_workers_and_times_each_from_its_start():
    """Many clients preparing at once (the same cached regex, SGLang's 4-text selects) are load, not abuse: jobs
    beyond the workers wait in the queue, and a job's time budget starts when it runs, not when it queued."""
    import asyncio
    import threading

    pool = common.PreparePool(workers=1, max_pending=64, timeout_s=3.0)
    release = threading.Event()
    first_running = threading.Event()

    def slow() -> str:
        first_running.set()
        release.wait(60)
        return "slow"

    async def main() -> list:
        first = asyncio.ensure_future(pool.run(slow))
        while not first_running.is_set():
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(pool.run(lambda i=i: i)) for i in range(20)]
        # 20 jobs wait behind the one worker for longer than the 3 s budget; none may be refused or timed out
        # (each then runs in microseconds, far inside its own budget)
        await asyncio.sleep(3.5)
        assert not any(q.done() for q in queued)
        release.set()
        with pytest.raises(common.HTTPError, match="longer than"):  # the running job did pass its own budget
            await first
        return [await q for q in queued]

    assert asyncio.run(main()) == list(range(20))
