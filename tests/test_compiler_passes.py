"""Each IR pass on its own: IR before -> after, and the -O0 / -fno-<pass> switches."""
from __future__ import annotations

import pytest

from sglang.compiler.irgen.build import lower_program
from sglang.compiler.loader import load_program
from sglang.compiler.calibration import Calibration
from sglang.compiler.cost import CostModel
from sglang.compiler.lower import compile_source
from sglang.compiler.passes import PASS_ORDER, PassContext, enabled_passes, get_pass, run_passes
from sglang.lang import ir


def ir_of(src: str, name: str = "f") -> ir.IRFunction:
    return ir.canonicalize(lower_program(load_program(text=src, file="p.sgl"))[name])


def ops(fn: ir.IRFunction) -> list[str]:
    return [("  " * d) + ir.label(fn.op(n)) for n, d in fn.walk()]


def run_pass(name: str, fn: ir.IRFunction) -> tuple[ir.IRFunction, PassContext]:
    ctx = PassContext()
    out = get_pass(name)(fn, ctx)
    out.check()
    return out, ctx


def test_constants_fold_and_text_merges_before_any_pass():
    # no const-fold pass: the canonical form run_passes starts from does it, at -O0 too
    fn = lower_program(load_program(text='def f(x: str) { "a{1 + 2}b" "{2 * 3}" "{x}" }', file="p.sgl"))["f"]
    out = run_passes(fn, [])
    assert ops(out) == ["Text 'a3b6'", "Arg(name='x')"]


def test_dead_branch_elimination_for_literal_conditions():
    src = ('def f(c: bool) {\n if 1 == 2 { "never" } elif c { "maybe" } else { "other" }\n'
           ' if true { "always" } else { "dead" }\n if false { "gone" }\n}')
    before = ir_of(src)
    assert sum(isinstance(before.op(n), ir.Branch) for n in before.graph) == 3
    after, ctx = run_pass("dead-branch", before)
    assert ops(after) == ["Branch c | else", "  Text 'maybe'", "  Text 'other'", "Text 'always'"]
    assert len(ctx.log) == 3


def test_dead_branch_keeps_data_dependent_branches():
    src = 'def f() { select t(choices=["a", "b"]) if t == "a" { gen x } else { gen y } }'
    before = ir_of(src)
    after, _ = run_pass("dead-branch", before)
    assert ops(after) == ops(before)


def test_prefix_hoisting_moves_common_text_of_all_paths():
    src = ('def f(q: str) {\n system { "You are terse." }\n "Q: {q}\\n"\n select t(choices=["a", "b"])\n'
           ' if t == "a" { "Answer: A " gen x } else { "Answer: B " gen y }\n}')
    before = ir_of(src)
    after, ctx = run_pass("prefix-hoist", before)
    assert ops(after)[-7:] == ["Select(name='t', choices=['a', 'b'])", "Text 'Answer: '", "Branch t == 'a' | else",
                               "  Text 'A '", "  Gen(name='x')", "  Text 'B '", "  Gen(name='y')"]
    branch = next(n for n in after.graph if isinstance(after.op(n), ir.Branch))
    assert after.op(after.body_entry(branch, 0)) == ir.Text("A ")
    assert after.op(after.body_entry(branch, 1)) == ir.Text("B ")
    # the leading constant ops (system role + its text + "Q: ") are the batch-shared prefix
    assert after.attrs["hoisted_prefix_ops"] == 4
    assert any("moved before branch" in line for line in ctx.log)


def test_prefix_hoisting_leaves_non_exhaustive_branches():
    src = 'def f() { select t(choices=["a", "b"]) if t == "a" { "Same" gen x } elif t == "b" { "Same" gen y } }'
    before = ir_of(src)
    after, _ = run_pass("prefix-hoist", before)
    assert ops(after) == ops(before)  # without else, the fall-through path appends nothing


def test_fork_batching_marks_forks_with_their_warm_suffix():
    src = 'def f() { "A shared context of a few words for the branches.\\n" fork t[3] as i { "Item {i}: " gen x(max_tokens=4) } }'
    before = ir_of(src)
    after, ctx = run_pass("fork-batching", before)
    assert ops(after) == ops(before)  # an annotation pass: ops unchanged
    fork = next(n for n in after.graph if isinstance(after.op(n), ir.Fork))
    assert after.attrs["fork_batching"] == {str(fork): {"warm_suffix": "Item "}}
    assert [(d.node, d.applied) for d in ctx.decisions] == [(fork, True)] and ctx.decisions[0].saving_s > 0


def test_fork_batching_leaves_a_fork_whose_warm_up_costs_more_than_it_spares():
    src = 'def f() { "P\\n" fork t[3] as i { "Item {i}: " gen x(max_tokens=4) } }'
    one_item = PassContext(cost=CostModel(batch=1))  # ~3 shared tokens of one item: less than one call's overhead
    after = get_pass("fork-batching")(ir.canonicalize(ir_of(src)), one_item)
    assert after.attrs["fork_batching"] == {} and not one_item.decisions[0].applied
    assert one_item.decisions[0].saving_s < 0
    after, ctx = run_pass("fork-batching", ir_of(src))  # 8 items: their warm-ups share one call
    assert list(after.attrs["fork_batching"].values()) == [{"warm_suffix": "Item "}] and ctx.decisions[0].saving_s > 0
    cheap_calls = PassContext(cost=CostModel(Calibration(prefill_token_s=1e-3, call_overhead_s=1e-4)))
    after = get_pass("fork-batching")(ir.canonicalize(ir_of(src)), cheap_calls)  # a device where calls are cheap
    assert list(after.attrs["fork_batching"].values()) == [{"warm_suffix": "Item "}]
    long = 'def f() { "' + "word " * 200 + '" fork t[3] as i { gen x(max_tokens=4) } }'
    after, ctx = run_pass("fork-batching", ir_of(long))  # whether the scheduler shares it in-batch: the run decides
    assert list(after.attrs["fork_batching"].values()) == [{"warm_suffix": ""}]
    assert "skipped at run time" in ctx.decisions[0].why


def test_select_lowering_leaves_a_one_choice_select():
    after, ctx = run_pass("select-lowering", ir_of('def f() { select t(choices=["only"]) }'))
    assert after.attrs["select_batched"] == [] and not ctx.decisions[0].applied


def test_select_lowering_marks_selects_and_rejects_duplicate_choices():
    after, _ = run_pass("select-lowering", ir_of('def f() { select t(choices=["a", "b"]) }'))
    assert after.attrs["select_batched"] == [0]
    with pytest.raises(ir.IRError, match="duplicate choices"):
        run_pass("select-lowering", ir_of('def f() { select t(choices=["a", "a"]) }'))


def test_constrained_precompile_stores_tables_and_rejects_bad_regex():
    ctx = PassContext()
    fn = ir_of('def f() { gen n(dtype=int) gen ip(regex=r"\\d+\\.\\d+") select c(choices=["x", "y"]) }')
    out = get_pass("constrained-precompile")(fn, ctx)
    keys = out.attrs["constraints"]
    assert len(keys) == 3 and len(ctx.constraints) == 3
    kinds = sorted(ctx.constraints[k]["kind"] for k in keys.values())
    assert kinds == ["choices", "regex", "regex"]
    assert all(e.get("dfa_states", 0) > 0 for e in ctx.constraints.values())
    # a regex the runtime cannot compile is a compile-time error at the gen's line
    bad = ir_of('def f() {\n gen n(regex=r"a(?=b)")\n}')
    with pytest.raises(ir.IRError) as info:
        get_pass("constrained-precompile")(bad, PassContext())
    assert info.value.loc.line == 2


def test_constrained_precompile_compiles_json_schemas_as_the_server_does():
    """A schema gen gets the runtime's own spec (same regex, or the same CFG grammar key for a recursive
    schema), not a second schema compiler's output."""
    from sglang.runtime.constrained import build_constraint_from_sampling_params

    flat = '{{"type": "object", "properties": {{"a": {{"type": "integer"}}}}, "required": ["a"]}}'
    tree = ('{{"$defs": {{"n": {{"type": "object", "properties": {{"kids": {{"type": "array", '
            '"items": {{"$ref": "#/$defs/n"}}}}}}}}}}, "$ref": "#/$defs/n"}}')
    ctx = PassContext()
    fn = ir_of(f"def f() {{ gen a(json_schema='{flat}') gen b(json_schema='{tree}') }}")
    get_pass("constrained-precompile")(fn, ctx)
    by_source = {e["source"]: e for e in ctx.constraints.values()}
    for src, engine in ((flat, "regex"), (tree, "cfg")):
        schema = src.replace("{{", "{").replace("}}", "}")
        spec = build_constraint_from_sampling_params({"json_schema": schema})
        entry = by_source[schema]
        assert entry["engine"] == engine
        assert entry["regex"] == spec.regex and entry.get("grammar") == spec.grammar
    assert by_source[flat.replace("{{", "{").replace("}}", "}")]["dfa_states"] > 0


def test_switches():
    assert enabled_passes(1) == list(PASS_ORDER)
    assert enabled_passes(0) == []
    assert "fork-batching" not in enabled_passes(1, disabled=("fork-batching",))
    assert enabled_passes(0, enabled=("dead-branch",)) == ["dead-branch"]
    with pytest.raises(ValueError, match="unknown pass"):
        enabled_passes(1, disabled=("nope",))


def test_o0_and_o1_plans_differ_only_where_passes_act():
    src = ('def f() { "A" "B: a shared context of some words, long enough that warming it up pays." '
           'if 1 > 2 { gen x } fork t[3] { gen y } select s(choices=["p", "q"]) }')
    p0 = compile_source(text=src, file="p.sgl", opt_level=0).function("f")
    p1 = compile_source(text=src, file="p.sgl").function("f")
    kinds0 = [s.kind for s in p0.steps]
    kinds1 = [s.kind for s in p1.steps]
    assert "branch" in kinds0 and "branch" not in kinds1  # dead branch removed at -O1
    fork0 = next(s for s in p0.steps if s.kind == "fork")
    fork1 = next(s for s in p1.steps if s.kind == "fork")
    assert not fork0.args["batched"] and fork1.args["batched"]
    sel0 = next(s for s in p0.steps if s.kind == "select")
    sel1 = next(s for s in p1.steps if s.kind == "select")
    assert not sel0.args["batched"] and sel1.args["batched"]
    p_nofork = compile_source(text=src, file="p.sgl", disabled=("fork-batching",)).function("f")
    assert not next(s for s in p_nofork.steps if s.kind == "fork").args["batched"]
