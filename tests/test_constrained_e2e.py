"""End to end on the default model (SmolLM2-135M) through sglang.Engine: greedy and sampled constrained
generation, meta_info, and greedy agreement with vs without jump-forward (each difference traced)."""
from __future__ import annotations

import json
import re

import pytest
from constrained_helpers import CHARACTER_REGEX, IPV4_UNESCAPED, full, is_prefix, smol_tokenizer, smol_vocab
from pydantic import BaseModel, Field

import sglang
from sglang.runtime.constrained import ConstraintCache, ConstraintState, choices_to_regex

IPV4_ESCAPED = IPV4_UNESCAPED.replace(").(", r")\.(")


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    city: str = Field(max_length=12)


PERSON_SCHEMA = json.dumps(Person.model_json_schema())

# (prompt, sampling constraint) pairs; regexes are checked with Python's re after generation
CASES = [
    ("What is the IP address of the Google DNS servers? Answer: ", {"regex": IPV4_ESCAPED}),
    ("Write a character profile as JSON:\n", {"regex": CHARACTER_REGEX}),
    ("Give a person as JSON: ", {"json_schema": PERSON_SCHEMA}),
    ("Is the sky blue? Answer: ", {"regex": choices_to_regex(["yes, it is", "no, it is not", "sometimes"])}),
    ("The list of three fruits: ", {"regex": r'\["(apple|banana|cherry|kiwi)"(, "(apple|banana|cherry|kiwi)"){2}\]'}),
    ("Date of the moon landing: ", {"regex": r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"}),
]


def _regex_of(c: dict) -> str:
    if "regex" in c:
        return c["regex"]
    from sglang.runtime.constrained import json_schema_to_regex

    return json_schema_to_regex(c["json_schema"])


@pytest.fixture(scope="module")
def engine(default_model_path):
    with sglang.Engine(model_path=default_model_path) as e:
        yield e


def _run(engine, temperature: float, jump: bool, max_new_tokens: int = 120, logprobs: bool = False, seed=None):
    engine._constraints.jump_forward = jump  # the hook's switch (same as --disable-regex-jump-forward)
    try:
        sps = [{**c, "temperature": temperature, "max_new_tokens": max_new_tokens,
                **({"seed": seed} if seed is not None else {})} for _, c in CASES]
        extra = {"return_logprob": True, "top_logprobs_num": 2} if logprobs else {}
        return engine.generate([p for p, _ in CASES], sps, **extra)
    finally:
        engine._constraints.jump_forward = True


@pytest.fixture(scope="module")
def greedy_jump(engine):
    return _run(engine, 0.0, jump=True)


def test_greedy_outputs_match_and_report_jump_forward(greedy_jump) -> None:
    outs = greedy_jump
    saved = 0
    for (prompt, c), out in zip(CASES, outs):
        rx, mi = _regex_of(c), out["meta_info"]
        if mi["finish_reason"]["type"] == "stop":
            assert full(rx, out["text"]), (rx, out["text"])
        else:
            assert mi["finish_reason"]["type"] == "length" and is_prefix(rx, out["text"]), out
        assert mi["completion_tokens_wo_jump_forward"] <= mi["completion_tokens"]
        saved += mi["completion_tokens"] - mi["completion_tokens_wo_jump_forward"]
    assert saved > 0  # the JSON and character patterns have long forced runs
    Person.model_validate_json(outs[2]["text"])


def test_sampled_outputs_match(engine) -> None:
    for seed in (1,):
        for (prompt, c), out in zip(CASES, _run(engine, 0.9, jump=True, seed=seed)):
            rx, kind = _regex_of(c), out["meta_info"]["finish_reason"]["type"]
            assert kind in ("stop", "length")
            assert full(rx, out["text"]) if kind == "stop" else is_prefix(rx, out["text"]), out["text"]


def test_cannot_finish_within_max_new_tokens_is_length(engine) -> None:
    out = engine.generate("Count: ", {"regex": r"[0-9]{40}", "max_new_tokens": 3, "temperature": 0})
    assert out["meta_info"]["finish_reason"]["type"] == "length"
    assert re.fullmatch(r"[0-9]*", out["text"]) and not re.fullmatch(r"[0-9]{40}", out["text"])


def test_bad_constraint_is_rejected_before_generation(engine) -> None:
    with pytest.raises(ValueError, match="position"):
        engine.generate("x", {"regex": "(unclosed"})
    with pytest.raises(ValueError, match="json_schema"):
        engine.generate("x", {"json_schema": '{"type": "strnig"}'})


def _trace(vocab, tok, fsm, ids_plain: list[int]) -> tuple[int | None, str]:
    """Replay the no-jump greedy tokens with jump-forward on: return the byte offset of the first jump
    whose re-tokenized context differs from the tokens the model produced without jumping (None if none)."""
    st = ConstraintState(fsm, vocab)
    out: list[int] = []
    i = 0
    while i < len(ids_plain):
        t = ids_plain[i]
        if t in vocab.eos_token_ids:
            break
        st.advance(t)
        out.append(t)
        i += 1
        jf = st.jump_forward(out, tok)
        if jf is None:
            continue
        st.apply_jump_forward(jf)
        jumped = out[: len(out) - jf.rollback] + list(jf.new_ids)
        target = len(vocab.decode_bytes(jumped))
        # the plain run's tokens covering the same text
        j, n = i, len(vocab.decode_bytes(out))
        plain_ctx = list(out)
        while n < target and j < len(ids_plain):
            plain_ctx.append(ids_plain[j])
            n += len(vocab.token_bytes[ids_plain[j]])
            j += 1
        if plain_ctx != jumped:
            shown = (f"at byte {target}: text {vocab.decode_bytes(jumped)[-30:]!r}\n"
                     f"    without jump-forward the model wrote {[vocab.token_bytes[x] for x in plain_ctx[-6:]]}\n"
                     f"    jump-forward re-tokenized it as      {[vocab.token_bytes[x] for x in jumped[-6:]]}")
            return target, shown
        out, i = jumped, j
    return None, ""


def test_greedy_agreement_with_and_without_jump_forward(engine, greedy_jump, default_model_path, capsys) -> None:
    tok, vocab = smol_tokenizer(default_model_path), smol_vocab(default_model_path)
    cache = ConstraintCache(disk=False)
    plain = _run(engine, 0.0, jump=False, logprobs=True)
    jumped = greedy_jump
    agree = 0
    lines = []
    for (prompt, c), a, b in zip(CASES, plain, jumped):
        if a["text"] == b["text"]:
            agree += 1
            continue
        ids = [x[1] for x in a["meta_info"]["output_token_logprobs"]]
        where, shown = _trace(vocab, tok, cache.get(_regex_of(c), vocab), ids)
        ta, tb = a["text"].encode(), b["text"].encode()
        first_diff = next((k for k in range(min(len(ta), len(tb))) if ta[k] != tb[k]), min(len(ta), len(tb)))
        # a legitimate difference: identical text up to the first context the two runs tokenized differently
        if where is None or first_diff < where:
            # otherwise only a numerical near-tie may explain it (the jump run prefills tokens the plain
            # run decoded one by one, so logits differ in the last bits): the plain run's top-2 gap there
            k, n = 0, 0
            while k < len(ids) and n + len(vocab.token_bytes[ids[k]]) <= first_diff:
                n += len(vocab.token_bytes[ids[k]])
                k += 1
            top = a["meta_info"]["output_top_logprobs"][k]
            gap = top[0][0] - top[1][0] if len(top) > 1 else float("inf")
            assert gap < 1e-2, (prompt, a["text"], b["text"], shown, gap)
            shown = f"numerical near-tie at output token {k}: top-2 logprob gap {gap:.2e}"
        lines.append(f"differs: {prompt!r}\n  plain: {a['text']!r}\n  jump:  {b['text']!r}\n  {shown}")
    with capsys.disabled():
        print(f"\n[constrained] greedy agreement with/without jump-forward: {agree}/{len(CASES)}")
        for line in lines:
            print(line)
    assert agree >= 1


def test_constraint_with_stop_string(engine) -> None:
    """A stop string inside the constrained text ends the request there (finish stop, matched = the string)."""
    out = engine.generate("List three colors: ", {"regex": r"(red|green|blue)(, (red|green|blue)){2}\.",
                                                  "stop": [","], "temperature": 0.7, "seed": 3,
                                                  "max_new_tokens": 20})
    fr = out["meta_info"]["finish_reason"]
    assert fr["type"] == "stop" and fr["matched"] == ","
    assert out["text"] in ("red", "green", "blue")
