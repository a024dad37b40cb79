"""Speculation (passes/speculation.py + the executor's prefetch): a gen is sent before the decision that picks
it has resolved, where the cost model says it pays; the run takes fewer sequential round trips (waves) on
a fake backend and gives the same result."""
from __future__ import annotations

from compiler_fakes import FakeBackend
from sglang.compiler.calibration import Calibration
from sglang.compiler.cost import CostModel
from sglang.compiler.executor import PlanExecutor
from sglang.compiler.lower import compile_source

# a remote API: a round trip costs far more than decoding a few tokens, so overlapping one pays
REMOTE = CostModel(Calibration(prefill_token_s=1e-5, decode_token_s=1e-3, call_overhead_s=0.2), batch=1)

SELECT_THEN_GEN = ('def f(q: str) { "Q: {q}\\nKind: " select kind(choices=["math", "prose"]) "\\nAnswer: " '
                   'gen a(max_tokens=4) return a }')
BRANCH_ON_FORK = ('def f() { "Question?\\n" fork t[2] { gen v(max_tokens=3) } "Verdict: " '
                  'if t[0].v == "g1" { "Good: " gen a(max_tokens=4) } else { "Bad: " gen b(max_tokens=4) } }')


def run(src: str, cost: CostModel | None, **kw):
    decisions: list = []
    plan = compile_source(text=src, file="p.sgl", cost=cost, decisions=decisions, **kw)
    be = FakeBackend()
    ex = PlanExecutor(plan, be)
    out = ex.run_batch(None, [{"q": "2+2"}] if "q: str" in src else [{}])
    return out[0], ex, plan, [d for d in decisions if d.pass_name == "speculation"]


def test_a_select_sends_each_choices_continuation_with_its_scoring():
    spec, ex, plan, decisions = run(SELECT_THEN_GEN, REMOTE)
    plain, ex0, _, _ = run(SELECT_THEN_GEN, REMOTE, disabled=("speculation",))
    assert [d.applied for d in decisions] == [True]
    select = next(s for s in plan.function(None).steps if s.kind == "select")
    assert [plan.function(None).step(i).kind for i in select.args["speculate"]] == ["text", "gen"]
    assert spec["variables"] == plain["variables"] and spec["text"] == plain["text"]
    # unspeculated: scoring prefill, choice scoring, then the gen: 3 round trips; speculated: the gen rides
    # along with the scoring's first call and is back when the choice is made
    assert (ex0.stats.waves, ex.stats.waves) == (3, 2)
    assert ex.speculated == 2 and ex.speculation_hits == 1  # one guess per choice, the chosen one used


def test_a_branch_on_a_fork_variable_sends_each_arms_gen_while_the_branches_run():
    spec, ex, plan, decisions = run(BRANCH_ON_FORK, REMOTE)
    plain, ex0, _, _ = run(BRANCH_ON_FORK, REMOTE, disabled=("speculation",))
    assert [d.applied for d in decisions] == [True]
    assert spec["text"] == plain["text"] and spec["variables"] == plain["variables"]
    assert (ex0.stats.waves, ex.stats.waves) == (2, 1)  # the arm's gen went out with the branches' gens
    assert ex.speculated == 2 and ex.speculation_hits == 1


def test_no_speculation_where_the_cost_model_predicts_no_saving():
    # the default table (a GPU behind HTTP, 8 items a run): the decode thrown away outweighs a short scoring call
    _, ex, plan, decisions = run(SELECT_THEN_GEN, None)
    assert [d.applied for d in decisions] == [False] and decisions[0].saving_s < 0
    assert ex.speculated == 0 and not any("speculate" in s.args for s in plan.function(None).steps)
    # a condition on the stream's own select is resolved when the stream gets there: nothing to overlap
    own = 'def f() { select t(choices=["a", "b"]) if t == "a" { "A" gen x } else { "B" gen y } }'
    _, _, _, decisions = run(own, REMOTE)
    assert [d.node for d in decisions if d.applied] == []


def test_a_failed_guess_is_dropped_and_the_gen_sends_its_own_request():
    class FlakyOnce(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.failed = False

        def _call(self, payload):
            texts = payload["text"] if isinstance(payload["text"], list) else [payload["text"]]
            if not self.failed and any(t.endswith("Answer: ") for t in texts):
                self.failed = True  # the call carrying the speculative gens fails
                raise RuntimeError("lost")
            return super()._call(payload)

    plan = compile_source(text=SELECT_THEN_GEN, file="p.sgl", cost=REMOTE)
    be = FlakyOnce()
    ex = PlanExecutor(plan, be)
    out = ex.run_batch(None, [{"q": "2+2"}])[0]
    plain, _, _, _ = run(SELECT_THEN_GEN, REMOTE, disabled=("speculation",))
    assert be.failed and "error" not in out and out["variables"] == plain["variables"]
