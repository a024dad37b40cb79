"""Tracing `@sgl.function` programs to IR: shapes, constants, errors, and equality with the `.sgl`
compiler's lowering of the same program."""
from __future__ import annotations

import pytest

import sglang as sgl
from sglang.lang.ir import (Arg, Fork, Gen, Image, IRError, IRFunction, Join, Return, RoleBegin, RoleEnd, Select,
                            Text, VarRef, structural_equal)
from sglang.lang.ir.expr import Name


def ops(fn: IRFunction) -> list:
    return [fn.op(n) for n, _ in fn.walk()]


@sgl.function
def tip_suggestion(s, topic):
    s += "Here are two tips about " + topic + ":\n"
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += f"Now, expand tip {i + 1} into a paragraph:\n"
        f += sgl.gen("detailed_tip", max_tokens=64, stop="\n\n")
    forks.join()
    s += f"Tip 1:{forks[0]['detailed_tip']}\nTip 2:{forks[1]['detailed_tip']}\n"
    s += "In summary" + sgl.gen("summary", max_tokens=32)
    return s["summary"]


def test_fork_program_traces_to_per_branch_arms_and_fork_varrefs():
    fn = tip_suggestion.trace()
    fork = next(n for n in fn.graph.nodes if isinstance(fn.op(n), Fork))
    assert fn.params == ("topic",)
    assert ops(fn) == [
        Text("Here are two tips about "), Arg("topic"), Text(":\n"), Fork(2),
        Text("Now, expand tip 1 into a paragraph:\n"), Gen("detailed_tip", max_tokens=64, stop=("\n\n",)),
        Text("Now, expand tip 2 into a paragraph:\n"), Gen("detailed_tip", max_tokens=64, stop=("\n\n",)),
        Join(fork), Text("Tip 1:"), VarRef("detailed_tip", fork, 0), Text("\nTip 2:"),
        VarRef("detailed_tip", fork, 1), Text("\nIn summary"), Gen("summary", max_tokens=32), Return(Name("summary")),
    ]
    assert len(fn.data_edges()) == 3
    assert IRFunction.from_json(fn.dumps()).dumps() == fn.dumps()
    assert fn.loc_of(fn.entry).file.endswith("test_ir_trace.py")


def test_roles_select_regex_and_image_trace():
    @sgl.function
    def prog(s, question, path):
        s += sgl.system("Be brief.")
        with s.user():
            s += sgl.image(path) + question
        s += sgl.assistant(sgl.gen("answer", regex=r"[0-9]+", max_tokens=4))
        s += "Tool: " + sgl.select("tool", choices=["calculator", "search"])

    got = ops(prog.trace())
    assert got == [RoleBegin("system"), Text("Be brief."), RoleEnd("system"), RoleBegin("user"), Image(Name("path")),
                   Arg("question"), RoleEnd("user"), RoleBegin("assistant"), Gen("answer", max_tokens=4, regex="[0-9]+"),
                   RoleEnd("assistant"), Text("Tool: "), Select("tool", ("calculator", "search"))]


def test_select_choices_from_an_argument_trace_to_an_expression():
    @sgl.function
    def pick(s, options):
        s += "Pick: " + sgl.select("c", choices=options)

    assert ops(pick.trace()) == [Text("Pick: "), Select("c", Name("options"))]
    assert ops(pick.trace(options=["a", "b"])) == [Text("Pick: "), Select("c", ("a", "b"))]

    @sgl.function
    def sized(s, n):
        s += sgl.gen("x", max_tokens=n)

    with pytest.raises(sgl.TraceError, match="max_tokens from argument 'n'"):
        sized.trace()
    assert ops(sized.trace(n=3)) == [Gen("x", max_tokens=3)]


def test_constant_arguments_fold_into_text():
    fn = tip_suggestion.trace(topic="sleep")
    assert fn.params == ()
    assert ops(fn)[0] == Text("Here are two tips about sleep:\n")
    with pytest.raises(TypeError, match="unknown argument"):
        tip_suggestion.trace(topc="x")


def test_python_control_flow_on_traced_values_is_a_clear_error():
    @sgl.function
    def branchy(s):
        s += sgl.gen("answer", max_tokens=2)
        if s["answer"] == "yes":
            s += "!"

    with pytest.raises(sgl.TraceError, match="comparison == on variable 'answer'.*\\.sgl language"):
        branchy.trace()

    @sgl.function
    def loops_on_argument(s, n):
        for _ in range(n):
            s += sgl.gen("x")

    with pytest.raises(sgl.TraceError, match="use as an integer.*argument 'n'"):
        loops_on_argument.trace()
    assert len([op for op in ops(loops_on_argument.trace(n=3)) if isinstance(op, Gen)]) == 3

    @sgl.function
    def reads_text(s):
        s += "x"
        s += s.text()

    with pytest.raises(sgl.TraceError, match="s.text\\(\\) has no value while tracing"):
        reads_text.trace()


def test_reading_an_undefined_variable_names_it_and_the_line():
    @sgl.function
    def bad(s):
        s += "x"
        s += s["missing"]

    with pytest.raises(IRError) as info:
        bad.trace()
    line = bad.func.__code__.co_firstlineno + 3
    assert "'missing'" in str(info.value) and f"test_ir_trace.py:{line}" in str(info.value)


SGL_SOURCE = '''
def tip_suggestion(topic: str) -> str {
    "Here are two tips about {topic}:\\n"
    fork forks[2] as i {
        "Now, expand tip {i + 1} into a paragraph:\\n"
        gen detailed_tip(max_tokens=64, stop="\\n\\n")
    }
    join forks
    "Tip 1:{forks[0].detailed_tip}\\nTip 2:{forks[1].detailed_tip}\\n"
    "In summary"
    gen summary(max_tokens=32)
    return summary
}

def chat(question: str) {
    system { "Be brief." }
    user { question }
    assistant { gen answer(max_tokens=16) }
    "Tool: "
    select tool(choices=["calculator", "search"])
}
'''


@sgl.function
def chat(s, question):
    s += sgl.system("Be brief.")
    s += sgl.user(question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=16))
    s += "Tool: " + sgl.gen("tool", choices=["calculator", "search"])


def test_trace_equals_sgl_lowering_of_the_same_program():
    from sglang.compiler.irgen.build import lower_program
    from sglang.compiler.loader import load_program

    lowered = lower_program(load_program(text=SGL_SOURCE, file="same.sgl"))
    assert structural_equal(tip_suggestion.trace(), lowered["tip_suggestion"])
    assert structural_equal(chat.trace(), lowered["chat"])
    assert not structural_equal(chat.trace(), lowered["tip_suggestion"])


def test_readme_quick_start_python_and_sgl_examples_compile_to_the_same_ir():
    import sys
    from pathlib import Path

    from sglang.compiler.irgen.build import lower_program
    from sglang.compiler.loader import load_program

    examples = Path(__file__).resolve().parents[1] / "examples"
    sys.path.insert(0, str(examples))
    try:
        import quick_start
    finally:
        sys.path.remove(str(examples))
    lowered = lower_program(load_program(examples / "multi_turn_question.sgl"))["multi_turn_question"]
    assert quick_start.MAX_TOKENS == 256
    assert structural_equal(quick_start.multi_turn_question.trace(), lowered)
