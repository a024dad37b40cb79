"""`encode_texts`: a batch of prompts tokenized in one call gives exactly the ids of encoding each alone
(special tokens, unicode, whitespace runs, an empty string), for the real tokenizer and for a tokenizer
that only has `encode`."""
from sglang.runtime.tokenizer import encode_texts

TEXTS = ["Context: A man opens the fridge\nEnding: and takes out a bottle of milk.\n\n" * 20,
         "<|im_start|>user\nHi<|im_end|>\n", "naïve café — 東京 🙂", "   spaced\t\ttabs  ", "", "x"]


def test_batched_ids_equal_one_by_one(tok):
    assert tok.is_fast
    assert encode_texts(tok, TEXTS) == [list(tok.encode(t)) for t in TEXTS]


def test_a_tokenizer_without_batching_encodes_one_by_one():
    class Plain:
        calls = 0

        def encode(self, text):
            Plain.calls += 1
            return [ord(c) for c in text]

    assert encode_texts(Plain(), ["ab", "c"]) == [[97, 98], [99]] and Plain.calls == 2


def test_the_engine_batch_encodes_and_still_reports_a_bad_prompt_by_index(default_engine):
    import pytest

    with pytest.raises(ValueError, match=r"request 1: text: lone surrogate"):
        default_engine.generate(text=["fine", "a\ud800b", "also fine"], sampling_params={"max_new_tokens": 1})
    outs = default_engine.generate(text=TEXTS[:3], sampling_params={"max_new_tokens": 0})
    assert [o["meta_info"]["prompt_tokens"] for o in outs] == [len(default_engine.tokenizer.encode(t)) for t in TEXTS[:3]]
