"""`sglc compile --emit dot|svg` (compiler/dot.py): regions as clusters, forks, pass decisions and waves."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sglang.compiler import cli
from sglang.compiler.dot import to_dot, waves
from sglang.compiler.lower import compile_ir
from sglang.compiler.irgen.build import lower_program
from sglang.compiler.loader import load_program
from sglang.compiler.passes import enabled_passes
from sglang.lang import ir

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def optimized(src: str, name: str = "f") -> ir.IRFunction:
    fns = lower_program(load_program(text=src, file="p.sgl"))
    _, out = compile_ir(fns, enabled_passes(1))
    return out[name]


def calls_by_wave(fn: ir.IRFunction) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for node, wave in waves(fn).items():
        out.setdefault(fn.op(node).name, set()).add(wave)
    return out


def test_waves_count_sequential_round_trips_and_share_them_across_fork_branches():
    fns = lower_program(load_program(EXAMPLES / "tree_of_thought.sgl"))
    _, out = compile_ir(fns, enabled_passes(1))
    fn = out["tree_of_thought"]
    # plans side by side (1), their solutions side by side (2), verdicts (3), then the final choice (4)
    assert calls_by_wave(fn) == {"plan": {1}, "solution": {2}, "verdict": {3}, "best": {4}}


def test_reading_a_branch_variable_waits_for_that_branch():
    fn = optimized('def f() { fork t[2] { gen a gen b } "{t[0].b}" gen c }')
    assert calls_by_wave(fn) == {"a": {1}, "b": {2}, "c": {3}}  # c follows t[0].b, the second call of branch 0
    fn = optimized('def f() { fork t[2] { gen a gen b } gen c }')
    assert calls_by_wave(fn)["c"] == {1}  # nothing waits: c goes out with the branches' first calls


def test_dot_draws_regions_forks_and_pass_decisions():
    src = ('def f(q: str) {\n system { "You are terse and careful, always." }\n "Q: {q}\\n"\n'
           ' select t(choices=["a", "b"])\n'
           ' if t == "a" { "A" gen x } else { "B" gen y }\n'
           ' "A shared context of some words for every branch: "\n'
           ' fork k[3] as i { "Item {i}: " gen z(max_tokens=4) }\n join k\n return t\n}')
    dot = to_dot(optimized(src))
    assert dot.startswith('digraph "f" {') and dot.rstrip().endswith("}")
    assert 'label="f(q): ' in dot and "in 3 wave(s)" in dot  # select, then x or y, then the branches' z
    assert 'subgraph cluster_prefix { label="shared prefix: prefilled once per batch"' in dot
    assert "label=\"if t == 'a'\"" in dot and 'label="else"' in dot  # branch arms, with their conditions
    assert dot.count('label="branch ') == 3 and "fork ×3\\nparent prefilled once" in dot
    assert "one batched scoring call · wave 1" in dot and "gen z\\nmax_new_tokens=4\\nwave 3" in dot
    assert 'shape=invtrapezium, label="join"' in dot
    assert 'tooltip="p.sgl:4:2"' in dot  # every op carries its source position
    assert "style=dotted, color=blue" in dot  # a data edge (t read by the branch and the return)


def test_emit_dot_prints_the_picture(capsys):
    assert cli.main(["compile", "--emit", "dot", str(EXAMPLES / "tip_suggestion.sgl")]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "tip_suggestion"') and "cluster_" in out and "wave " in out


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
def test_emit_dot_to_an_svg_file_draws_it(tmp_path, capsys):
    out = tmp_path / "tot.svg"
    assert cli.main(["compile", "--emit", "dot", str(EXAMPLES / "tree_of_thought.sgl"), "-o", str(out)]) == 0
    svg = out.read_text()
    assert "<svg" in svg and "tree_of_thought" in svg and "select best" in svg


def test_svg_without_graphviz_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    assert cli.main(["compile", "--emit", "svg", str(EXAMPLES / "tip_suggestion.sgl")]) == 1
    assert "needs graphviz's `dot` on PATH" in capsys.readouterr().err
