"""The eager interpreter and the compiled plan executor follow the same frontend rules (lang/gen_rules.py,
lang/backends/choices.py): typed gens constrain with the same regex and give the same value AND type (the
generated text, as SGLang), and select scores the same way for every choices method and temperature.

Each program runs on both paths over the same scripted backend (token = character); the compiled path
takes the traced Python program, and, where it matters, the `.sgl` spelling of it too."""
from __future__ import annotations

import pytest
from lang_fakes import ScriptedBackend

import sglang as sgl
from sglang.compiler.executor import PlanExecutor
from sglang.compiler.lower import compile_source, plan_for_ir
from sglang.lang.gen_rules import CHOICES_METHODS
from sglang.lang.sgl.errors import SglSemanticError
from sglang.runtime.sampling.sampling_params import TYPED_REGEX

# a typed gen's answer, by the regex it was constrained with (no regex: free text)
ANSWERS = {TYPED_REGEX["int"]: "42", TYPED_REGEX["str"]: '"hi"', TYPED_REGEX["float"]: "2.5",
           TYPED_REGEX["bool"]: "True"}


def _reply(prompt: str, sp: dict) -> str:
    return ANSWERS.get(sp.get("regex"), "free text")


def _eager(program, backend):
    state = program.run(backend=backend)
    return state, {name: state[name] for name in state.variables()}


def _compiled(plan, backend):
    out = PlanExecutor(plan, backend).run(None, {})
    assert "error" not in out, out.get("error")
    return out


def _gen_regexes(backend: ScriptedBackend) -> list:
    """The regex of every generating request (selects and prefills generate nothing)."""
    out = []
    for r in backend.requests:
        sps = r["sampling_params"] if isinstance(r["sampling_params"], list) else [r["sampling_params"]]
        out += [sp.get("regex") for sp in sps if sp.get("max_new_tokens") != 0]
    return out


@sgl.function
def typed(s):
    s += "int: " + sgl.gen_int("i", max_tokens=4)
    s += " str: " + sgl.gen_string("s", max_tokens=8)  # .sgl spells it dtype="string"
    s += " dtype=str: " + sgl.gen("d", dtype="str", max_tokens=8)
    s += " py-str: " + sgl.gen("p", dtype=str, max_tokens=8)
    s += " float: " + sgl.gen("f", dtype=float, max_tokens=8)
    s += " bool: " + sgl.gen("b", dtype="bool", max_tokens=8)


TYPED_SGL = ('def typed() { "int: " gen i(dtype=int, max_tokens=4) " str: " gen s(dtype="string", max_tokens=8) '
             '" dtype=str: " gen d(dtype="str", max_tokens=8) " py-str: " gen p(dtype=str, max_tokens=8) '
             '" float: " gen f(dtype=float, max_tokens=8) " bool: " gen b(dtype="bool", max_tokens=8) }')


def test_typed_gens_give_the_same_text_values_and_types_on_both_paths():
    eager_be, traced_be, sgl_be = (ScriptedBackend(reply=_reply) for _ in range(3))
    state, eager_vars = _eager(typed, eager_be)
    traced = _compiled(plan_for_ir(typed.trace()), traced_be)
    from_sgl = _compiled(compile_source(text=TYPED_SGL, file="typed.sgl"), sgl_be)
    expected = {"i": "42", "s": '"hi"', "d": '"hi"', "p": '"hi"', "f": "2.5", "b": "True"}
    assert eager_vars == expected and all(type(v) is str for v in eager_vars.values())  # SGLang keeps the text
    for out in (traced, from_sgl):
        assert out["variables"] == expected and all(type(v) is str for v in out["variables"].values())
        assert out["text"] == state.text()
    # the same regex per type on every path (one table: one constraint-cache key per type)
    want = [TYPED_REGEX[t] for t in ("int", "str", "str", "str", "float", "bool")]
    assert _gen_regexes(eager_be) == _gen_regexes(traced_be) == _gen_regexes(sgl_be) == want


def _select_program(method: str, temperature: float):
    @sgl.function
    def pick(s):
        s += "Question:" + sgl.select("c", choices=["ab", "c", "xy"], choices_method=method, temperature=temperature)

    return pick


def _lp(before: str, tok: int) -> float:
    """A logprob table that makes the three methods disagree (see the per-method winners below)."""
    if not before.startswith("Question:"):
        return {"a": -3.0, "b": -0.1, "c": -2.0, "x": -0.2, "y": -0.2}.get(chr(tok), -0.5)  # unconditional
    return {"a": -0.1, "b": -3.0, "c": -1.0, "x": -0.3, "y": -0.4}.get(chr(tok), -0.5)


WINNERS = {
    "token_length_normalized": "xy",  # means: ab -1.55, c -1.0, xy -0.35
    "greedy_token_selection": "ab",  # first tokens: a -0.1, c -1.0, x -0.3
    "unconditional_likelihood_normalized": "c",  # minus uncond means: ab -1.55+1.55=0, c -1.0+2.0=1, xy -0.35+0.2
}


def test_every_choices_method_is_compared():
    assert set(WINNERS) == set(CHOICES_METHODS)


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
@pytest.mark.parametrize("method,winner", sorted(WINNERS.items()))
def test_select_scores_the_same_on_both_paths(method, winner, temperature):
    program = _select_program(method, temperature)
    eager_be, compiled_be = ScriptedBackend(logprob=_lp), ScriptedBackend(logprob=_lp)
    state, eager_vars = _eager(program, eager_be)
    out = _compiled(plan_for_ir(program.trace()), compiled_be)
    assert eager_vars == out["variables"] == {"c": winner}
    assert out["text"] == state.text() == "Question:" + winner
    assert out["meta_info"]["c"] == state.get_meta_info("c")  # scores, logprobs, method: one protocol
    # the same requests, prompt for prompt (the executor batches them the same way here: one select)
    assert _prompts(eager_be) == _prompts(compiled_be)


def _prompts(backend: ScriptedBackend) -> list:
    out = []
    for r in backend.requests:
        p = r.get("text", r.get("input_ids"))
        out += p if isinstance(p, list) and p and isinstance(p[0], (str, list)) else [p]
    return out


def test_select_with_temperature_is_rejected_the_same_way_everywhere():
    """SGLang's select asserts temperature <= 1e-5 (choices are scored, not sampled): each path rejects it with
    the one message, each with its own location."""
    with pytest.raises(ValueError, match=r"select 'c': select temperature must be 0 .*got 0.7"):
        sgl.select("c", choices=["a", "b"], temperature=0.7)
    with pytest.raises(ValueError, match=r"select 'c': select temperature must be 0 .*got 0.7"):
        sgl.gen("c", choices=["a", "b"], temperature=0.7)
    with pytest.raises(SglSemanticError, match=r"select 'c': select temperature must be 0 .*got 0.7") as e:
        compile_source(text='def f() { select c(choices=["a", "b"], temperature=0.7) }', file="t.sgl")
    assert e.value.pos.line == 1


def test_gen_parameter_rules_are_the_same_for_python_and_sgl():
    bad = [("max_tokens=-1", "max_tokens must be >= 0"), ("top_p=0", "top_p must be in (0, 1]"),
           ("top_k=0", "top_k must be -1 (off) or >= 1"), ("min_p=2", "min_p must be in [0, 1]"),
           ('regex="(", ', "bad regex"), ('regex="a", dtype=int', "give at most one of regex, json_schema, dtype")]
    for args, msg in bad:
        with pytest.raises(ValueError) as py:
            eval(f"sgl.gen('x', {args})", {"sgl": sgl})
        with pytest.raises(SglSemanticError) as compiled:
            compile_source(text=f"def f() {{ gen x({args.rstrip(', ')}) }}", file="g.sgl")
        assert msg in str(py.value) and msg in str(compiled.value), args


def test_the_constraint_module_decodes_typed_gens_under_the_same_strings():
    """runtime/constrained keeps its own names for the typed regexes; they must stay the table's strings, or
    a typed gen would compile a second table under a second cache key."""
    from sglang.runtime.constrained import api as C

    assert (C.INT_REGEX, C.FLOAT_REGEX, C.BOOL_REGEX, C.STRING_REGEX) == \
        tuple(TYPED_REGEX[t] for t in ("int", "float", "bool", "str"))


def test_gen_takes_every_gen_field_and_names_an_unknown_keyword():
    """A sampling parameter added to the Gen op (docs/ARCHITECTURE.md's recipe) reaches `sgl.gen` without an edit
    there; a misspelt keyword is a TypeError naming it."""
    import dataclasses

    from sglang.lang.ir import Gen

    expr = sgl.gen("x", max_tokens=3, **{"top_logprobs_num": 2})
    assert expr.ops[0].top_logprobs_num == 2
    assert {f.name for f in dataclasses.fields(Gen)} >= {"max_tokens", "repetition_penalty"}
    with pytest.raises(TypeError, match="'max_token'"):
        sgl.gen("x", max_token=3)
