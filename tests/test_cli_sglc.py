"""`sglc compile / check / --emit` and `sglang run`'s argument handling (no model needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request

from compiler_fakes import FakeBackend

from sglang.compiler.cli import main as sglc
from sglang.compiler.plan import Plan
from sglang.compiler.run_cli import main_run
from sglang.runtime.server.launch import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_compile_writes_a_loadable_artifact(tmp_path, capsys):
    out = tmp_path / "tips.sglc"
    assert sglc(["compile", str(EXAMPLES / "tip_suggestion.sgl"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    plan = Plan.load(out)
    fp = plan.function("tip_suggestion")
    assert plan.passes == ["dead-branch", "prefix-hoist", "fork-batching", "select-lowering", "speculation",
                           "constrained-precompile"]
    assert any(s.kind == "fork" and s.args["batched"] for s in fp.steps)


def test_o0_and_fno_flags(tmp_path):
    out = tmp_path / "p.sglc"
    assert sglc(["compile", str(EXAMPLES / "tip_suggestion.sgl"), "-o", str(out), "-O0"]) == 0
    assert Plan.load(out).passes == []
    assert sglc(["compile", str(EXAMPLES / "tip_suggestion.sgl"), "-o", str(out), "-fno-fork-batching"]) == 0
    plan = Plan.load(out)
    assert "fork-batching" not in plan.passes and "dead-branch" in plan.passes
    assert not any(s.kind == "fork" and s.args["batched"] for s in plan.function(None).steps)


def test_unknown_pass_flag_is_a_clean_error(capsys):
    assert sglc(["compile", str(EXAMPLES / "quickstart.sgl"), "-fno-magic"]) == 1
    assert "unknown pass 'magic'" in capsys.readouterr().err


@pytest.mark.parametrize("emit,needle", [("ast", "def tool_use(question: str)"), ("ir", "Select(name='tool'"),
                                         ("ir-opt", "# select-lowering"), ("plan", '"format": "sglang-plan"'),
                                         ("dot", "digraph")])
def test_emit(emit, needle, capsys):
    assert sglc(["compile", "--emit", emit, str(EXAMPLES / "tool_use.sgl")]) == 0
    assert needle in capsys.readouterr().out


def test_emit_ast_round_trips(tmp_path, capsys):
    assert sglc(["compile", "--emit", "ast", str(EXAMPLES / "tree_of_thought.sgl")]) == 0
    printed = tmp_path / "again.sgl"
    printed.write_text(capsys.readouterr().out)
    assert sglc(["check", str(printed)]) == 0


def test_check_reports_positioned_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.sgl"
    bad.write_text('def f(q: str) {\n    user { q }\n    assistant { gen a(max_tokns=3) }\n}\n')
    assert sglc(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:23: error: unknown gen parameter 'max_tokns'" in err
    assert "did you mean 'max_tokens'?" in err and "Traceback" not in err
    bad.write_text("def f() {\n  gen\n}\n")
    assert sglc(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:1: syntax error" in err and "^" in err


def test_check_every_example_and_stdlib_module():
    for path in sorted(EXAMPLES.glob("*.sgl")) + sorted((EXAMPLES.parent / "sglang" / "stdlib").glob("*.sgl")):
        assert sglc(["check", str(path)]) == 0, path


def test_run_rejects_bad_arguments_before_loading_a_model(tmp_path, capsys):
    prog = EXAMPLES / "batch.sgl"
    assert main_run([str(prog), "--arg", "nope=1"]) == 1
    assert "has no parameter 'nope'" in capsys.readouterr().err
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "a"}\n[1, 2]\n')
    assert main_run([str(prog), "--args-file", str(rows)]) == 1
    assert "rows.jsonl:2: each line must be a JSON object" in capsys.readouterr().err
    assert main_run([str(prog), "--function", "nope"]) == 1
    assert "no function 'nope'" in capsys.readouterr().err
    assert main_run([str(tmp_path / "missing.sgl")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_serve_reports_program_errors_before_loading_a_model(tmp_path, capsys):
    from sglang.compiler.run_cli import main_serve

    bad = tmp_path / "bad.sgl"
    bad.write_text("def f() { gen }\n")
    assert main_serve([str(bad)]) == 1
    assert f"{bad}:1:15: syntax error" in capsys.readouterr().err


def test_serve_takes_the_compilers_pass_flags_and_the_servers(tmp_path, capsys, monkeypatch):
    import sglang.compiler.serve as serve_mod
    from sglang.compiler.run_cli import main_serve

    prog = tmp_path / "p.sgl"
    prog.write_text('def main() { user { "hi" } assistant { gen a(max_tokens=2) } return a }\n')
    seen: dict = {}
    monkeypatch.setattr(serve_mod, "serve", lambda plan, **kw: seen.update(plan=plan, **kw) or 0)
    argv = [str(prog), "-O0", "--api-key", "k", "--drain-grace-period", "3", "--max-program-gens", "7"]
    assert main_serve(argv) == 0
    assert seen["plan"].passes == [] and seen["api_key"] == "k" and seen["drain_grace_period"] == 3.0
    assert seen["limits"].max_gens == 7
    assert main_serve([str(prog), "-fno-no_such_pass"]) == 1  # before any model loads
    assert "unknown pass 'no_such_pass'" in capsys.readouterr().err
    from sglang.compiler.passes import PASS_ORDER

    assert main_serve([str(prog), f"-fno-{PASS_ORDER[0]}"]) == 0
    assert PASS_ORDER[0] not in seen["plan"].passes


def test_run_over_http_backend_with_a_fake_server(tmp_path, capsys):
    """`sglang run --backend URL` sends the native dicts over HTTP (here to a fake /generate)."""
    fake = FakeBackend()
    app = FastAPI()

    @app.post("/generate")
    async def generate(request: Request):
        return fake._call(await request.json())

    @app.get("/get_model_info")
    async def info():
        return {"model_path": "fake", "is_generation": True}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    import threading
    import time

    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30  # a loaded CI machine may be slow to start uvicorn
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        rows = tmp_path / "rows.jsonl"
        rows.write_text("\n".join(json.dumps({"question": q}) for q in ("a?", "b?", "c?")) + "\n")
        rc = main_run([str(EXAMPLES / "batch.sgl"), "--args-file", str(rows), "--backend", f"http://127.0.0.1:{port}",
                       "--stats"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        lines = [json.loads(x) for x in captured.out.splitlines()]
        assert [r["index"] for r in lines] == [0, 1, 2] and all(r["return"] for r in lines)
        stats = json.loads(captured.err.strip().splitlines()[-1])["stats"]
        assert stats["engine_calls"] == 1  # one batched call for the 3 items (their prefix is shared in-batch)
        # --stream: each variable as a JSON line when generated, then the results
        rc = main_run([str(EXAMPLES / "tip_suggestion.sgl"), "--backend", f"http://127.0.0.1:{port}", "--stream"])
        out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert rc == 0
        events = [o for o in out if o.get("event") == "variable"]
        assert [e["variable"] for e in events] == ["detailed_tip", "detailed_tip", "summary"]
        fork_step = events[0]["stream"][0]  # events name the fork step and branch they come from
        assert events[0]["stream"] == [fork_step, 0] and events[1]["stream"] == [fork_step, 1]
        assert events[2]["stream"] == []
        assert out[-1]["return"] == events[-1]["value"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
