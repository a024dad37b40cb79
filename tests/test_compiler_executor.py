"""The plan executor on a deterministic fake backend: batching, fork/select lowering, run-time control
flow, arguments, and the plan artifact."""
from __future__ import annotations

import json

import pytest

from compiler_fakes import FakeBackend
from sglang.compiler.executor import PlanExecutor, bind_args
from sglang.compiler.lower import compile_source
from sglang.compiler.plan import Plan, PlanError
from sglang.lang.sgl.errors import SglRuntimeError


def plan_of(src: str, **kw) -> Plan:
    return compile_source(text=src, file="p.sgl", **kw)


def run(src: str, batch: list[dict], function: str | None = None, **kw):
    be = FakeBackend()
    ex = PlanExecutor(plan_of(src, **kw), be, default_sampling={"max_new_tokens": 6})
    return ex.run_batch(function, batch), ex.stats, be


def sps(call: dict) -> list[dict]:
    """A native call's per-prompt sampling params (a one-prompt call travels unbatched, as the interpreter's)."""
    sp = call["sampling_params"]
    n = len(call["text"]) if isinstance(call["text"], list) else 1
    return sp if isinstance(sp, list) else [sp] * n


def texts(call: dict) -> list[str]:
    return call["text"] if isinstance(call["text"], list) else [call["text"]]


QA = 'def qa(q: str) { system { "Be brief." } user { q } assistant { gen a(max_tokens=5) } gen b(max_tokens=3) return a }'


def test_batch_items_share_one_engine_call_per_wave():
    out, stats, be = run(QA, [{"q": f"question {i}"} for i in range(8)])
    assert [o["index"] for o in out] == list(range(8))
    assert all(isinstance(o["return"], str) and o["return"] for o in out)
    # hoisted prefix prefill + one call for all 8 `a` gens + one for all 8 `b` gens
    assert stats.engine_calls == 3
    assert len(be.calls[1]["text"]) == 8 and len(be.calls[2]["text"]) == 8
    assert sps(be.calls[0])[0]["max_new_tokens"] == 0  # the shared-prefix prefill
    assert texts(be.calls[0]) == ["SYSTEM:Be brief.\nUSER:"]
    assert sps(be.calls[1])[0]["max_new_tokens"] == 5


def test_results_match_single_item_runs():
    batch, _, _ = run(QA, [{"q": "x"}, {"q": "y"}])
    singles = [run(QA, [row])[0][0] for row in ({"q": "x"}, {"q": "y"})]
    for b, s in zip(batch, singles):
        assert b["return"] == s["return"] and b["variables"] == s["variables"] and b["text"] == s["text"]


FORK = 'def f() { "A long shared context for every branch.\\n" fork t[3] as i { "Item {i}: " gen x(max_tokens=4) } ' \
       '"first={t[0].x}" }'


SHORT_FORK = FORK.replace("A long shared context for every branch.\\n", "Ctx\\n")


def test_fork_batching_prefills_a_short_parent_once_then_batches_branches():
    _, on, be_on = run(SHORT_FORK, [{}])
    kinds = [[sp["max_new_tokens"] for sp in sps(c)] for c in be_on.calls]
    assert kinds == [[0], [4, 4, 4]]  # one parent prefill, then the 3 branch gens in one call
    _, off, be_off = run(SHORT_FORK, [{}], disabled=("fork-batching",))
    assert [[sp["max_new_tokens"] for sp in sps(c)] for c in be_off.calls] == [[4, 4, 4]]
    # without the parent prefill each branch computes the shared context itself
    assert on.prefill_tokens < off.prefill_tokens


def test_a_parent_the_scheduler_shares_in_batch_gets_no_warm_up_call():
    """A parent longer than the scheduler's in-batch window (cost.server_shared_window) is computed once by
    the server anyway (its branches wait a round for it): a warm-up call would add a round trip for nothing."""
    _, _, be = run(FORK, [{}])
    assert [[sp["max_new_tokens"] for sp in sps(c)] for c in be.calls] == [[4, 4, 4]]


def test_fork_variables_join_and_concat():
    src = ('def f() { "P:" fork t { branch { "a" gen x(max_tokens=2) } branch { "b" gen y(max_tokens=2) } } '
           'join t as concat " end" return [t[0].x, t[1].y] }')
    out, _, _ = run(src, [{}])
    x, y = out[0]["return"]
    assert out[0]["text"] == "P:a" + x + "b" + y + " end"


SELECT = 'def f(q: str) { "Q: {q}\\nA: " select c(choices=["yes", "no", "maybe"]) }'


def test_select_lowering_scores_all_choices_in_one_call():
    out, on, be_on = run(SELECT, [{"q": "a"}, {"q": "b"}])
    assert all(o["variables"]["c"] in ("yes", "no", "maybe") for o in out)
    # both items' prompt prefills (1 call), then both prompts and all 2x3 choices in ONE scoring call (no
    # warm-up of the 3-character shared prefix "Q: ": the cost model predicts the call costs more than it spares)
    assert on.engine_calls == 2 and len(be_on.calls[-1]["text"]) == 2 * (1 + 3)
    out0, off, _ = run(SELECT, [{"q": "a"}, {"q": "b"}], disabled=("select-lowering",))
    assert off.engine_calls > on.engine_calls
    assert [o["variables"] for o in out0] == [o["variables"] for o in out]  # same decisions


def test_data_dependent_branch_and_runtime_loop():
    src = ('def f() { select t(choices=["alpha", "beta"]) '
           'if t == "alpha" { "A" gen x(max_tokens=2) } else { "B" gen y(max_tokens=2) } '
           'gen lines(max_tokens=5) for l in lines { "<{l}>" } return t }')
    out, _, _ = run(src, [{}])
    o = out[0]
    chosen = o["return"]
    assert ("x" in o["variables"]) == (chosen == "alpha") and ("y" in o["variables"]) == (chosen == "beta")
    assert "<" + o["variables"]["lines"] + ">" in o["text"]  # a one-line value iterates once


def test_loop_generated_variable_reports_every_value():
    out, _, _ = run('def f() { for i in range(3) { "step {i}:" gen s(max_tokens=3) } }', [{}])
    assert isinstance(out[0]["variables"]["s"], list) and len(out[0]["variables"]["s"]) == 3


def test_dtype_int_gen_is_constrained_and_holds_text():
    # the variable holds the generated text, as SGLang's gen_int; int(...) converts it
    out, _, be = run("def f() { gen n(dtype=int, max_tokens=3) return int(n) + 1 }", [{}])
    assert out[0]["return"] == 43  # the fake answers "42" to an int regex
    assert out[0]["variables"]["n"] == "42"
    assert sps(be.calls[0])[0]["regex"]


def test_streaming_events_in_order():
    events = []
    be = FakeBackend()
    ex = PlanExecutor(plan_of(QA), be)
    ex.run_batch(None, [{"q": "z"}], on_event=lambda i, ev: events.append((i, ev["variable"])))
    assert events == [(0, "a"), (0, "b")]


def test_arguments_are_validated():
    fplan = plan_of('def f(n: int, s: str = "x", flags: list = []) { }').function("f")
    assert bind_args(fplan, {"n": "3"}) == {"n": 3, "s": "x", "flags": []}
    assert bind_args(fplan, {"n": 3, "flags": "[1, 2]"})["flags"] == [1, 2]
    with pytest.raises(SglRuntimeError, match="missing argument 'n'"):
        bind_args(fplan, {})
    with pytest.raises(SglRuntimeError, match="no parameter 'm'"):
        bind_args(fplan, {"n": 1, "m": 2})
    with pytest.raises(SglRuntimeError, match="'n' must be int"):
        bind_args(fplan, {"n": "three"})
    with pytest.raises(SglRuntimeError, match="'s' must be str"):
        bind_args(fplan, {"n": 1, "s": 5})


def test_one_failing_item_does_not_stop_the_batch():
    src = 'def f(k: str) { gen x(max_tokens=2) "{int(k)}" }'
    out, _, _ = run(src, [{"k": "1"}, {"k": "oops"}, {"k": "3"}])
    assert "error" not in out[0] and "error" not in out[2]
    assert "cannot evaluate" in out[1]["error"]


def test_plan_artifact_round_trip_and_version_check(tmp_path):
    plan = plan_of(FORK)
    path = tmp_path / "p.sglc"
    plan.save(path)
    again = Plan.load(path)
    assert again.to_json() == plan.to_json()
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="version 99 is not supported"):
        Plan.load(path)
    path.write_text("{not json")
    with pytest.raises(PlanError, match="not a plan artifact"):
        Plan.load(path)
    path.write_text('{"format": "something-else"}')
    with pytest.raises(PlanError, match="not a compiled sglang plan"):
        Plan.load(path)


def test_plan_steps_have_dependencies():
    fplan = plan_of('def f(q: str) { gen a(max_tokens=2) "{a}" gen b(max_tokens=2) }').function("f")
    gen_a = next(s for s in fplan.steps if s.kind == "gen" and s.args["name"] == "a")
    var_a = next(s for s in fplan.steps if s.kind == "var")
    assert gen_a.id in var_a.deps  # a data edge: reading a waits for its gen
    assert all(s.deps for s in fplan.steps[1:])  # every later step follows its predecessor


def test_huge_waves_are_split_into_capped_calls(monkeypatch):
    import sglang.compiler.dispatch as D

    monkeypatch.setattr(D, "MAX_CALL_BATCH", 3)
    out, stats, be = run("def f(q: str) { q gen a(max_tokens=2) }", [{"q": str(i)} for i in range(7)])
    assert len(out) == 7 and all("error" not in o for o in out)
    assert sorted(len(c["text"]) for c in be.calls) == [1, 3, 3]  # the three calls go out together


_STMTS = ['gen a(max_tokens=2)', '"t {q}"', 'select s(choices=["u", "v"])', 'if s == "u" { gen c }',
          'if a { "A" } else { "B" }', 'fork t[2] as i { "{i}" gen d }', 'join t as concat', '"{t[0].d}"',
          'for k in range(2) { gen e }', 'for l in a { "{l}" }', 'user { q }', 'assistant { gen h }',
          'let z = q + "!"', '"{z}"', 'g(1)', 'if true { gen m } else { "dead" }', '"{len(q)}"',
          'fork u { branch { gen p } branch { "x" } }', '"{u[0].p}"', 'select r(choices=[q, "lit"])']


def test_random_programs_compile_cleanly_and_run():
    """Random statement sequences: either a clean SglError at compile time, or a plan that runs."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sglang.lang.sgl.errors import SglError

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.sampled_from(_STMTS), min_size=1, max_size=7))
    def check(stmts):
        src = 'def g(x: int) { "g{x}" gen gv(max_tokens=1) }\ndef f(q: str) {\n' + "\n".join(stmts) + "\n}"
        try:
            plan = plan_of(src)
        except SglError:
            return
        out = PlanExecutor(plan, FakeBackend()).run_batch("f", [{"q": "hi"}, {"q": "yo"}])
        assert all("error" not in o for o in out), out

    check()


def test_fork_count_and_choices_decided_at_run_time():
    src = ('def f(n: int, opts: list) { "ctx " fork t[n] as i { "b{i} " gen x(max_tokens=2) } '
           'select c(choices=opts) return [t[0].x, c] }')
    fplan = plan_of(src).function("f")
    fork = next(s for s in fplan.steps if s.kind == "fork")
    assert fork.args["shared_body"] and not isinstance(fork.args["n"], int)  # not known at compile time
    out, _, be = run(src, [{"n": 3, "opts": ["left", "right"]}, {"n": 1, "opts": ["up"]}])
    assert out[0]["return"][1] in ("left", "right") and out[1]["return"][1] == "up"
    gens = [sp["max_new_tokens"] for c in be.calls for sp in sps(c) if sp["max_new_tokens"] == 2]
    assert len(gens) == 3 + 1  # 3 branches for item 0, 1 for item 1
    bad, _, _ = run(src, [{"n": 0, "opts": ["a"]}])
    assert "fork count must be an int >= 1" in bad[0]["error"]


def test_select_scores_and_requested_logprobs_are_reported():
    out, _, _ = run('def f() { "Q" select c(choices=["a", "b"]) gen g(max_tokens=2, return_logprob=true) gen h }',
                    [{}])
    meta = out[0]["meta_info"]
    assert set(meta) == {"c", "g"}  # h did not ask for logprobs
    assert len(meta["c"]["scores"]) == 2


def test_react_example_stops_after_finish():
    from pathlib import Path

    plan = compile_source(Path(__file__).resolve().parent.parent / "examples" / "react_agent.sgl")
    out = PlanExecutor(plan, FakeBackend()).run_batch(None, [{"question": q} for q in ("a?", "bb?", "ccc?")])
    for o in out:
        actions = o["variables"]["action"]
        actions = actions if isinstance(actions, list) else [actions]
        steps = actions.index("finish") + 1 if "finish" in actions else 3
        assert len(actions) == steps  # no step after "finish", at most 3
        thoughts = o["variables"]["thought"]
        assert len(thoughts if isinstance(thoughts, list) else [thoughts]) == steps


def test_while_loops_run_while_the_condition_holds_up_to_max():
    out, _, _ = run("def f() { gen n(dtype=int) while int(n) > 40 max 4 { gen n(dtype=int) } }", [{}])
    assert out[0]["variables"]["n"] == ["42"] * 5  # the fake always says 42: the bound stops it
    out, _, _ = run('def f() { gen n(dtype=int) while int(n) < 0 { gen m } return n }', [{}])
    assert out[0]["return"] == "42" and "m" not in out[0]["variables"]
    assert "Loop" not in str(plan_of("def f() { while false { gen x } }").ir)  # dead loop removed when lowering


def test_a_ready_stream_does_not_wait_for_a_slow_call(monkeypatch):
    """No wave barrier: item 1's second gen goes out while item 0's first call is still running."""
    import threading

    import sglang.compiler.dispatch as D

    monkeypatch.setattr(D, "MAX_CALL_BATCH", 1)  # every request its own call, so they can overlap
    second = threading.Event()
    waited: list[bool] = []

    class Slow(FakeBackend):
        def _call(self, payload):
            text = payload["text"] if isinstance(payload["text"], str) else payload["text"][0]
            if text.startswith("fast") and "|" in text:
                second.set()
            if text == "slow":
                waited.append(second.wait(timeout=30))  # released only by the other item's next request
            return super()._call(payload)

    ex = PlanExecutor(plan_of('def f(q: str) { q gen a(max_tokens=2) "|" gen b(max_tokens=2) }'), Slow())
    out = ex.run_batch(None, [{"q": "slow"}, {"q": "fast"}])
    assert all("error" not in o for o in out)
    assert waited == [True]


def test_warm_up_prefills_go_out_only_where_they_save_work():
    long_ctx = "A long shared instruction block that the scheduler shares in-batch by itself. " * 3
    _, _, be = run(f'def f(q: str) {{ "{long_ctx}" q gen a(max_tokens=2) }}', [{"q": "x"}, {"q": "y"}])
    assert all(sp["max_new_tokens"] != 0 for c in be.calls for sp in sps(c))  # no hoisting call
    _, _, be = run('def f(q: str) { "Short: " q gen a(max_tokens=2) }', [{"q": "x"}])
    assert all(sp["max_new_tokens"] != 0 for c in be.calls for sp in sps(c))  # one item: nothing to share
    _, _, be = run('def f() { "ctx" gen a(max_tokens=2) fork t[3] as i { gen x(max_tokens=2) } }', [{}])
    # the parent's text is cached by its own gen: the branches go out right away, no parent prefill
    assert [[sp["max_new_tokens"] for sp in sps(c)] for c in be.calls] == [[2], [2, 2, 2]]
