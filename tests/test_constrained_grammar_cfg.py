"""Exact context-free grammar engine (cfg.py / cfg_state.py): recognizer agrees with lark, masks are exact
(every allowed token keeps a viable prefix, every other token kills it), nesting deeper than the regex
path's unrolling is generatable, and an end-to-end `ebnf` request through the shared Engine."""
from __future__ import annotations

import json
import random
import re
import time

import numpy as np
import pytest
import torch
from constrained_helpers import smol_tokenizer, smol_vocab
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark
from lark.exceptions import LarkError

from sglang.runtime.constrained import GrammarError, build_constraint_from_sampling_params
from sglang.runtime.constrained.cfg import Recognizer, compile_cfg, matches
from sglang.runtime.constrained.cfg_state import CFGConstraintState, CFGIndex, cfg_index
from sglang.runtime.constrained.grammar import grammar_to_regex
from sglang.runtime.constrained.vocab import TokenVocab

JSON_GRAMMAR = r'''
start: value
?value: object | array | string | SIGNED_NUMBER | "true" | "false" | "null"
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: string ":" value
string: ESCAPED_STRING
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
'''

ARITH = r'''
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")" | "-" factor
NUMBER: /[0-9]+(\.[0-9]+)?/
'''

ARITH_GBNF = r'''
root ::= expr
expr ::= term (("+" | "-") term)*
term ::= "(" expr ")" | [0-9]+
'''


def _lark(src: str) -> Lark:
    return Lark(src, parser="earley", lexer="dynamic_complete")


def _lark_accepts(parser: Lark, text: str) -> bool:
    try:
        parser.parse(text)
        return True
    except LarkError:
        return False


@pytest.fixture(scope="module")
def gj():
    return compile_cfg(JSON_GRAMMAR), _lark(JSON_GRAMMAR)


@pytest.fixture(scope="module")
def ga():
    return compile_cfg(ARITH), _lark(ARITH)


def _prefix_states(g, data: bytes) -> list[bool]:
    rec = Recognizer(g)
    out = []
    for b in data:
        rec.feed(bytes([b]))
        out.append(rec.alive)
    return out


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=4), kids, max_size=3),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_json_values, indent=st.sampled_from([None, 1]), cut=st.integers(0, 400),
       edit=st.sampled_from(["none", "delete", "insert"]), ch=st.sampled_from(list('[]{},:" 1e.-\\a')))
def test_json_recognizer_agrees_with_lark(gj, value, indent, cut, edit, ch) -> None:
    g, parser = gj
    text = json.dumps(value, indent=indent)
    if edit == "delete" and text:
        text = text[:cut % len(text)] + text[cut % len(text) + 1:]
    elif edit == "insert":
        text = text[:cut % (len(text) + 1)] + ch + text[cut % (len(text) + 1):]
    alive, complete = matches(g, text.encode())
    assert complete == _lark_accepts(parser, text), text
    states = _prefix_states(g, text.encode())
    assert all(a >= b for a, b in zip(states, states[1:])), "a dead prefix came back to life"
    if complete:
        assert all(states)  # every prefix of a sentence is viable
    if not alive:  # dead: no completion exists; spot-check a few closers
        for tail in ("]", "}", '"', "]]]", "}]}", '"}'):
            assert not _lark_accepts(parser, text + tail)


@settings(max_examples=150, deadline=None)
@given(text=st.text(st.sampled_from(list("0123456789+-*/().")), max_size=18))
def test_arith_recognizer_agrees_with_lark(ga, text) -> None:
    g, parser = ga
    alive, complete = matches(g, text.encode())
    assert complete == _lark_accepts(parser, text), text
    if complete:
        assert all(_prefix_states(g, text.encode()))
    if alive and not complete:  # a viable prefix really has a completion; a short closer usually does it
        assert any(_lark_accepts(parser, text + t) for t in ("", "1", ")", "1)", "))", "1))", ")))", "1)))",
                                                             "0" + ")" * 9, "1" + ")" * 12, ")" * 12)) or \
            text.count("(") - text.count(")") > 12


def test_deep_arith_parses_where_regex_path_cannot(ga) -> None:
    g, parser = ga
    deep = "(" * 10 + "1+2" + ")" * 10 + "*3"
    assert matches(g, deep.encode()) == (True, True) and _lark_accepts(parser, deep)
    assert not re.fullmatch(grammar_to_regex(ARITH), deep)  # the regex path is cut at depth 3


def test_gbnf_grammar(ga) -> None:
    g = compile_cfg(ARITH_GBNF)
    assert matches(g, b"((((((12+3))))))-4") == (True, True)
    assert matches(g, b"(((1") == (True, False)
    assert matches(g, b"1)")[0] is False


@pytest.mark.parametrize("bad, what", [
    ("start: (", "invalid grammar"),
    ("start: a\na: \"x\" a", "derives no finite string"),
    ("start: X\nX: /(?<=a)b/", "terminal X"),
    ("", "non-empty"),
])
def test_bad_grammar_is_a_clear_error(bad, what) -> None:
    with pytest.raises(GrammarError, match=what):
        compile_cfg(bad)


def test_dispatch_regular_vs_recursive() -> None:
    spec = build_constraint_from_sampling_params({"ebnf": ARITH})
    assert spec.kind == "ebnf" and spec.grammar == ARITH  # not regular: the CFG engine runs it
    assert build_constraint_from_sampling_params({"ebnf": ARITH_GBNF}).grammar == ARITH_GBNF
    flat = build_constraint_from_sampling_params({"ebnf": 'start: "a" ("," "a")*'})
    assert flat.grammar is None and re.fullmatch(flat.regex, "a,a")  # regular: the fast regex path
    with pytest.raises(GrammarError, match=r"sampling_params.grammar: invalid grammar.*line 1 column 9"):
        build_constraint_from_sampling_params({"grammar": "start: ("})


# ----- masks -----

def _toy_vocab() -> TokenVocab:
    toks = [bytes([c]) for c in b'[]{},:" 0123456789.-+*/()abe\\n\n'] + [
        b"[[", b"]]", b"],", b'["', b'"]', b'":', b'", "', b"12", b"true", b"null", b"nul", b" [", b"((", b"))",
        b")*", b"1+", b'\\"', b"ab", b"}]", b'{"', b'"a"', b"e+", b"1.5"]
    return TokenVocab.from_tokens([b"<eos>"] + toks, eos_token_ids=[0])


@pytest.mark.parametrize("src, text", [(JSON_GRAMMAR, '[[{"a\\"b": [1.5e+2, null, "x"]}, [], {}], -3]'),
                                       (ARITH, "((1+2)*-(3/4))-5.5")], ids=["json", "arith"])
def test_mask_is_exact_on_a_toy_vocab(src, text) -> None:
    vocab = _toy_vocab()
    state = CFGConstraintState(CFGIndex(compile_cfg(src), vocab))
    data = text.encode()
    for cut in range(len(data) + 1):
        rec = Recognizer(state.index.g)
        rec.feed(data[:cut])
        s = CFGConstraintState(state.index)
        s.rec = rec
        mask = s.allowed_mask()
        want = np.array([bool(tb) and rec.try_bytes(tb) is not None for tb in vocab.token_bytes])
        want[0] = rec.accepting
        assert (mask == want).all(), (data[:cut], [vocab.token_bytes[i] for i in np.flatnonzero(mask != want)])


@pytest.fixture(scope="module")
def toy_json_index():
    return CFGIndex(compile_cfg(JSON_GRAMMAR), _toy_vocab())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_json_values, indent=st.sampled_from([None, 2]), cut=st.integers(0, 400))
def test_mask_is_exact_at_random_json_prefixes(toy_json_index, value, indent, cut) -> None:
    idx = toy_json_index
    data = json.dumps(value, indent=indent).encode()[:cut]
    s = CFGConstraintState(idx)
    s.rec.feed(data)
    mask = s.allowed_mask()
    want = np.array([bool(tb) and s.rec.try_bytes(tb) is not None for tb in idx.vocab.token_bytes])
    want[0] = s.rec.accepting
    assert (mask == want).all(), (data, [idx.vocab.token_bytes[i] for i in np.flatnonzero(mask != want)])


def test_step_budget_keeps_masks_sound() -> None:
    """Past max_steps the mask is a subset of the exact one that still holds every viable single byte."""
    src = 'start: item+\n?item: WORD | "(" item+ ")"\nWORD: /[a-z]+/\n%ignore " "'
    vocab = _toy_vocab()
    exact_idx, cut_idx = CFGIndex(compile_cfg(src), vocab), CFGIndex(compile_cfg(src), vocab)
    cut_idx.max_steps = 3
    for prefix in (b"", b"(ab", b"(a (b", b"ab)"):
        exact, cut = CFGConstraintState(exact_idx), CFGConstraintState(cut_idx)
        exact.rec.feed(prefix)
        cut.rec.feed(prefix)
        m_exact, m_cut = exact.allowed_mask(), cut.allowed_mask()
        assert not (m_cut & ~m_exact).any()
        singles = [i for i, tb in enumerate(vocab.token_bytes) if len(tb) == 1]
        assert (m_cut[singles] == m_exact[singles]).all()
    assert cut_idx.truncated_masks > 0 and exact_idx.truncated_masks == 0
    assert not m_exact.any() and not m_cut.any()  # "ab)" is dead: nothing is allowed


def _drive(state: CFGConstraintState, vocab: TokenVocab, target: str, check_sample: int = 0,
           rng: random.Random | None = None) -> list[int]:
    """Emit `target` choosing, at each step, the longest allowed token that is a prefix of the rest."""
    rest, ids = target.encode(), []
    row = torch.zeros(vocab.size + 7, dtype=torch.bool)
    while rest:
        state.fill_mask(row)
        allowed = np.flatnonzero(row.numpy())
        assert not row[vocab.size:].any()
        fits = [t for t in allowed if vocab.token_bytes[t] and rest.startswith(vocab.token_bytes[t])]
        assert fits, f"no allowed token continues {rest[:20]!r}"
        if check_sample and rng is not None:  # every allowed token keeps a viable prefix; others do not
            for t in rng.sample(list(allowed), min(check_sample, len(allowed))):
                assert t in vocab.eos_token_ids or state.rec.try_bytes(vocab.token_bytes[t]) is not None
            banned = np.flatnonzero(~row.numpy()[:vocab.size])
            for t in rng.sample(list(banned), min(check_sample, len(banned))):
                tb = vocab.token_bytes[t]
                assert not tb or state.rec.try_bytes(tb) is None, tb
        tok = max(fits, key=lambda t: len(vocab.token_bytes[t]))
        state.advance(tok)
        ids.append(int(tok))
        rest = rest[len(vocab.token_bytes[tok]):]
    return ids


def test_nesting_depth_8_through_smollm2_masks(default_model_path) -> None:
    vocab = smol_vocab(default_model_path)
    rng = random.Random(0)
    idx = cfg_index(JSON_GRAMMAR, vocab)
    state = CFGConstraintState(idx)
    target = '[[[[{"k": [[[[1, "a\\"]"]]]], "z": {"y": {}}}]]]]'  # 8 levels of nesting
    assert not re.fullmatch(grammar_to_regex(JSON_GRAMMAR), target)
    _drive(state, vocab, target, check_sample=40, rng=rng)
    assert idx.truncated_masks == 0  # every mask on the way was exact
    assert state.is_accepting() and not state.must_stop()  # trailing whitespace may still follow
    row = torch.zeros(vocab.size, dtype=torch.bool)
    state.fill_mask(row)
    assert all(row[e] for e in vocab.eos_token_ids)
    assert not row[smol_tokenizer(default_model_path).encode("]", add_special_tokens=False)[0]]
    state.advance(vocab.eos_token_ids[0])
    assert state.must_stop()
    ar = CFGConstraintState(cfg_index(ARITH, vocab))
    _drive(ar, vocab, "(" * 7 + "12+3" + ")" * 7 + "*4", check_sample=30, rng=rng)
    assert ar.is_accepting()


def test_eos_and_bad_tokens_are_refused(default_model_path) -> None:
    from sglang.runtime.constrained.errors import ConstraintViolation

    vocab = smol_vocab(default_model_path)
    state = CFGConstraintState(cfg_index(ARITH, vocab))
    with pytest.raises(ConstraintViolation, match="EOS"):
        state.advance(vocab.eos_token_ids[0])
    tok = smol_tokenizer(default_model_path)
    with pytest.raises(ConstraintViolation, match="not allowed"):
        state.advance(tok.encode(")", add_special_tokens=False)[0])
    assert state.jump_forward([], tok) is None


E2E_GRAMMAR = r'''
start: array
?value: array | NUMBER | WORD
array: "[" [value (", " value)*] "]"
NUMBER: /[0-9]{1,3}/
WORD: /"[a-z]{1,8}"/
'''


def test_engine_ebnf_recursive_grammar(default_engine, monkeypatch, capsys) -> None:
    spent: list[float] = []
    orig = CFGIndex.mask

    def timed(self, col, chart, group_keys=None):
        t0 = time.perf_counter()
        try:
            return orig(self, col, chart, group_keys)
        finally:
            spent.append(time.perf_counter() - t0)

    monkeypatch.setattr(CFGIndex, "mask", timed)
    json_object = JSON_GRAMMAR.replace("start: value", "start: object")
    cases = [("Write a deeply nested list, like [[1, [2, [3]]], 4]: ", E2E_GRAMMAR),
             ("A JSON object describing a cat (name, age, toys):\n", json_object)]
    outs = default_engine.generate([p for p, _ in cases], [{"ebnf": gsrc, "max_new_tokens": 40, "temperature": 0}
                                                          for _, gsrc in cases])
    report = []
    for (_, gsrc), out in zip(cases, outs):
        text, fr = out["text"], out["meta_info"]["finish_reason"]["type"]
        alive, complete = matches(compile_cfg(gsrc), text.encode())
        if fr == "stop":
            assert complete and _lark_accepts(_lark(gsrc), text), text
        else:
            assert fr == "length" and alive, (fr, text)  # cut by max_new_tokens: still a viable prefix
        report.append(f"{fr}: {text!r}")
    assert spent
    with capsys.disabled():
        print(f"\n[cfg e2e] {report}; mask {1000 * sum(spent) / len(spent):.2f} ms/token avg, "
              f"max {1000 * max(spent):.1f} ms over {len(spent)} masks")
