"""Nested forks compile, and partial compilation (compiler/segments.py) runs what the tracer cannot follow:
the same results as the interpreter with fewer engine calls. Scripted backend first; the real default
model (CPU, greedy) at the end."""
from __future__ import annotations

import logging

import pytest
from lang_fakes import ScriptedBackend
from test_compiled_default import Counting, assert_same

import sglang as sgl
from sglang.compiler import segments
from sglang.lang.ir import Gen, Select, Text

ACTIONS = [" Search", " Finish"]


@sgl.function
def tree(s, puzzle):
    s += "Puzzle: " + puzzle + "\n"
    plans = s.fork(3)
    results = []
    for i, p in enumerate(plans):
        p += "Plan " + str(i) + ":" + sgl.gen("plan", max_tokens=4, temperature=0)
        runs = p.fork(2)
        for j, e in enumerate(runs):
            e += " Run " + str(j) + ":" + sgl.gen("run", max_tokens=4, temperature=0)
        results.append((p["plan"], [e["run"] for e in runs]))
    for plan, (first, second) in results:
        s += "Plan:" + plan + " Runs:" + first + "|" + second + "\n"
    s += "Answer:" + sgl.gen("answer", max_tokens=4, temperature=0)
    return s["answer"]


TOOL_CALLS: list[str] = []


def tool(argument: str) -> str:
    TOOL_CALLS.append(argument)  # a side effect: the body's Python must run once per item
    return "fact " + str(sum(map(ord, argument)) % 5)


@sgl.function
def react(s, question, steps=3):
    s += "Question: " + question + "\n"
    for k in range(steps):
        s += "Thought:" + sgl.gen("thought_" + str(k), max_tokens=4, temperature=0)
        s += "\nAction:" + sgl.select("action_" + str(k), choices=ACTIONS)
        if s["action_" + str(k)] == " Finish":  # Python control flow on a generated value
            break
        s += " [" + sgl.gen("arg_" + str(k), max_tokens=3, temperature=0) + "]\n"
        s += "Observation: " + tool(s["arg_" + str(k)]) + "\n"
    s += "\nAnswer:" + sgl.gen("answer", max_tokens=4, temperature=0)
    return s["answer"]


def reply(prompt, sp):
    return f"<{len(prompt) % 7}>"


def logprob(before, tok):
    """Choice scores that differ by prompt, so items take different paths through the agent's loop."""
    return -((len(before) * 31 + tok) % 13) / 3.0


def both(fn, rows, **kw):
    """(interpreter states, compiled states, their backends); no item may fall back to the interpreter."""
    bi, bc = ScriptedBackend(reply, logprob), ScriptedBackend(reply, logprob)
    interp = fn.run_batch(rows, backend=bi, compiled=False, **kw)
    fallbacks, logger = Fallbacks(), logging.getLogger("sglang.compiler.jit")
    level = logger.level
    logger.addHandler(fallbacks)
    logger.setLevel(logging.DEBUG)
    try:
        comp = fn.run_batch(rows, backend=bc, **kw)
    finally:
        logger.removeHandler(fallbacks)
        logger.setLevel(level)
    assert not fallbacks.seen, fallbacks.seen
    return interp, comp, bi, bc


class Fallbacks(logging.Handler):
    """Collects the jit's "the interpreter runs it again" lines (the handler sees DEBUG records)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "runs it again" in record.getMessage():
            self.seen.append(record.getMessage())


def batch_sizes(backend) -> list[int]:
    return [len(r["text"]) if isinstance(r.get("text"), list) else 1 for r in backend.requests]


# ---------------------------------------------------------------- nested forks

def test_nested_forks_trace_to_one_plan():
    steps = tree.compile().function(None).steps
    assert [st.kind for st in steps].count("fork") == 4  # the plans' fork and one executions' fork per plan
    reads = [st for st in steps if st.kind == "var" and st.args["name"] == "run"]
    assert len(reads) == 6 and all(steps[st.args["fork"]].kind == "fork" for st in reads)


def test_nested_forks_give_the_interpreters_results_with_all_branches_of_all_items_batched():
    rows = [{"puzzle": f"p{i}"} for i in range(4)]
    interp, comp, bi, bc = both(tree, rows)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert 4 * 3 in batch_sizes(bc)  # every plan of every item in one call
    assert 4 * 3 * 2 in batch_sizes(bc)  # every execution of every plan of every item in one call
    assert len(bc.requests) < len(bi.requests) / 4


# ---------------------------------------------------------------- partial compilation

def test_control_flow_on_generated_values_runs_as_segments_with_the_interpreters_results(caplog):
    rows = [{"question": "q" * n + "?"} for n in range(1, 7)]  # prompt lengths steer the scripted scores
    TOOL_CALLS.clear()
    bi = ScriptedBackend(reply, logprob)
    interp = react.run_batch(rows, backend=bi, compiled=False)
    interp_tools = sorted(TOOL_CALLS)
    TOOL_CALLS.clear()
    bc = ScriptedBackend(reply, logprob)
    with caplog.at_level(logging.DEBUG, logger="sglang.compiler.jit"):
        comp = react.run_batch(rows, backend=bc)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert sorted(TOOL_CALLS) == interp_tools  # the body's Python ran once per item, not once per segment
    assert len({len(st.text()) for st in comp}) > 1 and any("Finish" in st.text() for st in comp)  # paths differ
    assert len(bc.requests) < len(bi.requests) / 2
    assert max(batch_sizes(bc)) >= len(rows)  # a segment's gens of every item in one call
    assert not [r for r in caplog.records if "failed on the segment path" in r.getMessage()]
    assert any("compiled segments" in r.getMessage() for r in caplog.records)


def test_items_at_different_steps_batch_with_the_items_at_their_step():
    rows = [{"question": "q", "steps": n} for n in (1, 2, 3, 3)]
    interp, comp, bi, bc = both(react, rows)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert len(bc.requests) < len(bi.requests)


@sgl.function
def forks_and_roles(s, topic):
    s += sgl.system("Be brief.")
    s += sgl.user("Topic: " + topic)
    s += sgl.assistant(sgl.gen("first", max_tokens=4))
    if s["first"].startswith("<"):  # a string method on a generated value
        group = s.fork(2)
        for i, f in enumerate(group):
            f += "Idea " + str(i) + ":" + sgl.gen("idea", max_tokens=3)
        group.join()
        ideas = s["idea"]
        more = s.fork(2)
        for f in more:
            f += sgl.gen("extra", max_tokens=2)
        more.join("concate_and_append")
        s += " ideas=" + str(len(ideas)) + " text=" + str(len(s.text()))
    s["note"] = "set in Python"
    s += sgl.user("Done?") + sgl.assistant(sgl.gen("done", max_tokens=2))
    return s["note"], "done" in s, s.messages()[-1]["role"]


def test_forks_joins_roles_and_state_reads_on_the_segment_path():
    rows = [{"topic": t} for t in ("cats", "dogs", "birds")]
    interp, comp, bi, bc = both(forks_and_roles, rows)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert len(bc.requests) < len(bi.requests)


@sgl.function
def raises_after_a_read(s, q):
    s += q + sgl.gen("a", max_tokens=3)
    if s["a"]:
        raise ValueError("the program's own error: " + q)


def test_an_item_that_fails_on_the_segment_path_fails_the_same_way_in_the_interpreter(caplog):
    with caplog.at_level(logging.DEBUG, logger="sglang.compiler.jit"):
        comp = raises_after_a_read.run_batch([{"q": "x"}], backend=ScriptedBackend())
    interp = raises_after_a_read.run_batch([{"q": "x"}], backend=ScriptedBackend(), compiled=False)
    assert type(comp[0].error()) is ValueError and str(comp[0].error()) == str(interp[0].error())
    assert any("failed on the segment path" in r.getMessage() for r in caplog.records)


def test_a_segments_shape_lifts_its_text_so_items_share_a_plan():
    ops_a = [(Text("Q: "), None), (Text("cats\n"), None), (Gen("t", max_tokens=3), None),
             (Text("\nA:"), None), (Select("a", ("x", "y")), None)]
    ops_b = [(Text("Q: dogs and more\n"), None), (Gen("t", max_tokens=3), None), (Text("\nA:"), None),
             (Select("a", ("x", "y")), None)]
    key_a, _, texts_a = segments.segment_shape(ops_a)
    key_b, _, texts_b = segments.segment_shape(ops_b)
    assert key_a == key_b
    assert texts_a == {"t0": "Q: cats\n", "t1": "\nA:"} and texts_b["t0"] == "Q: dogs and more\n"
    key_c, _, _ = segments.segment_shape([(Text("Q"), None), (Gen("t", max_tokens=4), None)])
    assert key_c != key_a  # another gen is another plan


# ---------------------------------------------------------------- the real default model (CPU, greedy)

@pytest.mark.parametrize("fn", [tree, react], ids=lambda f: f.name)
def test_greedy_outputs_are_identical_on_the_default_model(default_engine, fn):
    arg = fn.arg_names[0]
    rows = [{arg: v} for v in ("How tall is the tower?", "Is water wet?", "What is 17 times 23?")]
    bi, bc = Counting(default_engine), Counting(default_engine)
    interp = fn.run_batch(rows, backend=bi, compiled=False, max_new_tokens=8)
    comp = fn.run_batch(rows, backend=bc, max_new_tokens=8)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert bc.calls < bi.calls


@sgl.function
def sub_step(s, k):
    s += " step " + str(k) + ":" + sgl.gen("step_" + str(k), max_tokens=2)


@sgl.function
def rereads(s, q):
    s += q + sgl.gen("a", max_tokens=2)
    if s["a"]:  # a boundary: the gen that defines it runs first
        s += " again:" + s["a"] + sgl.gen("b", max_tokens=2)  # `a` is known and nothing redefines it: no boundary
        sub_step(s, 1)  # another program called on this state
        s += " a=" + s["a"]  # still no boundary
    return len(s["step_1"])


def test_a_read_waits_only_for_the_ops_that_define_the_variable():
    rows = [{"q": "x"}, {"q": "yy"}]
    interp, comp, _, _ = both(rereads, rows)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    items, rounds = segments.run_segments(rereads, ScriptedBackend(reply, logprob), rows, {}, {})
    assert rounds == 2 and all(it.error is None for it in items)  # `a`, then `step_1`: both items each time
