"""End to end on the real default model: `sglc compile` + `sglang run`, constraint tables from the
artifact, batches, forks, and the program endpoints (valid body, 400 naming the field, SSE streaming)
next to the native API. The session's engine is shared (loading it is the slow part)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sglang.compiler import run_cli
from sglang.compiler.cli import main as sglc
from sglang.compiler.plan import Plan
from sglang.compiler.serve import create_program_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IP = r"((25[0-5]|2[0-4]\d|[01]?\d\d?).){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(default_engine):
    """The session's shared engine (tests/conftest.py); every test here leaves it idle."""
    return default_engine


@pytest.fixture
def shared_backend(engine, monkeypatch):
    """`sglang run` builds its backend with make_backend; hand it the module's engine (kept open)."""
    from sglang.lang.backends.engine_backend import EngineBackend

    class _Kept(EngineBackend):
        def shutdown(self) -> None:  # the module fixture owns the engine
            pass

    monkeypatch.setattr(run_cli, "make_backend", lambda model, url, **kw: _Kept(engine))


def _lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_compile_then_run_quickstart(tmp_path, shared_backend, capsys):
    art = tmp_path / "quickstart.sglc"
    assert sglc(["compile", str(EXAMPLES / "quickstart.sgl"), "-o", str(art)]) == 0
    assert run_cli.main_run([str(art)]) == 0
    (res,) = _lines(capsys.readouterr().out)
    assert "Paris" in res["return"] and res["variables"]["answer"] == res["return"]


def test_regex_tables_from_the_artifact(tmp_path, default_model_path, engine, shared_backend, capsys):
    art = tmp_path / "regex.sglc"
    assert sglc(["compile", str(EXAMPLES / "regex_gen.sgl"), "-o", str(art), "--model", default_model_path]) == 0
    plan = Plan.load(art)
    (entry,) = [e for e in plan.constraints.values() if e["kind"] == "regex"]
    assert entry["tables"]  # token-level table built at compile time, stored in the artifact
    from sglang.compiler.executor import PlanExecutor
    from sglang.lang.backends.engine_backend import EngineBackend

    assert PlanExecutor(plan, EngineBackend(engine)).tables_loaded == 1  # preloaded into the engine's cache
    assert run_cli.main_run([str(art)]) == 0
    (res,) = _lines(capsys.readouterr().out)
    assert re.fullmatch(IP, res["return"]), res


def test_batch_from_args_file_is_one_call_per_wave(shared_backend, capsys):
    rc = run_cli.main_run([str(EXAMPLES / "batch.sgl"), "--args-file", str(EXAMPLES / "batch_questions.jsonl"),
                           "--stats", "--max-tokens", "12"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = _lines(captured.out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert "Paris" in rows[1]["return"]
    stats = json.loads(captured.err.strip().splitlines()[-1])["stats"]
    # all 4 gens in one call: the scheduler's in-batch rule computes their shared system prompt once (the
    # rows sharing it wait one round for its KV), so a warm-up call would save nothing
    assert stats["engine_calls"] == 1
    assert stats["cached_tokens"] > 0


def test_fork_and_select_program(tmp_path, shared_backend, capsys):
    prog = tmp_path / "fs.sgl"
    prog.write_text('def main() {\n'
                    '  user { "Name a color and a fruit." }\n'
                    '  fork t[2] as i { assistant { "Answer {i}:" gen x(max_tokens=4, temperature=0) } }\n'
                    '  "Is the sky blue? " select yes(choices=["yes", "no"])\n'
                    '  return [t[0].x, t[1].x, yes]\n}\n')
    assert run_cli.main_run([str(prog), "--stats"]) == 0
    captured = capsys.readouterr()
    (res,) = _lines(captured.out)
    x0, x1, yes = res["return"]
    assert isinstance(x0, str) and isinstance(x1, str) and yes in ("yes", "no")
    assert json.loads(captured.err.strip().splitlines()[-1])["stats"]["cached_tokens"] > 0


def test_program_endpoints(engine):
    from sglang.compiler.lower import compile_source

    plan = compile_source(EXAMPLES / "quickstart.sgl")
    client = TestClient(create_program_app(plan, engine))
    ok = client.post("/programs/main", json={"question": "What is the capital of France?"})
    assert ok.status_code == 200 and "Paris" in ok.json()["return"]
    bad = client.post("/programs/main", json={"question": 42})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "question"
    extra = client.post("/programs/main", json={"questoin": "x"})
    assert extra.status_code == 400 and "questoin" in extra.json()["error"]["message"]
    batch = client.post("/programs/main/batch", json={"items": [{}, {"question": "What is the capital of Italy?"}]})
    assert batch.status_code == 200 and len(batch.json()["results"]) == 2
    with client.stream("POST", "/programs/main?stream=true", json={}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    value = next(e for e in parsed if "value" in e)  # after the gen's per-token "delta" events
    assert value["variable"] == "answer" and "Paris" in value["value"]
    assert "".join(e["delta"] for e in parsed if "delta" in e) == value["value"]
    assert "result" in json.loads(events[-2])
    # the native API and the OpenAPI docs stay up beside the programs
    native = client.post("/generate", json={"text": "Hello", "sampling_params": {"max_new_tokens": 2}})
    assert native.status_code == 200 and "text" in native.json()
    assert "/programs/main" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_run_over_http_on_the_real_server(engine, capsys):
    """The same plan over HTTP: `sglang run --backend URL` against our server on the same engine."""
    from sglang.runtime.server.launch import BackgroundServer

    with BackgroundServer(engine) as server:
        rc = run_cli.main_run([str(EXAMPLES / "quickstart.sgl"), "--backend", server.url])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    (res,) = _lines(captured.out)
    assert "Paris" in res["return"]
