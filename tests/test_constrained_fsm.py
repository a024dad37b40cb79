"""Regex → byte DFA → token index, on toy vocabularies (no tokenizer needed)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from constrained_helpers import IPV4_UNESCAPED, random_match

from sglang.runtime.constrained import (ConstraintState, ConstraintViolation, EmptyLanguageError, RegexSyntaxError,
                                        TokenFSM, TokenVocab, regex_to_dfa)
from sglang.runtime.constrained.regex_fsm import utf8_sequences

PATTERNS = [
    r"[a-z]+", r"(ab|cd)*e", r"\d{3}-\d{4}", r"[^\"\\]*", r"(yes|no|maybe)", r"\w+@\w+\.(com|org)",
    r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", r".{2,4}", r'"([^"\\]|\\.)*"', r"x?y?z?", r"[\u00e9\u4e2d\U0001F600]+",
    r"a{0,3}b{2}", r"(?s:.)", r"[^a]", r"\s*\S+", IPV4_UNESCAPED,
]

SAMPLES = ["", "a", "abc", "ab", "abcde", "cde", "e", "123-4567", "12-345", "yes", "no", "maybe", "mayb",
           "joe@x.com", "joe@x.net", "-0.5", "01", "3.", "x", "xyz", "xz", "zy", "aab", "bb", "abbb",
           "\n", "é", "中", "😀", "é中😀", "ab\n", '"a\\"b"', '"\\', " \t x", "192.168", "192.168.1.1",
           "256.1.1.1", "1a2b3c4", "255.255.255.255", "0.0.0.0", "999.1.1.1", "192.168.1", "10.0.0"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dfa_agrees_with_python_re(pattern: str) -> None:
    dfa = regex_to_dfa(pattern)
    for s in SAMPLES:
        assert dfa.fullmatch(s.encode()) == (re.fullmatch(pattern, s, re.ASCII) is not None), (pattern, s)
    rng = random.Random(0)
    for _ in range(30):  # every random member of the DFA's language is a Python-re match
        data = random_match(dfa, rng)
        assert re.fullmatch(pattern, data.decode("utf-8"), re.ASCII), (pattern, data)


def test_ipv4_unescaped_is_exactly_pythons_language() -> None:
    dfa = regex_to_dfa(IPV4_UNESCAPED)
    # "." is any character: "192.168" splits as 1 . 9 2 . 1 6 8? no: 1|9|2|.|1|6|8 = four octets 1,2,1,8
    assert dfa.fullmatch(b"192.168") is (re.fullmatch(IPV4_UNESCAPED, "192.168") is not None)
    assert not dfa.fullmatch(b"192.16") and re.fullmatch(IPV4_UNESCAPED, "192.16") is None
    assert dfa.fullmatch(b"10.0.0.255") and not dfa.fullmatch(b"10.0.0.256")
    # after "192.168.1" the text is a prefix but not a full match
    s = dfa.walk(dfa.start, b"192.168.1")
    assert s != 0


def test_dfa_is_minimal_for_simple_patterns() -> None:
    assert regex_to_dfa("a|b").num_states == 3  # dead, start, final
    assert regex_to_dfa("(ab)*").num_states == 3


def test_utf8_sequences_cover_each_code_point_once() -> None:
    for lo, hi in [(0, 0x7F), (0x80, 0x7FF), (0x7F0, 0x1000), (0xFFF0, 0x10010), (0x10FF00, 0x10FFFF)]:
        seqs = utf8_sequences(lo, hi)
        for cp in list(range(lo, min(hi, lo + 300) + 1)) + [hi]:
            if 0xD800 <= cp <= 0xDFFF:
                continue
            enc = chr(cp).encode()
            hits = [s for s in seqs if len(s) == len(enc) and all(a <= b <= c for (a, c), b in zip(s, enc))]
            assert len(hits) == 1, (hex(cp), seqs)


@pytest.mark.parametrize("pattern,pos,needle", [
    ("(abc", 0, "missing ), unterminated subpattern"),
    ("ab[c", 2, "unterminated character set"),
    ("a{3,2}", 2, "min repeat greater than max repeat"),
    (r"(a)\1", 3, "back reference"),
    ("a(?=b)", 1, "look-ahead"),
    (r"\bword", 0, "word boundary"),
    ("a^b", 1, "anchor"),
])
def test_bad_regex_error_names_pattern_and_position(pattern: str, pos: int, needle: str) -> None:
    with pytest.raises(RegexSyntaxError) as ei:
        regex_to_dfa(pattern)
    assert isinstance(ei.value, ValueError)
    assert ei.value.pos == pos
    assert repr(pattern) in str(ei.value) and f"position {pos}" in str(ei.value)
    assert needle in str(ei.value)


def test_exponential_pattern_is_refused_not_hung() -> None:
    with pytest.raises(RegexSyntaxError, match="too large"):
        regex_to_dfa("(a|b)*a(a|b){20}")


def test_index_size_guard(monkeypatch) -> None:
    from sglang.runtime.constrained import ConstraintError
    from sglang.runtime.constrained import token_fsm as tf

    monkeypatch.setattr(tf, "MAX_PAIRS", 5)
    vocab = _toy_vocab()
    with pytest.raises(ConstraintError, match="too large to index"):
        TokenFSM.build("[abc]{0,20}", regex_to_dfa("[abc]{0,20}"), vocab)


def test_empty_language_is_an_error() -> None:
    with pytest.raises(EmptyLanguageError):
        regex_to_dfa("[^\\x00-\\U0010ffff]")
    with pytest.raises(EmptyLanguageError):
        regex_to_dfa("a[^\\x00-\\U0010ffff]b")


def _toy_vocab() -> TokenVocab:
    toks = [b"", b"a", b"b", b"ab", b"ba", b"abc", b"c", b"cc", b"\xc3", b"\xa9", b"\xc3\xa9", b"x", b"{", b'"']
    return TokenVocab.from_tokens(toks, eos_token_ids=[0])


def test_token_index_matches_definition_exhaustively() -> None:
    vocab = _toy_vocab()
    for pattern in [r"(ab)*c?", r"a+b", r"é+", r"[abc]{2,5}", r"\{\"a\"", "x|ab"]:
        dfa = regex_to_dfa(pattern)
        fsm = TokenFSM.build(pattern, dfa, vocab)
        for state in range(1, dfa.num_states):
            if fsm.row_of[state] < 0:
                continue
            allowed = set(fsm.allowed_ids(state).tolist())
            for t, tb in enumerate(vocab.token_bytes):
                if t in vocab.eos_token_ids:
                    assert (t in allowed) == bool(dfa.accepting[state])
                    continue
                nxt = dfa.walk(state, tb) if tb else 0
                # allowed iff the bytes keep a live path whose state still has a token-level way to finish
                expect = nxt != 0 and fsm.row_of[nxt] >= 0
                assert (t in allowed) == expect, (pattern, state, tb)


def test_vocab_that_cannot_spell_the_pattern_is_rejected() -> None:
    vocab = TokenVocab.from_tokens([b"", b"a", b"b"], eos_token_ids=[0])
    with pytest.raises(EmptyLanguageError):
        TokenFSM.build("c", regex_to_dfa("c"), vocab)
    # "ac" can't be finished: after "a" nothing is allowed, so "a" itself is masked out
    fsm = TokenFSM.build("ab|ac", regex_to_dfa("ab|ac"), vocab)
    assert fsm.allowed_ids(fsm.start).tolist() == [1]


def test_byte_level_shortcut_drops_unspellable_continuations() -> None:
    """All single bytes but 0x04 are tokens (and no token contains 0x04): after "a" the pattern `a\x04|b`
    cannot finish, so "a" is masked out; the fast path must agree with the general token-graph search."""
    toks = [b""] + [bytes([i]) for i in range(256) if i != 4] + [b"ab", b"bb"]
    vocab = TokenVocab.from_tokens(toks, eos_token_ids=[0])
    assert vocab.bytes_are_tokens
    fsm = TokenFSM.build("a\\x04|b+", regex_to_dfa("a\\x04|b+"), vocab)
    allowed = {vocab.token_bytes[t] for t in fsm.allowed_ids(fsm.start)}
    assert allowed == {b"b", b"bb"}
    slow = TokenVocab.from_tokens(toks[:-2] + [b"ab", b"bb", b"\x04z"], eos_token_ids=[0])
    assert not slow.bytes_are_tokens  # 0x04 occurs in a token but is not one: general path
    fsm2 = TokenFSM.build("a\\x04|b+", regex_to_dfa("a\\x04|b+"), slow)
    assert {slow.token_bytes[t] for t in fsm2.allowed_ids(fsm2.start)} == {b"b", b"bb"}


def test_state_mask_advance_and_stop() -> None:
    vocab = _toy_vocab()
    dfa = regex_to_dfa("(ab)+")
    st = ConstraintState(TokenFSM.build("(ab)+", dfa, vocab), vocab)
    row = torch.zeros(20, dtype=torch.bool)
    row[15:] = True  # the tail past the tokenizer's vocab must be cleared
    st.fill_mask(row)
    assert row.nonzero().flatten().tolist() == [1, 3]  # "a", "ab"
    with pytest.raises(ConstraintViolation):
        st.advance(2)
    st.advance(3)
    assert st.is_accepting() and not st.must_stop()
    st.fill_mask(row)
    assert row[0] and row[1] and row[3] and not row[2]  # EOS allowed once accepting
    st.advance(0)
    assert st.finished and st.must_stop()


def test_must_stop_when_only_eos_can_follow() -> None:
    vocab = _toy_vocab()
    st = ConstraintState(TokenFSM.build("abc", regex_to_dfa("abc"), vocab), vocab)
    st.advance(5)
    assert st.is_accepting() and st.must_stop()
    assert st.allowed_token_ids().tolist() == [0]


def test_forced_bytes() -> None:
    vocab = _toy_vocab()
    fsm = TokenFSM.build(r'\{"a(b|c)', regex_to_dfa(r'\{"a(b|c)'), vocab)
    assert fsm.forced_bytes(fsm.start) == b'{"a'
    assert np.all(fsm.forced[fsm.accepting] < 0)


# ----- fuzz: random regexes vs Python's re on random strings -----
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ATOMS = st.sampled_from(["a", "b", "c", "1", " ", ".", r"\d", r"\w", r"\s", r"\S", "[ab]", "[^a]", "[a-c1]",
                          "[^\\d ]", "é", "\\.", "\\n"])


def _regexes():
    return st.recursive(
        _ATOMS,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda t: t[0] + t[1]),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}|{t[1]})"),
            st.tuples(inner, st.sampled_from(["?", "*", "+", "{2}", "{0,2}", "{1,3}", "*?"])).map(
                lambda t: f"({t[0]}){t[1]}"),
        ),
        max_leaves=6,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_regexes(), st.lists(st.text(alphabet="abc1 .\né", max_size=6), min_size=8, max_size=8))
def test_fuzz_dfa_equals_python_re(pattern: str, texts: list[str]) -> None:
    dfa = regex_to_dfa(pattern)
    rng = random.Random(len(pattern))
    texts = texts + [random_match(dfa, rng, 8).decode() for _ in range(4)]
    for t in texts:
        assert dfa.fullmatch(t.encode()) == (re.fullmatch(pattern, t, re.ASCII) is not None), (pattern, t)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_regexes())
def test_fuzz_token_index_matches_definition(pattern: str) -> None:
    """Random regexes on a vocabulary missing most bytes (general path) and one with every byte (fast path)."""
    for vocab in (_toy_vocab(), TokenVocab.from_tokens([b""] + [bytes([i]) for i in range(256)] + [b"ab", b"1 ", b"\xc3\xa9"],
                                                       eos_token_ids=[0])):
        dfa = regex_to_dfa(pattern)
        try:
            fsm = TokenFSM.build(pattern, dfa, vocab)
        except EmptyLanguageError:
            continue
        for state in range(1, dfa.num_states):
            if fsm.row_of[state] < 0:
                continue
            allowed = set(fsm.allowed_ids(state).tolist())
            for t, tb in enumerate(vocab.token_bytes):
                if not tb:
                    continue
                nxt = fsm.walk(state, tb)
                assert (t in allowed) == (nxt != 0 and fsm.row_of[nxt] >= 0), (pattern, state, tb)
        # every state reached through allowed tokens can still finish through allowed tokens
        seen, stack, edges = {fsm.start}, [fsm.start], {}
        while stack:
            s_ = stack.pop()
            edges[s_] = {fsm.walk(s_, vocab.token_bytes[t]) for t in fsm.allowed_ids(s_) if vocab.token_bytes[t]}
            for n_ in edges[s_] - seen:
                seen.add(n_)
                stack.append(n_)
        done = {s_ for s_ in seen if fsm.accepting[s_]}
        grew = True
        while grew:
            grew = False
            for s_ in seen - done:
                if edges[s_] & done:
                    done.add(s_)
                    grew = True
        assert done == seen, (pattern, seen - done)


class _FakeSPTokenizer:
    """Just enough of a SentencePiece-style HF tokenizer for vocab_from_tokenizer."""

    eos_token_id = 2
    all_special_ids = [0, 1, 2]

    def __init__(self) -> None:
        self.toks = ["<unk>", "<s>", "</s>", "\u2581the", "<0x0A>", "a", "\u2581", "<0xC3>", "<0xA9>", "é"]

    def __len__(self) -> int:
        return len(self.toks)

    def convert_ids_to_tokens(self, ids):
        return [self.toks[i] for i in ids]


def test_sentencepiece_vocab_bytes() -> None:
    from sglang.runtime.constrained import vocab_from_tokenizer

    v = vocab_from_tokenizer(_FakeSPTokenizer())
    assert v.token_bytes == [b"", b"", b"", b" the", b"\n", b"a", b" ", b"\xc3", b"\xa9", "é".encode()]
    assert v.eos_token_ids == (2,)
    fsm = TokenFSM.build("( the|a|é)+\n", regex_to_dfa("( the|a|é)+\n"), v)
    # a lone " " is a live prefix of " the", but no token spells "the" after it: masked out
    assert {v.token_bytes[t] for t in fsm.allowed_ids(fsm.start)} == {b" the", b"a", b"\xc3", "é".encode()}
