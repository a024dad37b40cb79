"""`fn.run` / `fn.run_batch` are compiled by default (compiler/jit.py): a plan per argument shape, cached;
the same text, variables, meta info, messages and return values as the interpreter; the interpreter for
what cannot be traced. Deterministic scripted backend here; the real default model at the end."""
from __future__ import annotations

import logging

import pytest
from lang_fakes import ScriptedBackend

import sglang as sgl
from sglang.compiler import jit
from sglang.compiler.plan import Plan
from sglang.lang.backends.base import BaseBackend

CHOICES = ["yes", "no"]


@sgl.function
def judge(s, question):
    s += sgl.system("You judge answers.")
    s += sgl.user("Question: " + question)
    forks = s.fork(3)
    for i, f in enumerate(forks):
        f += sgl.assistant("Aspect " + str(i) + ":" + sgl.gen("view", max_tokens=4))
    s += sgl.assistant("Verdict:" + sgl.gen("verdict", max_tokens=3) + " ok?" + sgl.select("ok", choices=CHOICES))
    return [f["view"] for f in forks] + [s["verdict"]]


def both(fn, rows, **kw):
    """(interpreter states, compiled states, interpreter backend, compiled backend)."""
    bi, bc = ScriptedBackend(), ScriptedBackend()
    interp = fn.run_batch(rows, backend=bi, compiled=False, **kw)
    comp = fn.run_batch(rows, backend=bc, **kw)
    return interp, comp, bi, bc


def assert_same(a, b):
    assert a.error() is None and b.error() is None, (a.error(), b.error())
    assert b.text() == a.text()
    assert b.variables() == a.variables()
    assert b.messages() == a.messages()
    assert b.ret_value == a.ret_value and type(b.ret_value) is type(a.ret_value)
    for name in a.variables():  # a request's id and cache hits are its own; the rest must agree
        assert close(stable(b.get_meta_info(name)), stable(a.get_meta_info(name))), name


def close(x, y) -> bool:
    """Equal, floats to 1e-4: a logprob computed in a batch of another size differs in its last bits."""
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-4 * max(1.0, abs(y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(close(u, v) for u, v in zip(x, y))
    return x == y


def stable(meta):
    return {k: v for k, v in (meta or {}).items() if k not in ("id", "cached_tokens")}


def test_run_batch_is_compiled_and_gives_the_interpreters_results_with_fewer_calls():
    rows = [{"question": f"q{i}?"} for i in range(4)]
    interp, comp, bi, bc = both(judge, rows, temperature=0)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert len(bc.requests) < len(bi.requests)  # items and branches batched into shared calls
    branch_gens = [sum(sp["max_new_tokens"] == 4 for sp in r["sampling_params"]) for r in bc.requests
                   if isinstance(r.get("sampling_params"), list)]
    assert 4 * 3 in branch_gens  # the 3 branches' 4-token gens of all 4 items went out in one call


def test_run_is_compiled_too_and_the_state_can_continue_in_the_interpreter():
    be = ScriptedBackend()
    state = judge.run(question="why?", backend=be)
    assert any(isinstance(r.get("sampling_params"), list) and
               sum(sp["max_new_tokens"] == 4 for sp in r["sampling_params"]) == 3 for r in be.requests)  # branches batched
    again = judge.run(question="why?", backend=ScriptedBackend(), compiled=False)
    assert_same(again, state)
    state += " more" + sgl.gen("more", max_tokens=2)  # a finished compiled state keeps going eagerly
    assert state["more"] and state.text().endswith(state["more"])


def test_the_plan_is_traced_once_per_argument_shape(monkeypatch):
    traced = []
    real = jit.compile_program
    monkeypatch.setattr(jit, "compile_program", lambda fn, **c: traced.append(c) or real(fn, **c))

    @sgl.function
    def fan(s, topic, n):
        s += "Topic: " + topic
        forks = s.fork(n)
        forks += sgl.gen("x", max_tokens=2)
        forks.join()
        return s["x"]

    be = ScriptedBackend()
    fan.run_batch([{"topic": "a", "n": 2}, {"topic": "b", "n": 2}], backend=be)
    fan.run_batch([{"topic": "c", "n": 2}], backend=be)
    # all symbolic fails (a fork count must be known); strings symbolic: one plan for every topic
    assert traced == [{}, {"n": 2}]
    out = fan.run_batch([{"topic": "d", "n": 3}, {"topic": "e", "n": 2}], backend=be)
    assert traced == [{}, {"n": 2}, {"n": 3}]  # a constant of the shape (the fork count) makes a new plan
    assert [len(s.ret_value) for s in out] == [3, 2]  # the join gathered one value per branch


def test_per_item_choices_share_one_plan(monkeypatch):
    traced = []
    real = jit.compile_program
    monkeypatch.setattr(jit, "compile_program", lambda fn, **c: traced.append(c) or real(fn, **c))

    @sgl.function
    def pick(s, context, choices):
        s += "Context: " + context + "\nEnding:" + sgl.select("ending", choices=choices)
        return s["ending"]

    rows = [{"context": f"c{i}", "choices": [f" e{i}", f" f{i}", " g"]} for i in range(4)]
    interp, comp, bi, bc = both(pick, rows)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert traced == [{}]  # the choices are a run-time value of the one plan
    # the short shared prefix warmed once, every item's prompt prefilled in one call, all choices scored in one
    assert len(bc.requests) == 3


LIMIT = 3


@sgl.function
def limited(s, q):
    s += q + sgl.gen("a", max_tokens=LIMIT)


def test_a_changed_global_makes_a_new_plan(monkeypatch):
    be = ScriptedBackend(reply=lambda prompt, sp: "abcdefgh")
    assert limited.run(q="x", backend=be)["a"] == "abc"
    monkeypatch.setattr(__import__(__name__), "LIMIT", 5)
    assert limited.run(q="x", backend=be)["a"] == "abcde"  # as the interpreter reads the new value


@sgl.function
def agent(s, q):
    s += q + sgl.select("act", choices=["go", "stop"])
    if s["act"] == "go":  # Python control flow on a generated value: not traceable
        s += sgl.gen("more", max_tokens=2)
    return s["act"]


def test_untraceable_programs_run_as_segments_with_a_debug_line(caplog):
    with caplog.at_level(logging.DEBUG, logger="sglang.compiler.jit"):
        interp, comp, bi, bc = both(agent, [{"q": "x"}, {"q": "y"}])
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert len(bc.requests) < len(bi.requests)  # both items' segments share calls (tests/test_partial_compile.py)
    why = [r.getMessage() for r in caplog.records if "runs as compiled segments" in r.getMessage()]
    assert len(why) == 1 and "TraceError" in why[0] and "'act'" in why[0]  # said once: the decision is cached


class TextOnly(BaseBackend):
    """A backend without the native batched transport (as OpenAI): the interpreter runs everything."""

    name = "text-only"

    def generate(self, inp, sampling_params, options):
        return "<" + str(len(inp.text)) + ">", {}


def test_a_backend_without_native_calls_is_interpreted(monkeypatch, caplog):
    monkeypatch.setattr(jit, "compile_program", lambda *a, **k: pytest.fail("nothing to compile"))

    @sgl.function
    def two(s, q):
        s += q + sgl.gen("a", max_tokens=3) + "|" + sgl.gen("b", max_tokens=3)

    with caplog.at_level(logging.DEBUG, logger="sglang.compiler.jit"):
        state = two.run(q="hey", backend=TextOnly())
    assert state.text() == "hey<3>|<7>"
    assert any("no native batched transport" in r.getMessage() for r in caplog.records)


def test_return_values_keep_their_python_types():
    @sgl.function
    def pair(s, q):
        s += q + sgl.gen("a", max_tokens=2)
        return s["a"], "fixed", 3

    interp, comp, _, _ = both(pair, [{"q": "x"}])
    assert_same(interp[0], comp[0])
    assert isinstance(comp[0].ret_value, tuple)


def test_an_item_that_fails_in_the_plan_fails_the_same_way_in_the_interpreter():
    def reply(prompt, sp):
        if "boom" in prompt:
            raise RuntimeError("backend down")
        return "ok"

    @sgl.function
    def one(s, q):
        s += q + sgl.gen("a", max_tokens=2)

    rows = [{"q": "fine"}, {"q": "boom"}]
    comp = one.run_batch(rows, backend=ScriptedBackend(reply))
    interp = one.run_batch(rows, backend=ScriptedBackend(reply), compiled=False)
    assert comp[0].error() is None and comp[0]["a"] == "ok"
    assert type(comp[1].error()) is type(interp[1].error()) and str(comp[1].error()) == str(interp[1].error())


def test_fn_compile_and_sgl_compile_give_the_plan():
    plan = judge.compile()
    assert isinstance(plan, Plan) and plan.function(None).name == "judge" and plan.function(None).params == ["question"]
    again = sgl.compile(judge).function(None)
    assert [(st.kind, st.args) for st in again.steps] == [(st.kind, st.args) for st in plan.function(None).steps]
    with pytest.raises(sgl.TraceError, match="'act'"):
        agent.compile()


# ---------------------------------------------------------------- the real default model (CPU, greedy)

@pytest.fixture(scope="module")
def engine(default_engine):
    return default_engine


class Counting(sgl.EngineBackend):
    def __init__(self, engine):
        super().__init__(engine)
        self.calls = 0

    def _call(self, payload):
        self.calls += 1
        return super()._call(payload)


@sgl.function
def few_shot(s, question):
    s += "Answer yes or no.\nQ: Is fire hot?\nA: yes\nQ: Is ice hot?\nA: no\nQ: " + question + "\nA:"
    s += sgl.select("answer", choices=[" yes", " no"])
    return s["answer"]


@sgl.function
def chat(s, question):
    s += sgl.system("You are terse.")
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("a1", max_tokens=6, temperature=0))
    s += sgl.user("And why?")
    s += sgl.assistant(sgl.gen("a2", max_tokens=6, temperature=0))
    return s["a2"]


@sgl.function
def fork_judge(s, question):
    s += "Question: " + question + "\n"
    forks = s.fork(3)
    for f, dim in zip(forks, ("clarity", "truth", "tone")):
        f += "On " + dim + ":" + sgl.gen("j", max_tokens=5, temperature=0)
    s += "Verdict:" + sgl.gen("verdict", max_tokens=5, temperature=0)
    return [f["j"] for f in forks] + [s["verdict"]]


@sgl.function
def json_regex(s, name):
    s += "Describe " + name + " as JSON: "
    s += sgl.gen("json", max_tokens=24, regex=r'\{"name": "[a-z]{1,8}", "age": [0-9]{1,2}\}', temperature=0)
    return s["json"]


@pytest.mark.parametrize("fn", [few_shot, chat, fork_judge, json_regex], ids=lambda f: f.name)
def test_greedy_outputs_are_identical_on_the_default_model(engine, fn):
    arg = fn.arg_names[0]
    rows = [{arg: v} for v in ("Is the sun cold?", "Is water wet?", "Is snow white?")]
    bi, bc = Counting(engine), Counting(engine)
    interp = fn.run_batch(rows, backend=bi, compiled=False, max_new_tokens=8)
    comp = fn.run_batch(rows, backend=bc, max_new_tokens=8)
    for a, b in zip(interp, comp):
        assert_same(a, b)
    assert bc.calls < bi.calls
