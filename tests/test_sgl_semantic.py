"""Semantic errors of .sgl programs: each bad program gives its message at its position."""
from __future__ import annotations

import pytest

from sglang.compiler.irgen.build import lower_program
from sglang.compiler.loader import load_program
from sglang.compiler.lower import compile_source
from sglang.lang.sgl.errors import SglSemanticError


def lower(src: str, file: str = "prog.sgl"):
    return lower_program(load_program(text=src, file=file))


# (source, line, col, expected words)
BAD = [
    ('def f() {\n  "{nope}"\n}', 2, 5, "undefined variable 'nope'"),
    ('def f(question: str) {\n  "{questoin}"\n}', 2, 5, "did you mean 'question'"),
    ('def f() {\n  "{a}"\n  gen a\n}', 2, 5, "used before it is generated (gen at line 3)"),
    ('def f(c: bool) {\n  if c { gen a }\n  "{a}"\n}', 3, 5, "may not be generated here"),
    ("def f(x: str, x: int) { }", 1, 15, "duplicate parameter 'x'"),
    ("def f() { }\ndef f() { }", 2, 1, "duplicate name 'f'"),
    ("def f(x: str) { gen x }", 1, 17, "cannot generate into a parameter"),
    ("def f() { gen a(max_tokns=3) }", 1, 17, "unknown gen parameter 'max_tokns'"),
    ("def f() { gen a(max_tokens=3) }", None, None, None),  # fine
    ('def f() { gen a(max_tokens="many") }', 1, 17, "must be an int"),
    ("def f() { gen a(temperature=-1) }", 1, 11, "temperature must be >= 0"),
    ('def f() { gen a(regex="(") }', 1, 11, "bad regex"),
    ('def f() { gen a(regex="a", dtype=int) }', 1, 11, "at most one of regex"),
    ("def f() { select a(choices=[]) }", 1, 11, "at least one choice"),
    ("def f() { select a(max_tokens=3) }", 1, 20, "unknown select parameter"),
    ("def g(n: int) { }\ndef f() { g(\"x\") }", 2, 13, "argument 'n' of g() must be int"),
    ("def g(n: int) { }\ndef f() { g() }", 2, 11, "missing argument 'n'"),
    ("def g() { }\ndef f() { g(1) }", 2, 11, "takes 0 argument(s)"),
    ("def g(n: int) { }\ndef f() { g(m=1) }", 2, 13, "has no parameter 'm'"),
    ('def f(x: int = "a") { }', 1, 16, "must be int"),
    ("def f(x: strng) { }", 1, 10, "did you mean 'str'"),
    ("def f() { user { assistant { } } }", 1, 18, "roles do not nest"),
    ("def f() { return 1\n \"x\" }", 1, 11, "return must be the last statement"),
    ("def f() { fork t[2] { gen a }\n \"{t[2].a}\" }", 2, 6, "index 2 is out of range"),
    ("def f() { fork t[2] { gen a }\n \"{t[0].b}\" }", 2, 4, "does not generate 'b'"),
    ("def f() { fork t[2] { gen a }\n \"{t}\" }", 2, 4, "is a fork"),
    ("def f() { join nope }", 1, 11, "unknown fork 'nope'"),
    ('def f() { "{zz(1)}" }', 1, 13, "unknown function 'zz'"),
    ("def f() { f() }", 1, 11, "recursive call"),
    ('import "missing.sgl"\ndef f() { }', 1, 1, "cannot find module"),
    ("def f() { gen a\n let a = 1 }", 2, 2, "already a generated variable"),
    ("def f() { let x = {\"a\": 1} }", 1, 19, "a dict is allowed only"),
    ("def f(n: int) { fork t[n] { gen a }\n \"{t[n].a}\" }", 2, 6, "branch index must be a constant"),
    ("def f() {\n  let x = True\n}", 2, 11, "write 'true' (lower case)"),
    ('def f(c: bool) {\n  while c { gen a }\n  "{a}"\n}', 3, 5, "may not be generated here"),
    ("def f(n: int) {\n  gen a(max_tokens=n)\n}", 2, 20, "'n' is an argument of the program"),
    ('def f() {\n  f"x"\n}', 2, 3, "is Python syntax"),
]


@pytest.mark.parametrize("src,line,col,words", BAD, ids=[b[0][:40] for b in BAD])
def test_semantic_errors(src, line, col, words):
    if words is None:
        lower(src)
        return
    with pytest.raises(SglSemanticError) as info:
        compile_source(text=src, file="prog.sgl")  # lowering + passes: everything `sglc check` runs
    err = info.value
    assert words in str(err), str(err)
    assert (err.line, err.col) == (line, col), str(err)
    assert str(err).startswith(f"prog.sgl:{line}:{col}: error:")


def test_conditionally_generated_variable_may_be_returned():
    fns = lower('def f(c: bool) {\n if c { gen a }\n return a\n}')
    assert "Return" in fns["f"].pretty()


def test_let_alias_detects_regeneration():
    src = 'def f() {\n for i in [1, 2] { gen a\n let b = a\n gen a\n "{b}" } }'
    with pytest.raises(SglSemanticError, match="generated again"):
        lower(src)


def test_imports_resolve_stdlib_and_relative_files(tmp_path):
    (tmp_path / "helpers.sgl").write_text('def greet(name: str) { "Hello, {name}!" }\n')
    main = tmp_path / "main.sgl"
    main.write_text('import "helpers.sgl" as h\nfrom fewshot import ask\n'
                    'def main(q: str) { h.greet(q) let a = ask(q) return a }\n')
    fn = lower_program(load_program(main))["main"]
    text = fn.pretty()
    assert "Text 'Hello, '" in text and "Gen(name='answer'" in text


def test_import_cycle_is_reported(tmp_path):
    (tmp_path / "a.sgl").write_text('import b\ndef fa() { }\n')
    (tmp_path / "b.sgl").write_text('import a\ndef fb() { }\n')
    with pytest.raises(SglSemanticError, match="import cycle"):
        load_program(tmp_path / "a.sgl")


def test_gen_with_choices_is_a_select():
    fn = lower('def f() { gen c(choices=["a", "b"], choices_method="greedy_token_selection") }')["f"]
    assert "Select(name='c', choices=['a', 'b'], choices_method='greedy_token_selection')" in fn.pretty()
    with pytest.raises(SglSemanticError, match="choices_method needs choices"):
        lower('def f() { gen c(choices_method="greedy_token_selection") }')
