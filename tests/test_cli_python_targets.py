"""`sglc compile/check/--emit` and `sglang run` on a Python `@sgl.function` (`module.py:fn`), no model."""
from __future__ import annotations

import json

import pytest
from lang_fakes import ScriptedBackend

from sglang.compiler import run_cli
from sglang.compiler.cli import main as sglc
from sglang.compiler.plan import Plan
from sglang.compiler.targets import is_python_target, load_plan

MODULE = '''
import sglang as sgl

HEADER = "Q: "


@sgl.function
def qa(s, q):
    s += HEADER + q + "\\nA:" + sgl.gen("a", max_tokens=4)
    return s["a"]


@sgl.function
def agent(s, q):
    s += q + sgl.select("act", choices=["go", "stop"])
    if s["act"] == "go":
        s += sgl.gen("more")


not_a_program = 3
'''


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "progs.py"
    path.write_text(MODULE)
    return path


def test_python_targets_are_recognized(module):
    assert is_python_target(f"{module}:qa") and not is_python_target(str(module))
    assert not is_python_target("prog.sgl") and not is_python_target("http://x:30000")


def test_sglc_compiles_a_python_function_to_an_artifact(module, capsys):
    assert sglc(["compile", f"{module}:qa"]) == 0
    out = module.with_suffix(".qa.sglc")
    assert "wrote" in capsys.readouterr().err
    fplan = Plan.load(out).function(None)
    assert fplan.name == "qa" and fplan.params == ["q"]
    assert [s.kind for s in fplan.steps if s.kind in ("gen", "return")] == ["gen", "return"]
    assert sglc(["compile", "--emit", "ir", f"{module}:qa"]) == 0
    assert "Gen(name='a'" in capsys.readouterr().out
    assert load_plan(f"{module}:qa").to_json()["functions"].keys() == {"qa"}


def test_untraceable_or_missing_functions_are_clean_errors(module, capsys):
    assert sglc(["check", f"{module}:agent"]) == 1
    err = capsys.readouterr().err
    assert "cannot be compiled" in err and "TraceError" in err and "interpreter" in err
    assert sglc(["compile", f"{module}:nope"]) == 1
    err = capsys.readouterr().err
    assert "has no 'nope'" in err and "agent, qa" in err
    assert sglc(["compile", f"{module}:not_a_program"]) == 1
    assert "not an @sgl.function" in capsys.readouterr().err
    assert sglc(["compile", "--emit", "ast", f"{module}:qa"]) == 1


def test_sglang_run_runs_a_python_function(module, monkeypatch, capsys):
    monkeypatch.setattr(run_cli, "make_backend", lambda model, url: ScriptedBackend())
    assert run_cli.main_run([f"{module}:qa", "--arg", "q=hello", "--text"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["text"] == "Q: hello\nA:" + row["return"] and row["variables"] == {"a": row["return"]}
