"""The .sgl grammar and parser: round-trips, positioned syntax errors, junk never crashes."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sglang.lang.sgl import nodes as A
from sglang.lang.sgl.nodes import pretty
from sglang.lang.sgl.errors import SglError, SglSyntaxError
from sglang.lang.sgl.parser import parse_expr, parse_file, parse_source

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted((ROOT / "examples").glob("*.sgl")) + sorted((ROOT / "sglang" / "stdlib").glob("*.sgl"))


def test_examples_exist():
    names = {p.name for p in PROGRAMS}
    for needed in ("quickstart.sgl", "multi_turn_question.sgl", "tool_use.sgl", "tip_suggestion.sgl", "regex_gen.sgl",
                   "json_regex_gen.sgl", "batch.sgl", "streaming.sgl", "chat_roles.sgl", "few_shot_qa.sgl",
                   "react_agent.sgl", "tree_of_thought.sgl", "json_extraction.sgl", "fewshot.sgl"):
        assert needed in names


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_round_trip(path):
    """parse -> pretty-print -> parse gives an equal AST (positions are not compared)."""
    module = parse_file(path)
    again = parse_source(pretty(module), "pretty.sgl")
    assert again == module
    assert pretty(again) == pretty(module)  # the printer is a fixed point


def test_ast_shape_of_a_small_program():
    m = parse_source('def qa(question: str, n: int = 3) { user { "Q: {question}" } '
                     'assistant { gen answer(max_tokens=64, stop="\\n") } return answer }')
    f = m.functions[0]
    assert f.name == "qa" and [p.name for p in f.params] == ["question", "n"]
    assert f.params[1].default == A.Const(3) and str(f.params[0].type) == "str"
    user, assistant, ret = f.body
    assert isinstance(user, A.Role) and user.role == "user"
    assert user.body[0].expr == A.Str(["Q: ", A.Name("question")])
    gen = assistant.body[0]
    assert isinstance(gen, A.Gen) and gen.name == "answer"
    assert [(a.name, a.value) for a in gen.args] == [("max_tokens", A.Const(64)), ("stop", A.Str(["\n"]))]
    assert ret == A.Return([A.Name("answer")])


def test_strings_escapes_raw_and_multiline():
    m = parse_source('def f() { "a{{b}}\\t" r"\\d{3}" """two\nlines {x}""" }')
    s1, s2, s3 = [s.expr for s in m.functions[0].body]
    assert s1.parts == ["a{b}\t"]
    assert s2.parts == ["\\d{3}"]  # raw: no escapes, no interpolation
    assert s3.parts == ["two\nlines ", A.Name("x")]


def test_operator_precedence():
    e = parse_expr('not a == "x" and b or c')
    assert e == A.BinOp("or", A.BinOp("and", A.UnaryOp("not", A.BinOp("==", A.Name("a"), A.Str(["x"]))),
                                      A.Name("b")), A.Name("c"))
    assert parse_expr("1 + 2 * 3") == A.BinOp("+", A.Const(1), A.BinOp("*", A.Const(2), A.Const(3)))
    assert parse_expr("t[0].x") == A.Attr(A.Index(A.Name("t"), A.Const(0)), "x")


def test_while_form():
    m = parse_source('def f() { while a != "stop" max 3 { gen a } while true { } }')
    w1, w2 = m.functions[0].body
    assert isinstance(w1, A.While) and w1.max_iters == 3 and w1.body == [A.Gen("a", [])]
    assert w2.max_iters is None and w2.cond == A.Const(True)
    assert parse_source(pretty(m)) == m
    with pytest.raises(SglSyntaxError, match="whole number >= 1"):
        parse_source("def f() { while true max 0 { } }")


def test_fork_join_for_if_forms():
    m = parse_source("def f() { fork t[2] as i { gen a } fork u { branch { gen b } branch { gen c } } "
                     "join u as concat for k in range(3) { \"{k}\" } if x { } elif y { } else { } }")
    fork_n, fork_b, join, loop, cond = m.functions[0].body
    assert isinstance(fork_n, A.ForkN) and fork_n.index_var == "i" and fork_n.count == A.Const(2)
    assert isinstance(fork_b, A.ForkBranches) and len(fork_b.branches) == 2
    assert join == A.Join("u", "concat")
    assert isinstance(loop, A.For) and loop.iter == A.Call("range", [A.Arg(None, A.Const(3))])
    assert isinstance(cond, A.If) and len(cond.arms) == 2 and cond.orelse == []


# (source, line, col, words that must appear in the message or hint)
BAD_SYNTAX = [
    ("def f() { gen(max_tokens=3) }", 1, 14, ["gen needs a variable name"]),
    ('"hello"', 1, 1, ["inside a function"]),
    ("def f():\n  x", 1, 8, ["starts with '{'"]),
    ("def f() { gen x(max_tokens=3 stop=1) }", 1, 30, ["missing ','"]),
    ('def f() {\n "a"\n', 2, 5, ["missing '}'"]),
    ('def f() { "abc\n }', 1, 11, ["unterminated string"]),
    ("def f() { gen if }", 1, 15, ["reserved word"]),
    ("def f() { fork 3 {} }", 1, 16, ["fork needs a name"]),
    ('def f() { select "a" }', 1, 18, ["select needs a variable name"]),
    ("def f() { let x = }", 1, 19, ["incomplete expression"]),
    ("def f() { else {} }", 1, 11, ["must directly follow"]),
    ('def f() {\n  "a {x" }', 2, 6, ["unclosed '{'"]),
    ('def f() { "a {3}" }', 1, 15, ["regex repetition", "raw string"]),
    ('def f() {\n  "abc {x +} "\n}', 2, 12, ["inside '{...}'"]),
    ("def f() { x = $ }", 1, 15, ["unexpected character '$'"]),
    ("def f() { join u as glue }", 1, 21, ["unknown join mode"]),
    ("def f() { 1(2) }", 1, 11, ["only functions can be called"]),
    ('def f(q: str) {\n  s += "x"\n}', 2, 6, ["there is no `s += ...`"]),
    ('def f(q) {\n  sgl.gen("x")\n}', 2, 7, ["this is the Python API"]),
    ('def f(q) {\n  if q == "a":\n}', 2, 14, ["starts with '{'"]),
]


@pytest.mark.parametrize("src,line,col,words", BAD_SYNTAX, ids=[b[0][:30] for b in BAD_SYNTAX])
def test_syntax_errors_are_positioned(src, line, col, words):
    with pytest.raises(SglSyntaxError) as info:
        parse_source(src, "bad.sgl")
    err = info.value
    assert (err.line, err.col) == (line, col), str(err)
    text = str(err)
    assert text.startswith(f"bad.sgl:{line}:{col}: syntax error")
    for w in words:
        assert w in text, text
    lines = text.splitlines()
    assert lines[2].strip() == "^" and lines[2].index("^") - 4 == col - 1  # caret under the column


def test_missing_file_is_a_clean_error(tmp_path):
    with pytest.raises(SglError, match="no such file"):
        parse_file(tmp_path / "nope.sgl")


_TOKENS = st.sampled_from(["def", "f", "(", ")", "{", "}", "gen", "x", "select", "fork", "[", "]", "2", "as", "i",
                           "branch", "join", "if", "else", "elif", "for", "in", "return", '"a {x}"', "'b'", "=",
                           ",", ".", ":", "user", "let", "+", "==", "not", "r\"\\d{2}\"", "\n", "#c\n", '"{', "}\"",
                           "import", "from", "\"\"\"", "-", "*", ";"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=30))
def test_token_junk_never_crashes(tokens):
    try:
        parse_source(" ".join(tokens), "junk.sgl")
    except SglError as e:
        assert e.line is not None and e.line >= 1
        assert "junk.sgl:" in str(e)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_text_junk_never_crashes(text):
    try:
        parse_source(text, "junk.sgl")
    except SglError:
        pass
