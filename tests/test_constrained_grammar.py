"""Lark / GBNF grammars → regex: every generated sample parses with Lark itself; errors are clear."""
from __future__ import annotations

import random
import re

import pytest
from constrained_helpers import random_match
from lark import Lark

from sglang.runtime.constrained import GrammarError, build_constraint_from_sampling_params, regex_to_dfa
from sglang.runtime.constrained.grammar import grammar_info, grammar_to_regex

GREETING = r'''
start: greeting " " name "!"
greeting: "hello" | "hi"
name: /[A-Z][a-z]+/
'''

CSV_ROW = r'''
start: item ("," item)*
item: NUMBER | WORD
NUMBER: /-?[0-9]+/
WORD: /[a-z]+/
'''

NESTED = r'''
start: value
?value: list | NUMBER | "true" | "false" | ESCAPED_STRING
list: "[" [value ("," value)*] "]"
NUMBER: /[0-9]+/
%import common.ESCAPED_STRING
%import common.WS
%ignore WS
'''

ARITH = r'''
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
'''


def _samples(grammar: str, n: int = 30, **kw) -> list[str]:
    dfa = regex_to_dfa(grammar_to_regex(grammar, **kw))
    rng = random.Random(0)
    return [random_match(dfa, rng, soft_len=30).decode() for _ in range(n)]


@pytest.mark.parametrize("grammar", [GREETING, CSV_ROW, NESTED, ARITH])
def test_every_sample_parses_with_lark(grammar) -> None:
    parser = Lark(grammar, parser="earley")
    for s in _samples(grammar):
        parser.parse(s)  # raises on a string outside the grammar


def test_regular_grammar_is_exact() -> None:
    rx = grammar_to_regex(GREETING)
    assert re.fullmatch(rx, "hello Harry!") and re.fullmatch(rx, "hi Ron!")
    assert not re.fullmatch(rx, "hey Harry!") and not re.fullmatch(rx, "hello harry!")
    rx = grammar_to_regex(CSV_ROW)
    assert re.fullmatch(rx, "1,abc,-2," + ",".join(["7"] * 50))  # repetition is unbounded
    assert not re.fullmatch(rx, "1,,2") and not re.fullmatch(rx, ",1")
    assert grammar_info(CSV_ROW)["unrolled"] == []


def test_recursion_is_unrolled_to_a_reported_depth() -> None:
    info = grammar_info(NESTED, max_depth=3)
    assert "value" in info["unrolled"] or "list" in info["unrolled"]
    rx = info["regex"]
    assert re.fullmatch(rx, '[1, [2, "a\\"b"], true]')
    assert re.fullmatch(rx, "[[1]]") and not re.fullmatch(rx, "[[[[[1]]]]]")  # deeper than the limit
    assert not re.fullmatch(rx, "[1,]")
    assert re.fullmatch(grammar_to_regex(ARITH), "(1+2)*3-4/5")


def test_gbnf_syntax() -> None:
    rx = grammar_to_regex('root ::= answer " " num\nanswer ::= "yes" | "no"\nnum ::= [0-9] [0-9]?')
    assert re.fullmatch(rx, "yes 42") and re.fullmatch(rx, "no 7")
    assert not re.fullmatch(rx, "maybe 1") and not re.fullmatch(rx, "yes 123")


@pytest.mark.parametrize("bad", ["start: (", "start: foo", "", 'start: /a(?=b)/'])
def test_bad_grammar_is_a_clear_error(bad) -> None:
    with pytest.raises(GrammarError) as ei:
        grammar_to_regex(bad)
    assert isinstance(ei.value, ValueError) and str(ei.value)


def test_ebnf_sampling_param() -> None:
    spec = build_constraint_from_sampling_params({"ebnf": GREETING})
    assert spec.kind == "ebnf" and re.fullmatch(spec.regex, "hi Ann!")
    spec = build_constraint_from_sampling_params({"grammar": 'root ::= "a" | "b"'})
    assert re.fullmatch(spec.regex, "b")
    with pytest.raises(GrammarError, match="sampling_params.ebnf"):
        build_constraint_from_sampling_params({"ebnf": "start: ("})
