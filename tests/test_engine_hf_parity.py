"""Greedy generation through the Engine equals transformers' greedy `generate`, token for token,
on the default model (SmolLM2-135M-Instruct), with several prompts batched together."""
from __future__ import annotations

import pytest
import torch

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
]
NEW_TOKENS = 32


@pytest.mark.slow
def test_greedy_matches_transformers_generate(default_model_path, default_engine):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(default_model_path, local_files_only=True, dtype=torch.float32)
    model.eval()
    model.generation_config.eos_token_id = None  # run the full 32 tokens, as ignore_eos does
    expected = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=tok.eos_token_id)
        expected.append((ids[0].tolist(), out[0, ids.shape[1]:].tolist()))
    del model

    outs = default_engine.generate(  # the shared CPU fp32 engine (tests/conftest.py)
        input_ids=[ids for ids, _ in expected],
        sampling_params={"max_new_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True},
        return_logprob=True,
    )
    default_engine.check_invariant()
    for (prompt_ids, want), out in zip(expected, outs):
        got = [t for _, t, _ in out["meta_info"]["output_token_logprobs"]]
        assert got == want, f"prompt {tok.decode(prompt_ids)!r}: {tok.decode(got)!r} != {tok.decode(want)!r}"
        assert out["text"] == tok.decode(want, skip_special_tokens=True)
