"""Program endpoints on a fake backend (no model): plain `curl -d` bodies, one error shape, 4xx for
the caller's mistakes and for runs past their limits, per-token streaming, typed OpenAPI responses,
per-program metrics, and one batching executor shared by concurrent requests."""
from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from compiler_fakes import FakeBackend

from sglang.compiler.lower import compile_source
from sglang.compiler.limits import ProgramLimits
from sglang.compiler.serve import add_program_routes

PROGRAM = '''
def main(question: str = "hi", n: int = 2) {
    user { question }
    fork f[n] as i {
        assistant { gen a(max_tokens=4, temperature=0) }
    }
    return f[0].a
}

def loop(k: int = 2) {
    for i in range(k) {
        "step " gen s(max_tokens=3)
    }
    return s
}

def grow(k: int = 1, word: str = "ab") {
    for i in range(k) { word }
    gen tail(max_tokens=3)
    return tail
}
'''


def _app(tmp_path, limits: ProgramLimits | None = None, backend=None) -> tuple[TestClient, FastAPI]:
    src = tmp_path / "p.sgl"
    src.write_text(PROGRAM)
    app = FastAPI()
    add_program_routes(app, compile_source(src), backend or FakeBackend(), limits=limits,
                       registry=CollectorRegistry())
    return TestClient(app), app


def _client(tmp_path, limits: ProgramLimits | None = None) -> TestClient:
    return _app(tmp_path, limits)[0]


def test_plain_curl_body_is_read_as_json(tmp_path):
    client = _client(tmp_path)
    # what `curl -d '{...}'` sends: no JSON content type
    resp = client.post("/programs/main", content=b'{"question": "x"}',
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["return"].startswith("g")
    bare = client.post("/programs/main", content=b'{"question": "x"}', headers={"Content-Type": ""})
    assert bare.status_code == 200, bare.text


def test_bad_body_uses_the_generate_error_shape(tmp_path):
    client = _client(tmp_path)
    bad = client.post("/programs/main", json={"questoin": "x"})
    assert bad.status_code == 400
    body = bad.json()
    assert "detail" not in body and "questoin" in body["error"]["message"]
    typed = client.post("/programs/main", json={"n": "many"})
    assert typed.status_code == 400 and typed.json()["error"]["param"] == "n"
    broken = client.post("/programs/main", content=b"{not json")
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["error"]["message"]


def test_program_mistake_is_a_4xx(tmp_path):
    resp = _client(tmp_path).post("/programs/main", json={"n": 0})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert "fork count" in resp.json()["error"]["message"]


def test_limits_answer_400_naming_the_limit(tmp_path):
    client = _client(tmp_path, ProgramLimits(max_streams=8, max_gens=5, max_loop_iters=50, max_prompt_chars=1000))
    cases = {"max_streams": ("/programs/main", {"n": 100}),
             "max_gens": ("/programs/loop", {"k": 20}),
             "max_loop_iters": ("/programs/loop", {"k": 10 ** 5}),
             "max_prompt_chars": ("/programs/grow", {"k": 40, "word": "x" * 30})}
    for limit, (path, body) in cases.items():
        resp = client.post(path, json=body)
        assert resp.status_code == 400, (limit, resp.text)
        err = resp.json()["error"]
        assert err["param"] == limit and err["code"] == "program_limit" and limit in err["message"]
    assert client.post("/programs/loop", json={"k": 2}).status_code == 200  # under the limits: fine
    huge = client.post("/programs/loop", json={"k": 10 ** 12})  # refused before range() is listed
    assert huge.status_code == 400 and "range()" in huge.json()["error"]["message"]


def test_total_chars_bound_counts_every_stream(tmp_path):
    client = _client(tmp_path, ProgramLimits(max_total_chars=200))
    resp = client.post("/programs/main", json={"question": "q" * 150, "n": 4})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_total_chars"


def test_stream_limit_bounds_fork_width_times_items(tmp_path):
    client = _client(tmp_path, ProgramLimits(max_streams=8))
    many = client.post("/programs/main/batch", json={"items": [{"n": 1}] * 9})  # 9 items: refused up front
    assert many.status_code == 400 and many.json()["error"]["param"] == "max_streams"
    wide = client.post("/programs/main/batch", json={"items": [{"n": 3}] * 3})  # 3 + 3 x 3 streams > 8
    assert wide.status_code == 200
    assert any("max_streams" in r.get("error", "") for r in wide.json()["results"])
    assert client.post("/programs/main/batch", json={"items": [{"n": 1}] * 3}).status_code == 200


def test_a_limit_in_one_batch_item_fails_only_that_item(tmp_path):
    client = _client(tmp_path, ProgramLimits(max_streams=8))
    resp = client.post("/programs/main/batch", json={"items": [{"n": 2}, {"n": 50}]})
    assert resp.status_code == 200
    ok, failed = resp.json()["results"]
    assert ok["return"].startswith("g") and "max_streams" in failed["error"]


def _events(client: TestClient, path: str, body: dict) -> list:
    with client.stream("POST", path, json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_stream_sends_each_gen_token_with_its_variable(tmp_path):
    events = _events(_client(tmp_path), "/programs/loop?stream=true", {"k": 1})
    deltas = [e for e in events if "delta" in e]
    value = next(e for e in events if "value" in e)
    assert value["variable"] == "s" and len(deltas) == len(value["value"]) > 1  # one char = one token here
    assert all(e["variable"] == "s" for e in deltas)
    assert "".join(e["delta"] for e in deltas) == value["value"]
    assert events.index(deltas[-1]) < events.index(value)
    assert events[-1]["result"]["return"] == value["value"]


def test_stream_reports_a_failed_run_in_band(tmp_path):
    events = _events(_client(tmp_path), "/programs/main?stream=true", {"n": 0})
    assert events[-1]["error"]["type"] == "invalid_request_error"


def test_openapi_response_is_typed_from_the_program(tmp_path):
    spec = _client(tmp_path).get("/openapi.json").json()
    op = spec["paths"]["/programs/main"]["post"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    result = spec["components"]["schemas"][ref]
    assert set(result["properties"]) >= {"index", "return", "variables"}
    variables = spec["components"]["schemas"][result["properties"]["variables"]["$ref"].split("/")[-1]]
    assert "a" in variables["properties"]  # the fork's gen, gathered per branch
    loop = spec["paths"]["/programs/loop"]["post"]
    lref = loop["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    lres = spec["components"]["schemas"][lref]
    assert "string" in json.dumps(lres["properties"]["return"])  # `return s`: a generated variable is text
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert set(spec["components"]["schemas"][body]["properties"]) == {"question", "n"}


def test_metrics_count_program_traffic(tmp_path):
    src = tmp_path / "p.sgl"
    src.write_text(PROGRAM)
    app, registry = FastAPI(), CollectorRegistry()
    add_program_routes(app, compile_source(src), FakeBackend(), registry=registry)
    client = TestClient(app)
    assert client.post("/programs/main", json={}).status_code == 200
    assert client.post("/programs/main", json={"n": 0}).status_code == 400
    text = generate_latest(registry).decode()
    assert 'sglang_program_requests_total{program="main",status="200"} 1.0' in text
    assert 'sglang_program_requests_total{program="main",status="400"} 1.0' in text
    gen = [line for line in text.splitlines() if line.startswith('sglang_program_generation_tokens_total{program="main"}')]
    assert gen and float(gen[0].split()[-1]) > 0
    assert 'sglang_program_latency_seconds_count{program="main"} 2.0' in text
