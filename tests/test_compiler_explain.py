"""The cost model's calibration table (compiler/calibration.py, written by benchmarks/calibrate.py) and
`sglc compile --explain`: where each pass fired, the predicted saving, and what the table changes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sglang.compiler import cli
from sglang.compiler.calibration import (DEFAULT, Calibration, calibration_from_json, fit_calibration,
                                         load_calibration, save_calibration)
from sglang.compiler.plan import Plan

REPO = Path(__file__).resolve().parent.parent

PROG = '''def f(q: str) {
    system { "You are a careful assistant. Answer briefly." }
    "Question: " + q + "\\n"
    if 1 > 2 { gen never }
    select kind(choices=["math", "prose"])
    "\\nDraft: "
    fork t[3] as i { "Draft {i}: " gen d(max_tokens=8) }
    select one(choices=["only"])
}
'''


def calibrate_module():
    spec = importlib.util.spec_from_file_location("calibrate", REPO / "benchmarks" / "calibrate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tables_round_trip_and_bad_ones_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("SGLANG_CALIBRATION", raising=False)
    assert load_calibration() == DEFAULT
    cal = Calibration(2e-5, 7e-3, 1.5e-3, "NVIDIA H200", "m")
    path = save_calibration(cal, tmp_path / "h200.json")
    loaded = load_calibration(path)
    assert (loaded.prefill_token_s, loaded.call_overhead_s, loaded.device) == (2e-5, 1.5e-3, "NVIDIA H200")
    assert loaded.source == str(path)
    monkeypatch.setenv("SGLANG_CALIBRATION", str(path))
    assert load_calibration().device == "NVIDIA H200"
    with pytest.raises(ValueError, match="call_overhead_s must be a number >= 0"):
        calibration_from_json({"format": "sglang-calibration", "call_overhead_s": -1}, "x.json")
    with pytest.raises(ValueError, match="not a calibration table"):
        calibration_from_json({"prefill_token_s": 1}, "x.json")
    with pytest.raises(ValueError, match="no calibration table"):
        load_calibration(tmp_path / "missing.json")
    partial = calibration_from_json({"format": "sglang-calibration", "decode_token_s": 0.5}, "p.json")
    assert partial.decode_token_s == 0.5 and partial.prefill_token_s == DEFAULT.prefill_token_s


def test_fit_and_measure_with_a_fake_engine_and_clock():
    cal = fit_calibration(short_call_s=0.002, long_prefill_s=0.002 + 511 * 1e-5, prompt_tokens=512,
                          decode_s=0.002 + 63 * 0.004, decode_tokens=64, device="d")
    assert cal.call_overhead_s == 0.002 and cal.prefill_token_s == pytest.approx(1e-5)
    assert cal.decode_token_s == pytest.approx(0.004)

    now = [0.0]
    prompts = []

    def generate(ids, sp):  # a device with 3 ms a call, 20 us a prompt token, 5 ms a generated token
        prompts.append(ids)
        now[0] += 0.003 + 2e-5 * (len(ids) - 1) + 0.005 * (sp["max_new_tokens"] - 1)

    m = calibrate_module().measure(generate, vocab=1000, prompt_tokens=128, decode_tokens=16, repeat=3,
                                   clock=lambda: now[0])
    fitted = fit_calibration(m["short_call_s"], m["long_prefill_s"], 128, m["decode_s"], 16, "fake")
    assert fitted.call_overhead_s == pytest.approx(0.003) and fitted.prefill_token_s == pytest.approx(2e-5)
    assert fitted.decode_token_s == pytest.approx(0.005)
    firsts = [p[0] for p in prompts[1:]]
    assert len(set(firsts)) == len(firsts)  # every timed prompt starts fresh: no prefix-cache hit


def explain(tmp_path, capsys, *extra: str) -> tuple[str, Plan]:
    src = tmp_path / "p.sgl"
    src.write_text(PROG)
    out = tmp_path / "p.sglc"
    assert cli.main(["compile", "--explain", str(src), "-o", str(out), *extra]) == 0
    return capsys.readouterr().out, Plan.load(out)


def test_explain_lists_each_pass_where_it_fired_and_the_saving(tmp_path, capsys):
    text, plan = explain(tmp_path, capsys)
    lines = text.splitlines()
    assert lines[0].startswith("# cost model: built-in defaults") and "per run of 8 item(s)" in lines[0]
    src = tmp_path / "p.sgl"
    assert any(line.startswith(f"  {src}:4:5") and "no arm of the branch can run" in line for line in lines)
    sel = next(line for line in lines if f"{src}:5:5" in line and "select 'kind'" in line)
    assert "saves    1.000 ms" in sel  # 2 choices: one call of 1 ms spared (the default table)
    one = next(line for line in lines if "select 'one'" in line)
    assert "not applied" in one
    fork = next(line for line in lines if f"{src}:7:5" in line)
    # ~4 shared tokens x 2 copies x 8 items spared by one batched call of 1 ms
    assert "saves    2.200 ms" in fork and "batched call" in fork
    assert lines[-1].startswith("total predicted saving:")
    steps = plan.function("f").steps
    assert next(s for s in steps if s.kind == "fork").args["batched"]
    assert [s.args["batched"] for s in steps if s.kind == "select"] == [True, False]


def test_a_measured_table_changes_the_decisions(tmp_path, capsys):
    cheap = save_calibration(Calibration(prefill_token_s=1e-3, call_overhead_s=1e-4, device="slow-prefill"),
                             tmp_path / "cal.json")
    text, plan = explain(tmp_path, capsys, "--calibration", str(cheap))
    assert "device slow-prefill" in text.splitlines()[0]
    fork_line = next(line for line in text.splitlines() if ":7:5" in line)
    assert "not applied" not in fork_line and "saves" in fork_line
    assert next(s for s in plan.function("f").steps if s.kind == "fork").args["batched"]
    text1, _ = explain(tmp_path, capsys, "--batch", "1")
    assert "per run of 1 item(s)" in text1 and "leading constant op(s)" in text1
    assert "not applied" in next(line for line in text1.splitlines() if "leading constant" in line)


def test_bad_calibration_or_batch_is_a_clean_error(tmp_path, capsys):
    src = tmp_path / "p.sgl"
    src.write_text(PROG)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "sglang-calibration", "prefill_token_s": "fast"}))
    assert cli.main(["compile", "--explain", str(src), "--calibration", str(bad)]) == 1
    assert "prefill_token_s must be a number" in capsys.readouterr().err
    assert cli.main(["compile", str(src), "--batch", "0"]) == 1
    assert "--batch must be >= 1" in capsys.readouterr().err
