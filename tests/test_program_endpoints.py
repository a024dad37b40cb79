"""Program endpoints on a fake backend (no model): plain `curl -d` bodies, one error shape, 4xx for
the caller's mistakes."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from compiler_fakes import FakeBackend

from sglang.compiler.lower import compile_source
from sglang.compiler.serve import JsonBodyMiddleware, add_program_routes, error_status, use_error_shape

PROGRAM = '''
def main(question: str = "hi", n: int = 2) {
    user { question }
    fork f[n] as i {
        assistant { gen a(max_tokens=4, temperature=0) }
    }
    return f[0].a
}
'''


def _client(tmp_path) -> TestClient:
    src = tmp_path / "p.sgl"
    src.write_text(PROGRAM)
    app = FastAPI()
    add_program_routes(app, compile_source(src), FakeBackend())
    use_error_shape(app)
    app.add_middleware(JsonBodyMiddleware)
    return TestClient(app)


def test_plain_curl_body_is_read_as_json(tmp_path):
    client = _client(tmp_path)
    # what `curl -d '{...}'` sends: no JSON content type
    resp = client.post("/programs/main", content=b'{"question": "x"}',
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200, resp.text
    assert "return" in resp.json()


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


def test_error_status_separates_caller_and_server_faults():
    assert error_status("fork count must be positive, got 0") == 400  # a positioned program error
    assert error_status("ValueError: the prompt (9000 tokens) is longer than the context (4096)") == 400
    assert error_status("RuntimeError: scheduler died") == 500
