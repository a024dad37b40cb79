"""HTTP server, native SGLang 0.2.x API: /generate (single, batch, n, logprobs, SSE), control endpoints,
bad input, API key, /metrics, and abort / client disconnect freeing the KV pool.

A real uvicorn server runs in a background thread on a free loopback port, over a real Engine on the
tiny dummy-weight Llama (module-scoped: one engine for the whole file).
"""
from __future__ import annotations

import json
import threading

import httpx
import pytest
from server_helpers import wait_idle

from sglang.runtime.server.launch import BackgroundServer


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    from sglang.runtime.engine import Engine

    eng = Engine(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=32768,
                 max_batch_size_per_request=8, random_seed=1)
    yield eng
    eng.shutdown()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def greedy(max_new_tokens: int = 8, **extra):
    return {"max_new_tokens": max_new_tokens, "temperature": 0.0, **extra}


def sse_events(lines) -> list:
    events = []
    for line in lines:
        if line.startswith("data:"):
            payload = line[5:].strip()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


# --------------------------------------------------------------------------- basics

def test_health_model_info_server_args(client, engine):
    assert client.get("/health").status_code == 200
    assert client.get("/health_generate").status_code == 200
    info = client.get("/get_model_info").json()
    assert info["is_generation"] is True
    assert info["model_path"] == engine.get_server_args().model_path
    args = client.get("/get_server_args").json()
    assert args["max_batch_size_per_request"] == 8 and args["load_format"] == "dummy"


def test_generate_matches_in_process_engine(client, engine):
    """The HTTP transport adds nothing: greedy text and token counts equal Engine.generate's."""
    body = {"text": "The capital of France is", "sampling_params": greedy(8, ignore_eos=True)}
    out = client.post("/generate", json=body).json()
    ref = engine.generate(text=body["text"], sampling_params=body["sampling_params"])
    assert out["text"] == ref["text"]
    meta = out["meta_info"]
    assert meta["completion_tokens"] == 8 and meta["finish_reason"]["type"] == "length"
    assert meta["prompt_tokens"] == len(engine.tokenizer.encode(body["text"]))
    assert isinstance(meta["id"], str) and meta["id"]


def test_long_text_prompt_tokenized_off_the_event_loop(client, engine):
    text = "internationalization " * 430  # > 8192 characters: tokenized in a worker thread
    out = client.post("/generate", json={"text": text, "sampling_params": greedy(2)})
    assert out.status_code == 200, out.text
    assert out.json()["meta_info"]["prompt_tokens"] == len(engine.tokenizer.encode(text))
    too_long = client.post("/generate", json={"text": "a b c d " * 2100, "sampling_params": greedy(2)})
    assert too_long.status_code == 400 and "context length" in too_long.json()["error"]["message"]


def test_generate_input_ids_batch_and_n(client):
    ids = [[1, 100, 200, 300], [1, 400, 500]]
    out = client.post("/generate", json={"input_ids": ids, "sampling_params": greedy(3, ignore_eos=True)}).json()
    assert isinstance(out, list) and [o["meta_info"]["prompt_tokens"] for o in out] == [4, 3]
    single = client.post("/generate", json={"input_ids": ids[1], "sampling_params": greedy(3, ignore_eos=True)}).json()
    assert single["text"] == out[1]["text"]
    texts = client.post("/generate", json={"text": ["a b", "c d"], "sampling_params": [greedy(2), greedy(4)],
                                           "rid": ["r-one", "r-two"]}).json()
    assert [t["meta_info"]["id"] for t in texts] == ["r-one", "r-two"]
    n_out = client.post("/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 2, "n": 3}}).json()
    assert isinstance(n_out, list) and len(n_out) == 3


def test_max_new_tokens_zero_caches_prefix(client):
    prefix = "A long shared system prompt about caching prefixes in a radix tree, " * 3
    first = client.post("/generate", json={"text": prefix, "sampling_params": {"max_new_tokens": 0}}).json()
    assert first["meta_info"]["completion_tokens"] == 0 and first["meta_info"]["prompt_tokens"] > 20
    second = client.post("/generate", json={"text": prefix + " and a question?", "sampling_params": greedy(2)}).json()
    assert second["meta_info"]["cached_tokens"] >= first["meta_info"]["prompt_tokens"] - 1


def test_logprobs_fields(client):
    body = {"text": "one two three four", "sampling_params": greedy(3, ignore_eos=True), "return_logprob": True,
            "logprob_start_len": 0, "top_logprobs_num": 2, "return_text_in_logprobs": True}
    meta = client.post("/generate", json=body).json()["meta_info"]
    n_prompt = meta["prompt_tokens"]
    assert len(meta["input_token_logprobs"]) == n_prompt and meta["input_token_logprobs"][0][0] is None
    assert len(meta["output_token_logprobs"]) == 3
    assert all(lp <= 0 and isinstance(tid, int) and isinstance(txt, str)
               for lp, tid, txt in meta["output_token_logprobs"])
    assert all(len(top) == 2 for top in meta["output_top_logprobs"])
    assert isinstance(meta["normalized_prompt_logprob"], float)


# --------------------------------------------------------------------------- streaming

def test_stream_native_cumulative_then_done(client):
    body = {"text": "Stream me", "sampling_params": greedy(6, ignore_eos=True), "stream": True}
    with client.stream("POST", "/generate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    outs = events[:-1]
    texts = [e["text"] for e in outs]
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))
    assert all(e["meta_info"]["finish_reason"] is None for e in outs[:-1])
    assert outs[-1]["meta_info"]["finish_reason"]["type"] == "length"
    assert outs[-1]["meta_info"]["completion_tokens"] == 6
    plain = client.post("/generate", json={**body, "stream": False}).json()
    assert outs[-1]["text"] == plain["text"]


def test_stream_batch_tags_index(client):
    body = {"text": ["x y", "z"], "sampling_params": greedy(3, ignore_eos=True), "stream": True}
    with client.stream("POST", "/generate", json=body) as r:
        events = sse_events(r.iter_lines())
    finals = {e["index"]: e for e in events[:-1] if e["meta_info"]["finish_reason"] is not None}
    assert sorted(finals) == [0, 1] and all(f["meta_info"]["completion_tokens"] == 3 for f in finals.values())


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("body, status, needle", [
    (b'{"text": "unterminated', 400, "malformed JSON"),
    (b'[1, 2]', 400, "JSON object"),
    ({"text": 5}, 400, "'text'"),
    ({"text": "a", "input_ids": [1, 2]}, 400, "exactly one of 'text' or 'input_ids'"),
    ({}, 400, "exactly one of 'text' or 'input_ids'"),
    ({"text": "a", "sampling_params": {"max_new_tokens": "ten"}}, 400, "max_new_tokens"),
    ({"text": "a", "sampling_params": {"temprature": 0.5}}, 400, "temprature"),
    ({"text": "a", "sampling_params": {"temperature": -1}}, 400, "temperature"),
    ({"text": "a", "return_logprob": "yes"}, 400, "'return_logprob'"),
    ({"text": "a", "bogus_field": 1}, 400, "bogus_field"),
    ({"text": ["a"] * 9}, 400, "max_batch_size_per_request=8"),
    ({"text": "a", "return_text_in_logprobs": 1}, 400, "return_text_in_logprobs"),
    ({"text": "a", "stream": True, "sampling_params": {"n": 0}}, 400, "sampling_params.n"),
    ({"text": "a", "stream": False, "sampling_params": {"n": "two"}}, 400, "sampling_params.n"),
    ({"text": "a", "sampling_params": {"dtype": "complex"}}, 400, "dtype"),
    ({"input_ids": [5] * 3000}, 400, "context length"),
    ({"text": "a", "sampling_params": {"max_new_tokens": 5000}}, 400, "context length"),
])
def test_bad_input_is_400_naming_the_problem(client, body, status, needle):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = client.post("/generate", **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    assert err["type"] == "invalid_request_error"
    # ...and the server keeps serving
    ok = client.post("/generate", json={"text": "still alive", "sampling_params": greedy(1)})
    assert ok.status_code == 200


def test_curl_style_form_content_type_still_parses_json(client):
    r = client.post("/generate", content=json.dumps({"text": "hi", "sampling_params": greedy(1)}),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 1


# --------------------------------------------------------------------------- control endpoints, abort, disconnect

def test_flush_cache_get_and_post(client, engine):
    client.post("/generate", json={"text": "fill the cache with something", "sampling_params": greedy(2)})
    wait_idle(engine, settle=True)
    assert client.get("/flush_cache").status_code == 200
    assert engine.stats()["pool_evictable"] == 0
    assert client.post("/flush_cache").status_code == 200


def _long_stream_body(rid: str | None = None) -> dict:
    body = {"text": "never ending", "stream": True,
            "sampling_params": {"max_new_tokens": 1500, "ignore_eos": True, "temperature": 0.0}}
    if rid:
        body["rid"] = rid
    return body


def test_abort_request_ends_stream(client, server, engine):
    with client.stream("POST", "/generate", json=_long_stream_body("abort-me")) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert json.loads(first[5:])["meta_info"]["finish_reason"] is None
        with httpx.Client(base_url=server.url) as other:
            assert other.post("/abort_request", json={"rid": "abort-me"}).json()["success"] is True
        events = sse_events(lines)
    assert events[-1] == "[DONE]"
    assert events[-2]["meta_info"]["finish_reason"]["type"] == "abort"
    assert events[-2]["meta_info"]["completion_tokens"] < 1500
    wait_idle(engine, settle=True)


def test_client_disconnect_mid_stream_frees_kv(server, engine):
    aborted = engine.stats()["aborted"]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/generate", json=_long_stream_body()) as r:
            got = 0
            for line in r.iter_lines():
                got += line.startswith("data:")
                if got == 3:
                    break  # leaving the block closes the connection mid-stream
    wait_idle(engine, timeout=20, settle=True)
    assert engine.stats()["aborted"] == aborted + 1  # stopped early, not run to max_new_tokens


def test_client_disconnect_non_stream_frees_kv(server, engine):
    aborted = engine.stats()["aborted"]
    body = {"text": "slow answer", "sampling_params": {"max_new_tokens": 1500, "ignore_eos": True}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/generate", json=body, timeout=httpx.Timeout(60, read=0.5))
    wait_idle(engine, timeout=20, settle=True)
    assert engine.stats()["aborted"] == aborted + 1


# --------------------------------------------------------------------------- metrics and API key

def test_metrics_prometheus_text(client):
    client.post("/generate", json={"text": "count me", "sampling_params": greedy(2), "stream": True})
    text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples["sglang_prompt_tokens_total"] > 0
    assert samples["sglang_generation_tokens_total"] > 0
    assert samples["sglang_time_to_first_token_seconds_count"] >= 1
    assert samples["sglang_inter_token_latency_seconds_count"] >= 1
    assert 0.0 <= samples["sglang_cache_hit_rate"] <= 1.0
    assert samples["sglang_num_queue_reqs"] == 0 and "sglang_num_running_reqs" in samples
    assert any(k.startswith('sglang_http_requests_total{route="/generate",status="200"}') for k in samples)
    client.get("/v1/models/no-such-model")
    text = client.get("/metrics").text
    assert 'sglang_http_requests_total{route="/v1/models/{model_id:path}",status="404"}' in text


def test_api_key_required_everywhere_but_health(engine):
    args = engine.get_server_args().replace(api_key="s3cret")
    with BackgroundServer(engine, args) as srv:  # a second app in the same process: metrics must not collide
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/health").status_code == 200
            body = {"text": "hi", "sampling_params": greedy(1)}
            for path, method in [("/generate", "POST"), ("/get_model_info", "GET"), ("/v1/models", "GET"),
                                 ("/metrics", "GET"), ("/flush_cache", "GET")]:
                kwargs = {"json": body} if method == "POST" else {}
                r = c.request(method, path, **kwargs)
                assert r.status_code == 401, path
                assert r.json()["error"]["type"] == "authentication_error"
                assert c.request(method, path, headers={"Authorization": "Bearer wrong"}, **kwargs).status_code == 401
            good = {"Authorization": "Bearer s3cret"}
            assert c.post("/generate", json=body, headers=good).status_code == 200
            assert c.get("/get_server_args", headers=good).json()["api_key"] == "<hidden>"


def test_concurrent_requests_do_not_block_the_event_loop(server, engine):
    """While long generations run, cheap endpoints answer promptly (the scheduler is off the event loop)."""
    results = []

    def long_call():
        with httpx.Client(base_url=server.url, timeout=120) as c:
            results.append(c.post("/generate", json={"text": "busy", "sampling_params": {
                "max_new_tokens": 100, "ignore_eos": True}}).status_code)

    threads = [threading.Thread(target=long_call) for _ in range(3)]
    for t in threads:
        t.start()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for _ in range(5):
            assert c.get("/health").status_code == 200
            assert c.get("/get_model_info").status_code == 200
    for t in threads:
        t.join()
    assert results == [200, 200, 200]
    wait_idle(engine, settle=True)


# --------------------------------------------------------------------------- fuzz

def _fuzz_bodies():
    from hypothesis import strategies as st

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 3000), st.floats(allow_nan=True),
                       st.text(max_size=8))
    value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                         max_leaves=6)
    sampling_keys = st.sampled_from(["max_new_tokens", "temperature", "top_p", "top_k", "stop", "n", "regex",
                                     "ignore_eos", "seed", "bogus"])
    sampling = st.dictionaries(sampling_keys, value, max_size=4)
    fields = {"text": value, "input_ids": value, "sampling_params": st.one_of(sampling, value),
              "return_logprob": value, "logprob_start_len": value, "top_logprobs_num": value,
              "stream": st.booleans(), "rid": value, "extra": value}
    return st.fixed_dictionaries({}, optional=fields)


def test_fuzzed_bodies_never_crash_the_server(client):
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_fuzz_bodies())
    def check(body):
        sp = body.get("sampling_params")
        if isinstance(sp, dict):  # keep accepted requests short
            sp["max_new_tokens"] = 2
        body.pop("stream", None)
        r = client.post("/generate", content=json.dumps(body))  # json.dumps writes NaN/Infinity too
        assert r.status_code in (200, 400), (body, r.status_code, r.text)
        if r.status_code == 400:
            assert r.json()["error"]["message"]

    check()
    assert client.post("/generate", json={"text": "ok", "sampling_params": greedy(1)}).status_code == 200
