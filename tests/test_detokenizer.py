"""Incremental detokenizer (SmolLM2's tokenizer), stop-string matching and the per-request DecodeStream."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang.runtime.detokenizer import DecodeStream, IncrementalDetokenizer, StopChecker
from sglang.runtime.sampling import SamplingParams

TEXTS = [
    "héllo 😀 世界 <|im_end|> x",
    "Grüße aus Köln! 🇩🇪🏳️‍🌈 日本語のテキスト、한국어 텍스트 and ascii 123",
    "emoji run: 🤖🤖🤖👩‍👩‍👧‍👦 then Ελληνικά",
]


@pytest.fixture(scope="module")
def tokenizer(default_model_path):
    from sglang.runtime.tokenizer import get_tokenizer

    return get_tokenizer(default_model_path)


def stream(tokenizer, ids, chunk=1, fast=True, skip=True, prompt=None):
    d = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=skip, fast=fast)
    deltas = [d.append(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    deltas.append(d.flush())
    return deltas


@pytest.mark.parametrize("fast", [True, False])
def test_streamed_text_equals_full_decode_on_multibyte_text(tokenizer, fast):
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        for skip in (True, False):
            deltas = stream(tokenizer, ids, fast=fast, skip=skip)
            assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=skip)
            # text that decodes cleanly is never streamed with a half character in it
            assert not any("\ufffd" in d for d in deltas)
        # several ids per call behave the same
        assert "".join(stream(tokenizer, ids, chunk=3, fast=fast)) == tokenizer.decode(ids, skip_special_tokens=True)


def test_fast_path_is_used_for_byte_level_tokenizer(tokenizer):
    assert IncrementalDetokenizer(tokenizer).fast
    assert not IncrementalDetokenizer(tokenizer, fast=False).fast


@pytest.mark.parametrize("fast", [True, False])
def test_random_token_sequences(tokenizer, fast):
    rng = random.Random(0)
    vocab = len(tokenizer)
    # bias toward multi-byte fragments: ids of the pieces of emoji/CJK text plus random ids
    pieces = sorted({i for t in TEXTS for i in tokenizer.encode(t, add_special_tokens=False)})
    for trial in range(40):
        ids = [rng.choice(pieces) if rng.random() < 0.6 else rng.randrange(vocab) for _ in range(rng.randint(1, 30))]
        skip = trial % 2 == 0
        got = "".join(stream(tokenizer, ids, chunk=rng.randint(1, 3), fast=fast, skip=skip))
        assert got == tokenizer.decode(ids, skip_special_tokens=skip), ids


def test_prompt_context_does_not_leak_into_output(tokenizer):
    prompt = tokenizer.encode("Hello there, my friend", add_special_tokens=False)
    out = tokenizer.encode(" how are you", add_special_tokens=False)
    for fast in (True, False):
        assert "".join(stream(tokenizer, out, fast=fast, prompt=prompt)) == " how are you"


def reference_stop(text: str, stops: list[str], no_trim: bool) -> tuple[str, str | None]:
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or (i + len(s), i) < best[:2]):
            best = (i + len(s), i, s)
    if best is None:
        return text, None
    return (text[: best[0]] if no_trim else text[: best[1]]), best[2]


def run_checker(deltas, stops, no_trim=False):
    sc = StopChecker(stops, no_stop_trim=no_trim)
    emitted, matched = [], None
    for d in deltas:
        out, m = sc.feed(d)
        emitted.append(out)
        if m is not None:
            matched = m
            break
    if matched is None:
        emitted.append(sc.flush())
    return emitted, matched


def test_stop_string_across_boundaries_is_never_streamed():
    emitted, matched = run_checker(["The ans", "wer is 4", "2.\nDo", "ne"], ["\nDone", "is 5"])
    assert matched == "\nDone"
    assert "".join(emitted) == "The answer is 42."
    assert all("\n" not in e for e in emitted)  # "\nDo" was held back, never streamed
    # a false start is released once it can no longer become a stop string
    emitted, matched = run_checker(["a S", "TO", "x", "y"], ["STOP"])
    assert matched is None and emitted == ["a ", "", "STOx", "y", ""]


def test_stop_first_to_complete_wins_and_no_stop_trim():
    assert run_checker(["xxabcd"], ["bcd", "abcdef", "c"]) == (["xxab"], "c")
    assert run_checker(["xxab", "cd"], ["bcd", "abz"], no_trim=True) == (["xx", "abcd"], "bcd")


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(alphabet="abc\n", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=8),
    stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4), min_size=1, max_size=3),
    no_trim=st.booleans(),
)
def test_stop_checker_matches_reference(text, cuts, stops, no_trim):
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    deltas = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    emitted, matched = run_checker(deltas, stops, no_trim)
    want_text, want_match = reference_stop(text, stops, no_trim)
    assert "".join(emitted) == want_text
    assert (matched is None) == (want_match is None)
    if matched is not None:
        # the matched string ends first (ties: earliest start), like the reference
        assert reference_stop(text, [matched], no_trim)[0] == want_text
    # never stream a whole stop string (unless no_stop_trim asks for it at the very end)
    streamed = "".join(emitted[:-1] if no_trim and matched else emitted)
    assert not any(s in streamed for s in stops)


def test_stop_regex_and_empty_stop():
    emitted, matched = [], None
    sc = StopChecker((), stop_regex=[r"\d{3}"])
    for d in ["ab1", "2", "34z"]:
        out, matched = sc.feed(d)
        emitted.append(out)
    # "123" spans three deltas; "ab12" was already streamed, nothing more is
    assert matched == r"\d{3}" and emitted == ["ab1", "2", ""]
    sc = StopChecker((), no_stop_trim=True, stop_regex=[r"x+y"])
    assert sc.feed("axx") == ("axx", None) and sc.feed("yb") == ("y", r"x+y")
    with pytest.raises(ValueError, match="empty"):
        StopChecker([""])


def test_decode_stream_with_tokenizer(tokenizer):
    text = "Result: 😀 yes.\nEND of story"
    ids = tokenizer.encode(text, add_special_tokens=False)
    p = SamplingParams(stop=["\nEND"])
    ds = DecodeStream(tokenizer, p)
    visible = []
    for i in ids:
        out, matched = ds.append([i])
        visible.append(out)
        if matched:
            break
    assert matched == "\nEND" and ds.text == "Result: 😀 yes." == "".join(visible)
    assert ds.append(ids[-1:]) == ("", None)  # ignored after the stop
    # no stop hit: finish() releases the held tail; EOS is skipped as a special token
    ds2 = DecodeStream(tokenizer, SamplingParams(stop=["story!"]))
    for i in ids + [tokenizer.eos_token_id]:
        ds2.append([i])
    ds2.finish()
    assert ds2.text == text and ds2.matched is None
    ds3 = DecodeStream(tokenizer, SamplingParams(stop=["\nEND"], no_stop_trim=True))
    ds3.append(ids)
    assert ds3.text == "Result: 😀 yes.\nEND"


@pytest.fixture(scope="module")
def sp_tokenizer():
    """A Llama-2-style tokenizer (metaspace, byte fallback, leading-space strip) built in memory:
    the generic windowed path, where a token's text depends on its left neighbour."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for w in ["▁", "▁hello", "▁world", "ing", "▁play", "ed", ",", "!", "▁the", "h", "e", "▁a", "b", "▁▁"]:
        vocab[w] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<s>", "</s>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_generic_path_on_sentencepiece_style_tokenizer(sp_tokenizer):
    assert not IncrementalDetokenizer(sp_tokenizer).fast  # not byte-level: the windowed path
    rng = random.Random(1)
    words = list(range(259, len(sp_tokenizer))) + [0, 1, 2]  # pieces, <unk>, specials
    chars = [[3 + b for b in ch.encode()] for ch in "世界😀éa!"]  # byte-fallback ids per character
    utf8 = chars[0]
    for trial in range(60):
        # Byte tokens form whole characters (an invalid byte run re-renders ALL its bytes as U+FFFD
        # in ByteFallback, which no incremental decoder can stream without retracting); a last
        # character may be cut short.
        ids: list[int] = []
        for _ in range(rng.randint(1, 12)):
            ids += rng.choice(chars) if rng.random() < 0.5 else [rng.choice(words)]
        if rng.random() < 0.3:  # a cut character, after a piece (not inside a run of byte tokens)
            ids += [rng.choice(words[:-3])] + rng.choice(chars[:3])[:-1]
        skip = trial % 2 == 0
        deltas = stream(sp_tokenizer, ids, chunk=rng.randint(1, 3), skip=skip)
        assert "".join(deltas) == sp_tokenizer.decode(ids, skip_special_tokens=skip), ids
    # with prompt context, the first output token keeps the space the prompt gives it
    hello, world = sp_tokenizer.convert_tokens_to_ids(["▁hello", "▁world"])
    assert "".join(stream(sp_tokenizer, [world, hello], prompt=[hello])) == " world hello"
    assert "".join(stream(sp_tokenizer, [world, hello])) == "world hello"
    # a character split over byte tokens is held until complete
    d = IncrementalDetokenizer(sp_tokenizer)
    assert [d.append([i]) for i in utf8[:3]] == ["", "", "世"]


def test_long_stop_string_is_held_then_matched_or_released():
    stop = "ab" * 5000 + "c"
    sc = StopChecker([stop])
    assert all(sc.feed("ab") == ("", None) for _ in range(5000))  # all of it may still be the stop
    assert sc.feed("c!") == ("", stop)
    sc = StopChecker([stop])
    for _ in range(3000):
        sc.feed("ab")
    out, matched = sc.feed("x")  # can no longer be a stop string: everything comes out
    assert matched is None and out == "ab" * 3000 + "x" and sc.held == ""


def test_stop_strings_do_not_match_before_min_new_tokens(tokenizer):
    ids = tokenizer.encode("a STOP b STOP c", add_special_tokens=False)
    first = len(tokenizer.encode("a STOP", add_special_tokens=False))
    ds = DecodeStream(tokenizer, SamplingParams(stop=["STOP"], min_new_tokens=first + 1))
    outs = [ds.append([i]) for i in ids]
    matched = [m for _, m in outs if m]
    assert matched == ["STOP"] and ds.text == "a STOP b "  # the first one came too early
    ds = DecodeStream(tokenizer, SamplingParams(stop=["STOP"]))
    for i in ids:
        ds.append([i])
    assert ds.text == "a "


def test_catch_up_in_bulk_gives_the_text_of_token_by_token_feeding(tokenizer):
    """Lazy detokenization: feeding a request's output in a few bulk catch_up calls (and skipping a
    trimmed stop token) leaves the same text as feeding it one token at a time."""
    text = "Résumé: 😀 naïve café, twice. Done"
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    one = DecodeStream(tokenizer, SamplingParams())
    for i in ids[:-1]:
        one.append([i])
    one.finish()
    bulk = DecodeStream(tokenizer, SamplingParams())
    assert not bulk.needs_every_token
    bulk.catch_up(ids, 3)
    bulk.catch_up(ids, 3)  # nothing new: a no-op
    bulk.catch_up(ids, len(ids) - 1)
    bulk.skip()  # the EOS that ended the request is trimmed
    assert bulk.catch_up(ids) is None and bulk.consumed == len(ids)
    bulk.finish()
    assert bulk.text == one.text == text
    assert DecodeStream(tokenizer, SamplingParams(stop=["x"])).needs_every_token
