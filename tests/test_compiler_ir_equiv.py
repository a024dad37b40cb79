"""`.sgl` programs and the same programs written with the Python frontend give the same IR.

The Python side is traced with `fn.trace()` (lang/tracer.py); both sides are compared in canonical form
(`lang.ir.structural_equal`). tool_use branches on a generated value, which Python tracing cannot follow
(it raises TraceError), so that README program is only compiled from .sgl.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import sglang as sgl
from sglang.compiler.irgen.build import lower_program
from sglang.compiler.loader import load_program
from sglang.lang.ir import canonicalize, structural_equal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@sgl.function
def multi_turn_question(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=256))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=256))


@sgl.function
def multi_turn_stream(s, question_1="What is the capital of the United States?",
                      question_2="List two local attractions."):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=64))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=64))


@sgl.function
def tip_suggestion(s):
    s += sgl.assistant("Here are two tips for staying healthy: 1. Balanced Diet. 2. Regular Exercise.\n\n")
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += sgl.assistant(f"Now, expand tip {i + 1} into a paragraph:\n")
        f += sgl.assistant(sgl.gen("detailed_tip", max_tokens=256, stop="\n\n"))
    s += sgl.assistant("Tip 1:" + forks[0]["detailed_tip"] + "\n")
    s += sgl.assistant("Tip 2:" + forks[1]["detailed_tip"] + "\n")
    s += sgl.assistant("In summary" + sgl.gen("summary"))
    return s["summary"]


@sgl.function
def regular_expression_gen(s):
    s += sgl.user("What is the IP address of the Google DNS servers?")
    s += sgl.assistant(sgl.gen("answer", temperature=0, max_tokens=24,
                               regex=r"((25[0-5]|2[0-4]\d|[01]?\d\d?).){3}(25[0-5]|2[0-4]\d|[01]?\d\d?)"))
    return s["answer"]


CHARACTER_REGEX = (
    r"""\{\n"""
    + r"""    "name": "[\w\d\s]{1,16}",\n"""
    + r"""    "house": "(Gryffindor|Slytherin|Ravenclaw|Hufflepuff)",\n"""
    + r"""    "blood status": "(Pure-blood|Half-blood|Muggle-born)",\n"""
    + r"""    "wand": \{\n"""
    + r"""        "wood": "[\w\d\s]{1,16}",\n"""
    + r"""        "core": "[\w\d\s]{1,16}",\n"""
    + r"""        "length": [0-9]{1,2}\.[0-9]{0,2}\n"""
    + r"""    \},\n"""
    + r"""    "alive": "(Alive|Deceased)"\n"""
    + r"""\}"""
)


@sgl.function
def character_gen(s, name):
    s += name + " is a character in Harry Potter. Please fill in the following information about this character.\n"
    s += sgl.gen("json_output", max_tokens=160, regex=CHARACTER_REGEX)
    return s["json_output"]


@sgl.function
def text_qa(s, question):
    s += sgl.system("You are a helpful assistant. Answer in one short sentence.")
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("answer", stop="\n", max_tokens=32, temperature=0))
    return s["answer"]


@sgl.function
def persona(s, description):
    s += sgl.system(description)


@sgl.function
def turn(s, message):
    s += sgl.user(message)
    s += sgl.assistant(sgl.gen("reply", max_tokens=48))
    return s["reply"]


@sgl.function
def tutor(s, topic="the Moon"):
    persona(s, "You are a concise science tutor. Answer in one sentence.")
    for q in ["What is " + topic + "?", "Why does it matter?"]:
        turn(s, q)


@sgl.function
def qa_examples(s):
    s += "Q: What is the capital of France?\nA: Paris\n\n"
    s += "Q: How many legs does a spider have?\nA: Eight\n\n"
    s += "Q: Which planet is known as the Red Planet?\nA: Mars\n\n"


@sgl.function
def ask(s, question):
    s += "Q: " + question + "\nA:"
    s += sgl.gen("answer", max_tokens=16, stop="\n", temperature=0)
    return s["answer"]


@sgl.function
def few_shot_qa(s, question):
    qa_examples(s)
    answer = ask(s, question)
    return answer


CASES = [
    ("multi_turn_question.sgl", multi_turn_question),
    ("streaming.sgl", multi_turn_stream),
    ("tip_suggestion.sgl", tip_suggestion),
    ("regex_gen.sgl", regular_expression_gen),
    ("json_regex_gen.sgl", character_gen),
    ("batch.sgl", text_qa),
    ("chat_roles.sgl", tutor),
    ("few_shot_qa.sgl", few_shot_qa),
]


@pytest.mark.parametrize("file,py", CASES, ids=[c[0] for c in CASES])
def test_sgl_and_traced_python_give_the_same_ir(file, py):
    fns = lower_program(load_program(EXAMPLES / file))
    mine = fns[py.name]
    traced = py.trace()
    assert structural_equal(mine, traced), (
        f"\n.sgl:\n{canonicalize(mine).pretty()}\n\ntraced:\n{canonicalize(traced).pretty()}")


def test_structural_equality_notices_a_difference():
    fns = lower_program(load_program(text='def text_qa(question: str) { user { question } '
                                          'assistant { gen answer(stop="\\n", max_tokens=31, temperature=0) } '
                                          'return answer }', file="x.sgl"))
    assert not structural_equal(fns["text_qa"], text_qa.trace())


def test_tool_use_branches_at_run_time():
    fn = canonicalize(lower_program(load_program(EXAMPLES / "tool_use.sgl"))["tool_use"])
    listing = fn.pretty()
    assert "Branch tool == 'calculator' | tool == 'search engine'" in listing
    assert "Select(name='tool', choices=['calculator', 'search engine'])" in listing


def test_traced_python_compiles_to_the_same_plan_and_results():
    """A Python program compiled through tracing runs like its .sgl twin (same steps, same outputs)."""
    from compiler_fakes import FakeBackend
    from sglang.compiler.executor import PlanExecutor
    from sglang.compiler.lower import compile_function, compile_source

    py_plan = compile_function(tip_suggestion)
    sgl_plan = compile_source(EXAMPLES / "tip_suggestion.sgl")
    kinds = [s.kind for s in py_plan.function(None).steps]
    assert kinds == [s.kind for s in sgl_plan.function(None).steps]
    a = PlanExecutor(py_plan, FakeBackend()).run(None, {})
    b = PlanExecutor(sgl_plan, FakeBackend()).run(None, {})
    assert a["return"] == b["return"] and a["text"] == b["text"]
