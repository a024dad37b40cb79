"""Jump-forward with re-tokenization on the SmolLM2 tokenizer (no model: tokens are chosen by a rule)."""
from __future__ import annotations

import random

import pytest
from constrained_helpers import CHARACTER_REGEX, full

from sglang.runtime.constrained import ConstraintCache, ConstraintState, json_schema_to_regex
from sglang.runtime.constrained.scheduler_hook import make_constraint_factory
from sglang.runtime.server_args import ServerArgs

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "house": {"enum": ["Gryffindor", "Slytherin"]},
                                           "age": {"type": "integer"}}, "required": ["name", "house", "age"]}
PATTERNS = [CHARACTER_REGEX, json_schema_to_regex(SCHEMA), r"The answer is (yes|no)\. Confidence: [0-9]{2}%",
            r'\[("(apple|banana|cherry)", ){2}"(kiwi|lime)"\]', r"(café|naïve|日本語)+!"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ConstraintCache(cache_dir=tmp_path_factory.mktemp("jf"))


def _decode(vocab, pattern, cache, tok, jump: bool, seed: int, max_steps: int = 200):
    """Pick a random allowed token each step (EOS when accepting); jump forward after each step when on.
    Returns (output ids, sampled steps, jumps) and checks every jump's invariants on the way."""
    st = ConstraintState(cache.get(pattern, vocab), vocab)
    rng = random.Random(seed)
    out: list[int] = []
    steps = jumps = 0
    while steps < max_steps and not st.must_stop():
        allowed = [t for t in st.allowed_token_ids().tolist() if t not in vocab.eos_token_ids]
        if st.is_accepting() or not allowed:
            break
        t = rng.choice(sorted(allowed, key=lambda i: -len(vocab.token_bytes[i]))[:50])
        st.advance(t)
        out.append(t)
        steps += 1
        if not jump:
            continue
        jf = st.jump_forward(out, tok)
        if jf is None:
            continue
        jumps += 1
        before = vocab.decode_bytes(out)
        w = jf.retokenized
        span = out[len(out) - w:]
        kept = out[: len(out) - jf.rollback]
        new_out = kept + list(jf.new_ids)
        # text is never altered: only the forced bytes are appended
        assert vocab.decode_bytes(new_out) == before + jf.forced
        # the appended ids are the tokenizer's own encoding of the re-tokenized span
        expect = tok.encode((vocab.decode_bytes(span) + jf.forced).decode(), add_special_tokens=False)
        assert span[: w - jf.rollback] + list(jf.new_ids) == expect
        st.apply_jump_forward(jf)
        # the constraint state is the one the whole text leads to
        assert st.state == st.fsm.walk(st.fsm.start, vocab.decode_bytes(new_out))
        out = new_out
    return out, steps, jumps


@pytest.mark.parametrize("pattern", PATTERNS)
def test_jump_forward_invariants_and_full_matches(pattern, tok, vocab, cache) -> None:
    for seed in range(3):
        out, steps, jumps = _decode(vocab, pattern, cache, tok, jump=True, seed=seed)
        text = vocab.decode_bytes(out).decode()
        assert full(pattern, text), text
        assert jumps > 0
        assert steps < len(out) or jumps == 0 or steps <= len(out)


def test_jump_forward_saves_decode_steps(tok, vocab, cache) -> None:
    _, plain_steps, _ = _decode(vocab, CHARACTER_REGEX, cache, tok, jump=False, seed=0)
    out, jf_steps, jumps = _decode(vocab, CHARACTER_REGEX, cache, tok, jump=True, seed=0)
    assert jumps >= 8 and jf_steps < plain_steps / 2, (jf_steps, plain_steps)


def test_boundary_merge_is_retokenized(tok, vocab, cache) -> None:
    """The model closes the string with `"`; the forced `, house: "` merges with it (`",` is one SmolLM2
    token), so the jump rolls the `"` back and appends the tokenizer's own encoding."""
    pattern = r'name: "[A-Za-z]+", house: "(Gryffindor|Slytherin)"'
    st = ConstraintState(cache.get(pattern, vocab), vocab)
    jf = st.jump_forward([], tok)
    assert jf is not None and jf.forced == b'name: "' and jf.rollback == 0
    out = list(jf.new_ids)
    assert out == tok.encode('name: "', add_special_tokens=False)
    st.apply_jump_forward(jf)
    for t in tok.encode("Harry", add_special_tokens=False) + [vocab.token_bytes.index(b'"')]:
        st.advance(t)
        out.append(t)
    jf = st.jump_forward(out, tok)
    assert jf is not None and jf.forced == b', house: "'
    assert jf.rollback >= 1  # the lone '"' token is replaced
    new_out = out[: len(out) - jf.rollback] + list(jf.new_ids)
    assert vocab.decode_bytes(new_out) == b'name: "Harry", house: "'
    assert vocab.token_bytes.index(b'",') in jf.new_ids
    w = jf.retokenized
    assert new_out[len(out) - w:] == tok.encode((vocab.decode_bytes(out[len(out) - w:]) + jf.forced).decode(),
                                                add_special_tokens=False)


def test_no_jump_when_nothing_is_forced_or_finished(tok, vocab, cache) -> None:
    st = ConstraintState(cache.get(r"(a|b)c", vocab), vocab)
    assert st.jump_forward([], tok) is None
    st.advance(vocab.token_bytes.index(b"a"))
    jf = st.jump_forward([vocab.token_bytes.index(b"a")], tok)
    assert jf is not None and jf.forced == b"c"


def test_disable_regex_jump_forward_flag_reaches_the_hook(tok) -> None:
    on = make_constraint_factory(tok, 49152, ServerArgs())
    off = make_constraint_factory(tok, 49152, ServerArgs(disable_regex_jump_forward=True))
    assert on.jump_forward and not off.jump_forward

    class _Req:
        def __init__(self) -> None:
            self.sampling_params = type("SP", (), {"constraint": ("regex", r'\{"k": [0-9]\}'),
                                                   "regex": r'\{"k": [0-9]\}'})()
            self.output_ids: list[int] = []
            self.rid = "r"

    r_on, r_off = on(_Req()), off(_Req())
    assert r_off.jump_forward() is None
    rollback, ids = r_on.jump_forward()
    assert rollback == 0 and tok.decode(ids) == '{"k": '


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = st.sampled_from(['"name": ', '"', ", ", "[0-9]{1,3}", "(true|false)", "[a-z]{1,6}", r"\{", r"\}", "é",
                           "(apple|apricot)", " ", r"\n  ", "x?", "(ab|cd)"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(_PIECES, min_size=2, max_size=7).map("".join), st.integers(0, 5))
def test_fuzz_jump_forward_invariants(tok, vocab, cache, pattern, seed) -> None:
    """Random structured patterns: every jump keeps the text, re-encodes like the tokenizer and keeps the
    state consistent (checked inside _decode); a finished output is a full match."""
    out, steps, jumps = _decode(vocab, pattern, cache, tok, jump=True, seed=seed, max_steps=60)
    st_ = ConstraintState(cache.get(pattern, vocab), vocab)
    st_.state = st_.fsm.walk(st_.fsm.start, vocab.decode_bytes(out))
    if st_.is_accepting():
        assert full(pattern, vocab.decode_bytes(out).decode()), (pattern, out)
