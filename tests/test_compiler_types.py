"""The IR type checker (`lang.ir.types`): ill-typed programs fail at compile time with file:line:col and a
caret; a declared return type is enforced (and a typed gen's text converted to it); run-time errors name
their source line instead of an IR repr."""
from __future__ import annotations

import pytest

from compiler_fakes import FakeBackend
from sglang.compiler import cli
from sglang.compiler.executor import PlanExecutor
from sglang.compiler.lower import compile_ir, compile_source
from sglang.lang import ir
from sglang.lang.ir import types as T
from sglang.lang.sgl.errors import SglSemanticError


def compile_text(src: str):
    return compile_source(text=src, file="p.sgl")


def error_of(src: str) -> SglSemanticError:
    with pytest.raises(SglSemanticError) as info:
        compile_text(src)
    return info.value


# (source, line, col, words)
BAD = [
    ("def f(q: str, k: int) {\n  let y = q + k\n}", 2, 13, "cannot add str and int"),
    ("def f(q: str, k: int) {\n  q + k\n}", 2, 5, "cannot add str and int"),
    ("def f(k: int) {\n  if k < \"3\" { \"x\" }\n}", 2, 8, "cannot compare int with str"),
    ("def f() {\n  gen n(max_tokens=2)\n  if n == 3 { \"x\" }\n}", 3, 8, "always false"),
    ('def f() {\n  select v(choices=["yes", "no"])\n  if v == "maybe" { "x" }\n}', 3, 8, "'maybe' is not one of"),
    ("def f(x: float) {\n  for i in x { \"a\" }\n}", 2, 3, "cannot loop over a float"),
    ("def f(k: int, q: str) {\n  if k in q { \"x\" }\n}", 2, 8, "looks for a str inside a str"),
    ("def f(n: str) {\n  fork t[n] { gen a }\n}", 2, 3, "fork count must be an int"),
    ("def f(k: int) {\n  \"{k.upper()}\"\n}", 2, 5, "upper() takes a str"),
    ("def f(k: int) {\n  \"{len(k)}\"\n}", 2, 5, "len() takes a seq"),
    ("def f() -> int {\n  gen n(max_tokens=3)\n  return n\n}", 3, 3, "declares -> int but returns generated text"),
    ("def f(s: str) -> int {\n  return s\n}", 2, 3, "declares -> int but returns"),
    ("def f() -> str {\n  \"x\"\n}", 1, 1, "never returns a value"),
    ("def f(b: bool) -> int {\n  gen n(dtype=int)\n  return {\"n\": n}\n}", 3, 3, "declares -> int but returns dict"),
    ("def g(n: int) {\n  \"{n}\"\n}\ndef f() {\n  gen x(max_tokens=2)\n  g(x)\n}", 6, 5,
     "argument 'n' of g() must be int, but it is str"),
]


@pytest.mark.parametrize("src,line,col,words", BAD, ids=[b[3] for b in BAD])
def test_ill_typed_programs_fail_at_their_position(src, line, col, words):
    e = error_of(src)
    assert words in e.message and (e.line, e.col) == (line, col), str(e)
    report = str(e).splitlines()
    assert report[0].startswith(f"p.sgl:{line}:{col}: error:")
    assert report[2] == "    " + " " * (col - 1) + "^"  # the caret sits under the column


def test_the_hint_says_how_to_convert():
    e = error_of("def f(q: str) {\n  gen n(dtype=int)\n  let y = n + 1\n}")
    assert "cannot add str and int" in e.message and "dtype=int" in e.hint and "int(...)" in e.hint


WELL_TYPED = [
    "def f(q: str, k: int) { let y = q + str(k)\n \"{y}\" }",
    "def f() { gen n(dtype=int)\n \"{int(n) + 1}\" }",
    'def f() { select v(choices=["yes", "no"])\n if v == "yes" { "ok" } }',
    "def f(k: int, x: float) { \"{k * 2 + x / 3}\" }",
    'def f(xs: list) { for x in xs { "{x}" } }',
    "def f(q: str) { \"{q * 2}{len(q)}{q[0]}\" }",
    'def f() -> int { gen n(dtype=int)\n return n }',
    'def f() -> float { gen n(dtype=int)\n return n }',
    'def f(c: bool) { if c { select v(choices=["a"]) } else { select v(choices=["b"]) }\n if v == "b" { "x" } }',
    "def f(a) { \"{a + 1}{a + 'x'}\" }",  # untyped parameters are `any`
]


@pytest.mark.parametrize("src", WELL_TYPED)
def test_well_typed_programs_compile(src):
    compile_text(src)


def test_a_declared_int_return_gives_the_number_the_typed_gen_spelled():
    plan = compile_text('def f() -> int { "n=" gen n(dtype=int)\n return n }')
    out = PlanExecutor(plan, FakeBackend()).run(None, {})
    assert out["return"] == 42 and out["variables"]["n"] == "42"  # the variable keeps its text
    assert plan.function(None).returns["type"] == "int"


def test_traced_or_hand_built_ir_is_checked_at_its_node():
    fn = ir.IRFunction("g", ("q", "k"), loc=ir.Loc("g.py", 1, 1))
    fn.attrs["param_types"] = {"q": "str", "k": "int"}
    fn.cursor().append(ir.Interp(ir.Binary("+", ir.Name("q"), ir.Name("k"))), ir.Loc("g.py", 7, 5))
    with pytest.raises(ir.IRError) as info:
        T.check_types(fn)
    assert info.value.loc == ir.Loc("g.py", 7, 5) and "cannot add str and int ('+') in `q + k`" in str(info.value)
    with pytest.raises(SglSemanticError, match="cannot add str and int"):
        compile_ir({"g": fn}, [])


def test_expression_rules():
    assert T.binary_type("+", T.INT, T.FLOAT) == T.FLOAT
    assert T.binary_type("/", T.INT, T.INT) == T.FLOAT
    assert T.binary_type("*", T.STR, T.INT) == T.STR
    assert T.binary_type("in", T.STR, T.LIST) == T.BOOL
    assert T.binary_type("+", T.ANY, T.INT) == T.ANY
    assert T.join(T.Ty("str", values=("a",)), T.Ty("str", values=("b",))) == T.Ty("str", values=("a", "b"))
    with pytest.raises(T.TypeMismatch, match="cannot subtract str and str"):
        T.binary_type("-", T.STR, T.STR)
    with pytest.raises(T.TypeMismatch):
        T.unary_type("-", T.STR)
    assert T.coerce_return(" 42", "int") == 42 and T.coerce_return("true", "bool") is True
    with pytest.raises(ValueError, match="not a int"):
        T.coerce_return("many", "int")


def test_sglc_check_prints_the_caret_and_exits_1(tmp_path, capsys):
    src = tmp_path / "bad.sgl"
    src.write_text("def f(q: str, k: int) {\n    let y = q + k\n}\n")
    assert cli.main(["check", str(src)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{src}:2:15: error: cannot add str and int ('+')"
    assert err[1].strip() == "let y = q + k" and err[2] == "    " + " " * 14 + "^"


def test_run_time_errors_name_the_source_line_not_the_ir(tmp_path):
    src = tmp_path / "p.sgl"
    src.write_text('def f(k: str) {\n  gen x(max_tokens=2)\n  "{int(k) + 1}"\n}\n')
    plan = compile_source(src)
    out = PlanExecutor(plan, FakeBackend()).run_batch(None, [{"k": "1"}, {"k": "oops"}])
    assert out[0]["text"].endswith("2") and "error" not in out[0]
    err = out[1]["error"]
    assert err.startswith(f"{src}:3:3: runtime error: cannot evaluate `int(k) + 1`")
    assert '"{int(k) + 1}"' in err and "\n    " + "  ^" in err  # the source line, then the caret
    assert "Binary(" not in err and "Name(" not in err


def test_run_time_error_without_the_source_file_still_names_the_position():
    plan = compile_text('def f(k: str) {\n  "{int(k)}"\n}')  # p.sgl does not exist on disk
    out = PlanExecutor(plan, FakeBackend()).run(None, {"k": "x"})
    assert out["error"].startswith("p.sgl:2:3: runtime error: cannot evaluate `int(k)`")


def test_step_locations_read_back_as_positions(tmp_path):
    from sglang.lang.sgl.errors import pos_of_loc

    src = tmp_path / "m.py"
    src.write_text("line one\n    line two\n")
    assert pos_of_loc(f"{src}:2:5") == pos_of_loc(f"{src}:2:5") and pos_of_loc(f"{src}:2:5").source_line == "    line two"
    assert (pos_of_loc(f"{src}:1").line, pos_of_loc(f"{src}:1").col) == (1, 1)  # traced ops carry no column
    assert pos_of_loc(f"{tmp_path}/gone.sgl:3:2").source_line == ""  # no file: position only, no caret
    assert pos_of_loc("<string>") is None and pos_of_loc(None) is None


def test_loading_an_artifact_type_checks_its_ir(tmp_path):
    import json

    from sglang.compiler.artifact import load_artifact
    from sglang.compiler.plan import PlanError

    plan = compile_text('def f(q: str, k: int) {\n  "{q + str(k)}"\n}')
    path = tmp_path / "p.sglc"
    plan.save(path)
    assert load_artifact(path).function("f").params == ["q", "k"]
    data = json.loads(path.read_text())
    for node in data["ir"]["f"]["nodes"]:  # edited by hand: q + k
        if node["op"] == "Interp":
            node["expr"]["right"] = {"expr": "Name", "name": "k"}
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=r"p.sgl:2:3: cannot add str and int"):
        load_artifact(path)
