"""IR unit tests: building, JSON round trip, canonical equality, dot, validation errors, expressions."""
from __future__ import annotations

import json

import pytest

from sglang.lang.ir import (Arg, Branch, Fork, Gen, Interp, IRError, IRFunction, Join, Loc, Loop, Return,
                            RoleBegin, RoleEnd, Select, Text, VarRef, canonicalize, structural_equal)
from sglang.lang.ir.expr import Binary, CallExpr, Const, ListExpr, Name, Unary, eval_expr, expr_from_json, expr_to_json, expr_to_str


def tip_program(split_text: bool = False, shared: bool = False) -> IRFunction:
    fn = IRFunction("tip", ("topic",), loc=Loc("tip.py", 1, 0))
    c = fn.cursor()
    if split_text:
        c.append(Text("Tips "), Loc("tip.py", 2, 4))
        c.append(Text(""))
        c.append(Interp(Const("about ")))
    else:
        c.append(Text("Tips about "), Loc("tip.py", 2, 4))
    c.append(Interp(Name("topic")) if split_text else Arg("topic"))
    if shared:
        f = c.append(Fork(2, shared_body=True, index_var="i"))
        fc = c.arm_cursor(f, 0)
        fc.append(Text("tip "))
        fc.append(Interp(Binary("+", Name("i"), Const(1))))
        fc.append(Gen("tip", max_tokens=8, stop=("\n",)))
    else:
        f = c.append(Fork(2))
        for b in range(2):
            fc = c.arm_cursor(f, b)
            fc.append(Text(f"tip {b + 1}"))
            fc.append(Gen("tip", max_tokens=8, stop=("\n",)))
    c.append(Join(f))
    c.append(VarRef("tip", fork=f, branch=0))
    c.append(VarRef("tip", fork=f, branch=1))
    c.append(RoleBegin("user"))
    c.append(Select("ok", ("yes", "no")))
    c.append(RoleEnd("user"))
    br = c.append(Branch((Binary("==", Name("ok"), Const("yes")), None)))
    c.arm_cursor(br, 0).append(Gen("more", temperature=0.0))
    c.arm_cursor(br, 1).append(Text("done"))
    c.append(Return(Name("ok")))
    return fn.check()


def test_json_round_trip_is_stable_and_keeps_locations():
    fn = tip_program()
    text = fn.dumps()
    back = IRFunction.from_json(text)
    assert back.dumps() == text
    assert back.loc_of(fn.entry) == Loc("tip.py", 2, 4)
    assert back.data_edges() == fn.data_edges()
    assert json.loads(text)["format"] == "sglang-ir/1"


def test_data_edges_link_defs_to_uses():
    fn = tip_program()
    by_op = {type(fn.op(n)).__name__ + str(getattr(fn.op(n), "branch", "")): n for n in fn.graph.nodes}
    edges = fn.data_edges()
    gens = [n for n in fn.graph.nodes if isinstance(fn.op(n), Gen) and fn.op(n).name == "tip"]
    refs = [n for n in fn.graph.nodes if isinstance(fn.op(n), VarRef)]
    assert sorted(edges)[:2] == sorted(zip(sorted(gens), sorted(refs)))
    select = next(n for n in fn.graph.nodes if isinstance(fn.op(n), Select))
    assert (select, by_op["Branch"]) in edges and (select, by_op["Return"]) in edges


def test_structural_equality_ignores_locations_and_canonicalizes():
    a = tip_program()
    b = tip_program(split_text=True)
    c = tip_program(shared=True)
    assert structural_equal(a, b)
    assert structural_equal(a, c)
    canon = canonicalize(c)
    texts = [canon.op(n).value for n in canon.graph.nodes if isinstance(canon.op(n), Text)]
    assert "tip 2" in texts and "Tips about " in texts
    # a real difference is seen
    d = tip_program()
    gen = next(n for n in d.graph.nodes if isinstance(d.op(n), Gen))
    d.graph.nodes[gen]["op"] = Gen("tip", max_tokens=9, stop=("\n",))
    assert not structural_equal(a, d)


def test_canonical_form_folds_constant_expressions_and_merges_text():
    fn = IRFunction("f", ("x",))
    cur = fn.cursor()
    cur.append(Text("a"))
    cur.append(Interp(Binary("+", Const(1), Const(2))))
    cur.append(Text("b"))
    cur.append(Interp(CallExpr("upper", (Const("c"),))))
    cur.append(Arg("x"))
    cur.append(Select("s", ListExpr((Const("p"), Const("q")))))
    canon = canonicalize(fn.check())
    assert [canon.op(n) for n, _ in canon.walk()] == [Text("a3bC"), Arg("x"), Select("s", Const(("p", "q")))]


def test_canonical_ids_are_preorder():
    fn = canonicalize(tip_program(shared=True))
    assert [n for n, _ in fn.walk()] == list(range(len(fn)))


def test_dot_lists_every_node_and_edge_kind():
    fn = tip_program()
    dot = fn.to_dot()
    assert dot.startswith('digraph "tip"')
    for n in fn.graph.nodes:
        assert f"  n{n} [label=" in dot
    assert "style=dashed" in dot and "color=blue" in dot


def _err(build) -> str:
    fn = IRFunction("prog", ("q",))
    build(fn.cursor())
    with pytest.raises(IRError) as info:
        fn.check()
    return str(info.value)


def test_undefined_variable_names_variable_node_and_location():
    msg = _err(lambda c: (c.append(Text("a")), c.append(VarRef("answer"), Loc("p.sgl", 4, 7))))
    assert "p.sgl:4:7" in msg and "'answer'" in msg and "prog" in msg and "node 1" in msg


def test_other_validation_errors():
    assert "not a parameter" in _err(lambda c: c.append(Arg("x")))
    assert "begins inside" in _err(lambda c: (c.append(RoleBegin("user")), c.append(RoleBegin("assistant"))))
    assert "never ended" in _err(lambda c: c.append(RoleBegin("user")))
    assert "ends but" in _err(lambda c: c.append(RoleEnd("user")))
    assert "role must be" in _err(lambda c: (c.append(RoleBegin("robot")), c.append(RoleEnd("robot"))))
    assert "top_p" in _err(lambda c: c.append(Gen("x", top_p=1.5)))
    assert "json_schema" in _err(lambda c: c.append(Gen("x", json_schema="{oops")))
    assert "at most one" in _err(lambda c: c.append(Gen("x", regex="a", dtype="int")))
    assert "choices_method" in _err(lambda c: c.append(Select("x", ("a",), choices_method="vote")))
    assert "non-empty" in _err(lambda c: c.append(Select("x", ())))
    assert "unreachable" in _err(lambda c: (c.append(Return()), c.append(Text("x"))))
    assert "has not run" in _err(lambda c: c.append(Join(99)))
    assert "unknown function" in _err(lambda c: c.append(Interp(CallExpr("exec", (Const("1"),)))))

    def fork_missing(c):
        f = c.append(Fork(2))
        c.arm_cursor(f, 0).append(Gen("a"))
        c.append(VarRef("a", fork=f, branch=1))

    assert "not defined by branch 1" in _err(fork_missing)


def test_branch_defs_are_may_defs_and_loop_vars_are_scoped():
    fn = IRFunction("p", ("items",))
    c = fn.cursor()
    loop = c.append(Loop(var="it", iterable=Name("items")))
    lc = c.arm_cursor(loop, 0)
    lc.append(Interp(Name("it")))
    lc.append(Gen("g"))
    c.append(VarRef("g"))
    fn.check()
    assert len(fn.data_edges()) == 1
    bad = IRFunction("p", ())
    c = bad.cursor()
    loop = c.append(Loop(cond=Const(True), max_iters=3))
    c.append(Interp(Name("it")))
    with pytest.raises(IRError, match="'it'"):
        bad.check()


def test_from_json_rejects_unknown_ops_and_fields():
    doc = tip_program().to_json()
    doc["nodes"][0] = {"id": 0, "op": "Teleport"}
    with pytest.raises(ValueError, match="Teleport"):
        IRFunction.from_json(doc)
    doc = tip_program().to_json()
    doc["nodes"][0]["colour"] = 1
    with pytest.raises(ValueError, match="colour"):
        IRFunction.from_json(doc)


def test_gen_sampling_params_use_native_names():
    g = Gen("x", max_tokens=5, stop=("a", "b"), temperature=0.0, regex="[0-9]+")
    assert g.sampling_params() == {"max_new_tokens": 5, "stop": ["a", "b"], "temperature": 0.0, "regex": "[0-9]+"}


def test_expressions_eval_print_and_round_trip():
    e = Binary("and", Binary("in", Const("y"), CallExpr("lower", (Name("a"),))),
               Unary("not", Binary("==", Name("n"), Const(3))))
    assert eval_expr(e, {"a": "YES", "n": 2}) is True
    assert eval_expr(e, {"a": "no", "n": 2}) is False
    assert expr_to_str(e) == "'y' in lower(a) and not n == 3"
    assert expr_to_str(Binary("*", Binary("+", Name("a"), Const(1)), Const(2))) == "(a + 1) * 2"
    assert expr_from_json(json.loads(json.dumps(expr_to_json(e)))) == e
    assert eval_expr(ListExpr((Const(1), Name("x"))), {"x": 2}) == [1, 2]
    with pytest.raises(NameError, match="'zz'"):
        eval_expr(Name("zz"), {})


# ---------------------------------------------------------------- properties over random programs
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_texts = st.sampled_from(["", "a", "b ", "\n", "{x}"])


@st.composite
def programs(draw):
    fn = IRFunction("rand", ("q",))
    counter = [0]

    def fill(cur, depth, defined):
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["text", "text", "arg", "gen", "ref", "interp", "branch", "fork"]
                                        if depth < 2 else ["text", "arg", "gen", "ref"]))
            if kind == "text":
                cur.append(Text(draw(_texts)))
            elif kind == "arg":
                cur.append(Arg("q"))
            elif kind == "interp":
                cur.append(Interp(draw(st.sampled_from([Const("c"), Const(3), Name("q")]))))
            elif kind == "gen":
                counter[0] += 1
                name = f"v{counter[0]}"
                cur.append(Gen(name, max_tokens=draw(st.integers(1, 4))))
                defined.append(name)
            elif kind == "ref" and defined:
                cur.append(VarRef(draw(st.sampled_from(defined))))
            elif kind == "branch":
                node = cur.append(Branch((Binary("==", Name("q"), Const("y")), None)))
                for arm in range(2):
                    fill(cur.arm_cursor(node, arm), depth + 1, list(defined))
            elif kind == "fork":
                node = cur.append(Fork(2))
                for arm in range(2):
                    fill(cur.arm_cursor(node, arm), depth + 1, list(defined))

    fill(fn.cursor(), 0, [])
    return fn.check()


@settings(max_examples=60, deadline=None)
@given(programs())
def test_random_programs_round_trip_and_canonicalize_idempotently(fn):
    text = fn.dumps()
    assert IRFunction.from_json(text).dumps() == text
    canon = canonicalize(fn)
    assert canonicalize(canon).dumps() == canon.dumps()
    assert structural_equal(fn, canon)
    # canonical form: no empty Text, no two Texts in a row, no Interp of a constant
    for n, _ in canon.walk():
        op, nxt = canon.op(n), canon.next(n)
        assert not (isinstance(op, Text) and op.value == "")
        assert not (isinstance(op, Text) and nxt is not None and isinstance(canon.op(nxt), Text))
        assert not (isinstance(op, Interp) and isinstance(op.expr, Const))
    assert len(canon.data_edges()) == len([n for n in fn.graph.nodes if isinstance(fn.op(n), VarRef)])
