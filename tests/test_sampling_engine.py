"""Sampling through the Engine: per-request params in one mixed batch, seeds, n, stop strings / ids,
min_new_tokens, ignore_eos, and reported logprobs against the model's own logits.

Most tests use the tiny dummy-weight Llama (fast, near-random distributions); the ones where meaning
matters (EOS, logprobs vs transformers) use the default model, SmolLM2-135M-Instruct.
"""
from __future__ import annotations

import pytest
import torch

import sglang

CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2? Answer with one number.<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    with sglang.Engine(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=8000) as e:
        yield e


def out_ids(out: dict) -> list[int]:
    return [t for _, t, _ in out["meta_info"]["output_token_logprobs"]]


MIXED = [
    {"temperature": 0},
    {"temperature": 0.8, "top_p": 0.9, "seed": 11},
    {"temperature": 1.2, "top_k": 5, "frequency_penalty": 0.7, "seed": 12},
    {"temperature": 0, "repetition_penalty": 1.5},
    {"min_p": 0.2, "presence_penalty": -0.5, "seed": 13},
    {"temperature": 0.5, "seed": 14, "min_new_tokens": 4, "stop_token_ids": [100]},
]


def test_mixed_batch_equals_each_request_alone(engine):
    prompts = ["alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota", "kappa"]
    sps = [{"max_new_tokens": 12, "ignore_eos": True, **p} for p in MIXED]
    batch = engine.generate(prompts, sps, return_logprob=True)
    for prompt, sp, b in zip(prompts, sps, batch):
        alone = engine.generate(prompt, sp, return_logprob=True)
        assert out_ids(alone) == out_ids(b), sp
        assert alone["text"] == b["text"]
        for (x, _, _), (y, _, _) in zip(alone["meta_info"]["output_token_logprobs"],
                                        b["meta_info"]["output_token_logprobs"]):
            assert x == pytest.approx(y, abs=1e-4)
    engine.check_invariant()


def test_seed_reproducible_and_distinct(engine):
    sp = {"max_new_tokens": 16, "ignore_eos": True, "temperature": 1.0}
    a = engine.generate("seeded", {**sp, "seed": 1}, return_logprob=True)
    b = engine.generate("seeded", {**sp, "seed": 1}, return_logprob=True)
    c = engine.generate("seeded", {**sp, "seed": 2}, return_logprob=True)
    assert out_ids(a) == out_ids(b) and a["text"] == b["text"]
    assert out_ids(a) != out_ids(c)


def test_n_samples(engine):
    greedy = engine.generate("many", {"max_new_tokens": 8, "n": 3, "temperature": 0, "ignore_eos": True})
    assert len(greedy) == 3 and len({o["text"] for o in greedy}) == 1
    sampled = engine.generate("many", {"max_new_tokens": 8, "n": 3, "ignore_eos": True}, return_logprob=True)
    assert len(sampled) == 3 and len({tuple(out_ids(o)) for o in sampled}) == 3


def test_n_samples_seeded(engine):
    sp = {"max_new_tokens": 8, "n": 3, "seed": 5, "ignore_eos": True}
    first = engine.generate("many", sp, return_logprob=True)
    again = engine.generate("many", sp, return_logprob=True)
    assert [out_ids(o) for o in first] == [out_ids(o) for o in again]
    assert len({tuple(out_ids(o)) for o in first}) == 3  # each sample has its own stream


def _boundary_stop(engine, prompt: str) -> tuple[dict, str]:
    """A greedy run and a stop string that spans two of its output tokens' texts."""
    ref = engine.generate(prompt, {"max_new_tokens": 24, "temperature": 0, "ignore_eos": True},
                          return_logprob=True, return_text_in_logprobs=True)
    pieces = [t for _, _, t in ref["meta_info"]["output_token_logprobs"]]
    for k in range(3, len(pieces) - 1):
        a, b = pieces[k], pieces[k + 1]
        if len(a) >= 2 and len(b) >= 2 and "\ufffd" not in a + b:
            stop = a[-2:] + b[:2]
            if ref["text"].find(stop) > 0:
                return ref, stop
    pytest.skip("no suitable token boundary in this output")


def test_stop_string_across_tokens_trimmed_and_never_streamed(engine):
    ref, stop = _boundary_stop(engine, "stop strings")
    sp = {"max_new_tokens": 24, "temperature": 0, "ignore_eos": True, "stop": [stop, "\x00never"]}
    out = engine.generate("stop strings", sp)
    want = ref["text"][: ref["text"].find(stop)]
    assert out["text"] == want
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    chunks = list(engine.generate("stop strings", sp, stream=True))
    assert chunks[-1]["text"] == want
    assert all(stop not in c["text"] and want.startswith(c["text"]) for c in chunks)
    kept = engine.generate("stop strings", {**sp, "no_stop_trim": True})
    assert kept["text"] == want + stop


def test_stop_token_ids_and_min_new_tokens(engine):
    ref = engine.generate("stop ids", {"max_new_tokens": 16, "temperature": 0, "ignore_eos": True},
                          return_logprob=True)
    ids = out_ids(ref)
    target = ids[5]
    first = ids.index(target)
    out = engine.generate("stop ids", {"max_new_tokens": 16, "temperature": 0, "stop_token_ids": [target]},
                          return_logprob=True)
    assert out_ids(out) == ids[: first + 1]
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": target}
    assert out["meta_info"]["completion_tokens"] == first + 1
    # min_new_tokens: the stop id cannot be sampled before 8 tokens exist
    late = engine.generate("stop ids", {"max_new_tokens": 16, "temperature": 0, "stop_token_ids": [target],
                                        "min_new_tokens": 8}, return_logprob=True)
    got = out_ids(late)
    assert len(got) >= 8 and target not in got[:7]


def test_logit_bias_through_engine(engine):
    out = engine.generate("bias", {"max_new_tokens": 4, "temperature": 0, "logit_bias": {"500": 100}},
                          return_logprob=True)
    assert out_ids(out) == [500] * 4
    with pytest.raises(ValueError, match="logit_bias"):
        engine.generate("bias", {"logit_bias": {"49152": 1}})


@pytest.fixture
def real_engine(default_engine):
    """The session's shared default-model engine (CPU, fp32); left idle after each test."""
    yield default_engine
    default_engine.check_invariant()


@pytest.mark.slow
def test_eos_and_ignore_eos_on_real_model(real_engine):
    sp = {"max_new_tokens": 24, "temperature": 0}
    out = real_engine.generate(CHAT, sp, return_logprob=True)
    eos = real_engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert out["meta_info"]["finish_reason"] == {"type": "stop", "matched": eos}
    n = out["meta_info"]["completion_tokens"]
    assert n < 24 and out_ids(out)[-1] == eos and "<|im_end|>" not in out["text"] and "4" in out["text"]
    more = real_engine.generate(CHAT, {**sp, "ignore_eos": True}, return_logprob=True)
    assert more["meta_info"]["completion_tokens"] == 24
    assert more["meta_info"]["finish_reason"]["type"] == "length"
    assert out_ids(more)[:n] == out_ids(out)  # same greedy path up to the EOS
    # min_new_tokens pushes the EOS past the point where it came before
    longer = real_engine.generate(CHAT, {**sp, "min_new_tokens": n + 2}, return_logprob=True)
    assert eos not in out_ids(longer)[: n + 1] and longer["meta_info"]["completion_tokens"] >= n + 2


@pytest.mark.slow
def test_logprobs_are_log_softmax_of_raw_logits(real_engine, default_model_path):
    from transformers import AutoModelForCausalLM

    prompt_ids = real_engine.tokenizer.encode(CHAT)
    sp = {"max_new_tokens": 10, "temperature": 0.7, "top_k": 20, "repetition_penalty": 1.3, "seed": 3,
          "ignore_eos": True}
    out = real_engine.generate(input_ids=prompt_ids, sampling_params=sp, return_logprob=True, top_logprobs_num=3)
    got = out["meta_info"]["output_token_logprobs"]
    ids = [t for _, t, _ in got]
    model = AutoModelForCausalLM.from_pretrained(default_model_path, local_files_only=True, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids])).logits[0].float()
    ref = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    for k, (lp, t, _) in enumerate(got):
        assert lp == pytest.approx(ref[k, t].item(), abs=2e-3), k  # raw logits: no temperature/penalty
        top = out["meta_info"]["output_top_logprobs"][k]
        vals, idx = ref[k].topk(3)
        assert [t for _, t, _ in top] == idx.tolist()
        assert [v for v, _, _ in top] == pytest.approx(vals.tolist(), abs=2e-3)
