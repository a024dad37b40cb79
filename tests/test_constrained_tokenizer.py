"""Token-level index on the real SmolLM2 tokenizer (49152 byte-level BPE tokens)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from constrained_helpers import CHARACTER_REGEX, IPV4_UNESCAPED, full, is_prefix

from sglang.runtime.constrained import ConstraintCache, ConstraintState, choices_to_regex

PATTERNS = [
    IPV4_UNESCAPED,
    CHARACTER_REGEX,
    r'"([^"\\\x00-\x1f]|\\["\\/bfnrt])*"',
    r"(Paris|London|New York|São Paulo)",
    r"[-+]?[0-9]+",
    r"[a-z ]{0,12}\.",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return ConstraintCache(cache_dir=tmp_path_factory.mktemp("cc"))


def test_token_bytes_roundtrip_the_tokenizer(tok, vocab) -> None:
    for text in ["Hello, world!", '{"name": "Ünïcødé 中文 😀"}', "  leading\n\ttabs", "192.168.1.1"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert vocab.decode_bytes(ids) == text.encode()
    assert vocab.size == len(tok) == 49152
    assert vocab.token_bytes[tok.eos_token_id] == b""  # specials have no bytes
    assert all(vocab.token_bytes[i] == b"" for i in range(17))  # SmolLM2's 17 special tokens


@pytest.mark.parametrize("pattern", PATTERNS)
def test_allowed_tokens_keep_a_prefix_disallowed_do_not(pattern, tok, vocab, cache) -> None:
    fsm = cache.get(pattern, vocab)
    st = ConstraintState(fsm, vocab)
    rng = random.Random(1)
    all_ids = np.arange(vocab.size)
    text = b""
    for _step in range(12):
        allowed = st.allowed_token_ids()
        allowed_set = set(allowed.tolist())
        disallowed = np.setdiff1d(all_ids, allowed)
        for t in rng.sample(allowed.tolist(), min(40, len(allowed))):
            if t in vocab.eos_token_ids:
                assert full(pattern, text.decode())
                continue
            cand = text + vocab.token_bytes[t]
            try:
                s = cand.decode()
            except UnicodeDecodeError:
                continue  # ends inside a character: the oracle works on text
            assert is_prefix(pattern, s), (pattern, s)
        for t in rng.sample(disallowed.tolist(), 200):
            tb = vocab.token_bytes[t]
            if not tb:
                continue
            try:
                s = (text + tb).decode()
            except UnicodeDecodeError:
                continue
            assert not is_prefix(pattern, s), (pattern, s)
        # EOS exactly in accepting states
        assert (tok.eos_token_id in allowed_set) == st.is_accepting()
        if st.must_stop():
            break
        choices = [t for t in allowed.tolist() if t not in vocab.eos_token_ids]
        t = rng.choice(choices)
        st.advance(t)
        text += vocab.token_bytes[t]


@pytest.mark.parametrize("seed", range(2))
def test_sampled_generations_always_match(seed, vocab, cache) -> None:
    """Random logits, temperature sampling under the mask, 120 tokens at most: a finished output is a
    full match; one cut by the length limit is still a prefix of the language (never claimed final)."""
    rng = np.random.default_rng(seed)
    for pattern in PATTERNS:
        st = ConstraintState(cache.get(pattern, vocab), vocab)
        row = torch.empty(vocab.size, dtype=torch.bool)
        out, finished = b"", False
        for _ in range(120):
            if st.must_stop():
                finished = True
                break
            st.fill_mask(row)
            logits = np.where(row.numpy(), rng.standard_normal(vocab.size) / 0.8, -np.inf)
            t = int(np.argmax(logits + rng.gumbel(size=vocab.size)))  # a sample of softmax(logits)
            st.advance(t)
            if t in vocab.eos_token_ids:
                finished = True
                break
            out += vocab.token_bytes[t]
        text = out.decode(errors="ignore")
        if finished:
            assert st.is_accepting() and full(pattern, out.decode()), (pattern, out)
        else:
            assert is_prefix(pattern, text), (pattern, out)


def test_ipv4_partial_address_is_not_final(vocab, cache) -> None:
    st = ConstraintState(cache.get(IPV4_UNESCAPED, vocab), vocab)
    # with "." unescaped, "192.168.1" IS a full match (octets 19, 1, 16, 1), but "10.0.0" is not
    assert re.fullmatch(IPV4_UNESCAPED, "192.168.1") and re.fullmatch(IPV4_UNESCAPED, "10.0.0") is None
    for ch in "10.0.0":
        st.advance(vocab.token_bytes.index(ch.encode()))
    assert not st.is_accepting() and not st.must_stop()
    assert vocab.eos_token_ids[0] not in set(st.allowed_token_ids().tolist())
    for ch in ".1":
        st.advance(vocab.token_bytes.index(ch.encode()))
    assert st.is_accepting() and vocab.eos_token_ids[0] in set(st.allowed_token_ids().tolist())


def test_choices_regex_escapes_and_masks(vocab, cache) -> None:
    choices = ["a+b", "(x)", "1.5", "x|y"]
    rx = choices_to_regex(choices)
    for c in choices:
        assert re.fullmatch(rx, c)
    assert not re.fullmatch(rx, "aab") and not re.fullmatch(rx, "x") and not re.fullmatch(rx, "105")
    st = ConstraintState(cache.get(rx, vocab), vocab)
    first = {vocab.token_bytes[t][:1] for t in st.allowed_token_ids().tolist()}
    assert first == {b"a", b"(", b"1", b"x"}


def test_mask_row_longer_than_vocab_is_padded_false(vocab, cache) -> None:
    st = ConstraintState(cache.get(r"[0-9]+", vocab), vocab)
    row = torch.ones(vocab.size + 64, dtype=torch.bool)
    st.fill_mask(row)
    assert not row[vocab.size:].any()
    allowed = row.nonzero().flatten().tolist()
    assert allowed and all(vocab.token_bytes[t].isdigit() for t in allowed)
