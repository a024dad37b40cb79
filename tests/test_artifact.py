"""`.sglc` artifacts: recorded provenance, whole-plan validation before a model loads, stale/mismatch checks."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sglang.compiler.artifact import COMPILER_VERSION, check_fresh, load_artifact, validate_plan
from sglang.compiler.cli import main as sglc
from sglang.compiler.plan import Plan, PlanError
from sglang.compiler.run_cli import main_run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def compiled(tmp_path):
    src = tmp_path / "tips.sgl"
    shutil.copy(EXAMPLES / "tip_suggestion.sgl", src)
    out = tmp_path / "tips.sglc"
    assert sglc(["compile", str(src), "-o", str(out)]) == 0
    return src, out


def _edit(out: Path, change) -> None:
    data = json.loads(out.read_text())
    change(data)
    out.write_text(json.dumps(data))


def test_artifact_records_provenance(compiled):
    _, out = compiled
    plan = Plan.load(out)
    assert plan.compiler_version == COMPILER_VERSION
    assert plan.source_sha256 and len(plan.source_sha256) == 64
    assert plan.passes and "fork-batching" in plan.passes
    assert load_artifact(out).source_sha256 == plan.source_sha256  # fresh: loads without complaint


def test_stale_artifact_is_refused_unless_forced(compiled, capsys):
    src, out = compiled
    src.write_text(src.read_text() + "\n# edited\n")
    with pytest.raises(PlanError, match="stale artifact.*--force"):
        load_artifact(out)
    assert load_artifact(out, force=True)
    assert "warning: stale artifact" in capsys.readouterr().err


def test_model_mismatch_is_refused_unless_forced(compiled):
    _, out = compiled
    _edit(out, lambda d: d.update(model="model-a"))
    plan = Plan.load(out)
    with pytest.raises(PlanError, match="built for model 'model-a'.*'model-b'"):
        check_fresh(plan, model="model-b")
    assert check_fresh(plan, model="model-a") == []
    assert len(check_fresh(plan, model="model-b", force=True)) == 1


def _first_step(d, kind):
    fn = next(iter(d["functions"].values()))
    return next(s for s in fn["steps"] if s["kind"] == kind)


@pytest.mark.parametrize("change, message", [
    (lambda d: _first_step(d, "gen").update(deps=[9999]), r"step \d+ \(gen\) at .*tips\.sgl:\d+:\d+: a dependency names step 9999"),
    (lambda d: _first_step(d, "gen").update(kind="teleport"), r"unknown step kind 'teleport'"),
    (lambda d: _first_step(d, "gen")["args"]["sampling_params"].update(temperature=-1), r"\(gen\) at .*temperature"),
    (lambda d: _first_step(d, "gen")["args"]["sampling_params"].update(temprature=0.5), r"unknown sampling parameter 'temprature'"),
    (lambda d: _first_step(d, "fork").update(arms=[[12345]]), r"\(fork\).*an arm names step 12345"),
])
def test_validation_names_step_and_location(compiled, change, message):
    _, out = compiled
    _edit(out, change)
    with pytest.raises(PlanError, match=message):
        load_artifact(out)


def test_run_rejects_a_corrupt_artifact_before_loading_a_model(compiled, capsys, monkeypatch):
    _, out = compiled
    _edit(out, lambda d: _first_step(d, "gen").update(deps=[9999]))

    def no_model(*a, **k):  # the check must come first: reaching the backend fails the test
        raise AssertionError("a model was loaded for a corrupt plan")

    monkeypatch.setattr("sglang.compiler.run_cli.make_backend", no_model)
    assert main_run([str(out), "--arg", "topic=x"]) == 1
    assert "names step 9999" in capsys.readouterr().err


def test_validate_accepts_every_compiled_example():
    from sglang.compiler.lower import compile_source

    for src in sorted(EXAMPLES.glob("*.sgl")):
        validate_plan(compile_source(src))
