"""`sglang serve`'s app on a real engine (tiny dummy-weight Llama, CPU): the API key guards the program
routes as it does /generate, a prompt too long for the model is a 400, a client that disconnects gets its
run's engine requests aborted, and a drain past its grace period answers the running programs 503 and
stops the engine."""
from __future__ import annotations

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from server_helpers import wait_idle, wait_until

from sglang.compiler.lower import compile_source
from sglang.compiler.serve import create_program_app, draining_server
from sglang.runtime.server.launch import free_port

PROGRAM = '''
def main(question: str = "hi") {
    user { question }
    assistant { gen answer(max_tokens=4, temperature=0) }
    return answer
}

def story(topic: str = "a cat") {
    user { "Tell a long story about " topic }
    assistant { gen text(max_tokens=1900, temperature=0, ignore_eos=true) }
    return text
}
'''


def _engine(path: str):
    from sglang.runtime.engine import Engine

    return Engine(model_path=path, load_format="dummy", device="cpu", dtype="float32", max_total_tokens=8192)


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    eng = _engine(tiny_llama_path)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    src = tmp_path_factory.mktemp("prog") / "p.sgl"
    src.write_text(PROGRAM)
    return compile_source(src)


def test_api_key_guards_the_program_routes(engine, plan):
    args = engine.get_server_args().replace(api_key="sekret")
    client = TestClient(create_program_app(plan, engine, args))
    assert client.get("/health").status_code == 200  # probes carry no key
    for method, path in (("post", "/programs/main"), ("post", "/programs/main/batch"), ("get", "/programs"),
                         ("get", "/metrics"), ("post", "/generate")):
        r = client.request(method, path, json={"items": [{}]} if path.endswith("batch") else {})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", (path, r.text)
    ok = client.post("/programs/main", json={}, headers={"Authorization": "Bearer sekret"})
    assert ok.status_code == 200 and isinstance(ok.json()["return"], str)
    metrics = client.get("/metrics", headers={"Authorization": "Bearer sekret"}).text
    assert 'sglang_program_requests_total{program="main",status="200"} 1.0' in metrics
    assert 'route="/programs/main",status="200"' in metrics  # the server's own per-route count sees them
    spec = client.get("/openapi.json").json()  # open, as /docs is: typed program bodies and answers
    op = spec["paths"]["/programs/main"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/MainResult")
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/MainArgs")
    assert "requestBody" in spec["paths"]["/generate"]["post"]  # the server's own routes keep theirs


def test_prompt_too_long_for_the_model_is_a_400(engine, plan):
    client = TestClient(create_program_app(plan, engine))
    tokens = client.post("/programs/main", json={"question": "word " * 3000})  # > 2048 tokens of context
    assert tokens.status_code == 400, tokens.text
    assert "context length" in tokens.json()["error"]["message"]
    chars = client.post("/programs/main", json={"question": "w" * engine.max_prompt_chars()})
    assert chars.status_code == 400 and chars.json()["error"]["param"] == "max_prompt_chars", chars.text
    assert client.post("/programs/main", json={"question": "hello"}).status_code == 200  # still serving


def _serve(app, engine, grace_s: float):
    port = free_port()
    server = draining_server(app, engine, "127.0.0.1", port, grace_s=grace_s)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 60, "the server never started")
    assert thread.is_alive()
    return server, thread, f"http://127.0.0.1:{port}"


def _wait_running(engine) -> None:
    wait_until(lambda: engine.stats()["running"], 120, "the program's gen never started")


def test_disconnect_aborts_the_programs_engine_requests(engine, plan):
    app = create_program_app(plan, engine)
    server, thread, url = _serve(app, engine, grace_s=30)
    try:
        with httpx.stream("POST", f"{url}/programs/story?stream=true", json={}, timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and "delta" in json.loads(line[6:]):
                    break  # the gen is streaming: leave mid-way
        wait_idle(engine, settle=True)
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        # the 1900-token gen ended by abort, not by its length: the disconnect reached the engine
        assert 'sglang_requests_total{finish_reason="abort"} 1.0' in metrics, metrics
        assert 'sglang_program_requests_total{program="story",status="499"} 1.0' in metrics
    finally:
        server.should_exit = True
        thread.join(30)


def test_drain_past_its_grace_answers_running_programs_503(tiny_llama_path, plan):
    engine = _engine(tiny_llama_path)  # its own: the drain shuts it down
    try:
        app = create_program_app(plan, engine)
        server, thread, url = _serve(app, engine, grace_s=0.0)
        box: list = []
        client = threading.Thread(target=lambda: box.append(httpx.post(f"{url}/programs/story", json={}, timeout=120)))
        client.start()
        _wait_running(engine)
        server.start_drain()  # what the first SIGTERM does; no grace: abort what runs
        client.join(60)
        thread.join(60)
        assert not thread.is_alive()  # the server exited
        r = box[0]
        assert r.status_code == 503 and "shut down" in r.json()["error"]["message"], r.text
        assert server.aborted == 1
    finally:
        engine.shutdown()
