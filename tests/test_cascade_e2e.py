"""Cascade decode end to end: the engine on the tiny Llama with the triton backend (CPU interpreter),
requests sharing a radix-cached prefix, thresholds lowered so the scheduler groups them: the cascade
kernel runs and the greedy tokens equal those of plain decode."""
from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

import sglang  # noqa: E402
from sglang.kernels import cascade_decode  # noqa: E402
from sglang.runtime.scheduler import prefix_groups  # noqa: E402

GREEDY = {"temperature": 0, "ignore_eos": True, "max_new_tokens": 3}


def prompts(n: int, shared: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix = [rng.randrange(100, 49152) for _ in range(shared)]
    return [prefix + [rng.randrange(100, 49152) for _ in range(rng.randrange(1, 6))] for _ in range(n)]


def run(path: str, batch: list[list[int]]) -> list[str]:
    with sglang.Engine(model_path=path, load_format="dummy", dtype="float32", attention_backend="triton",
                       max_total_tokens=2000, disable_cuda_graph=True, enable_cascade_decode=True) as e:
        out = e.generate(input_ids=batch, sampling_params=GREEDY)
        e.check_invariant()
    return [o["text"] for o in out]


def test_shared_prefix_decode_runs_cascade_with_plain_outputs(tiny_llama_path, monkeypatch):
    batch = prompts(5, prefix_groups.MIN_SHARED_LEN + 8)
    plain = run(tiny_llama_path, batch)  # default thresholds: 5 short rows never pay for cascade
    calls: list[int] = []
    real = cascade_decode.cascade_decode_attention

    def spy(q, *args, **kwargs):
        calls.append(q.shape[0])
        return real(q, *args, **kwargs)

    monkeypatch.setattr(cascade_decode, "cascade_decode_attention", spy)
    monkeypatch.setattr(prefix_groups, "MIN_SAVED_TOKENS", 0)
    monkeypatch.setattr(prefix_groups, "MIN_SAVED_SHARE", 0.0)
    assert run(tiny_llama_path, batch) == plain
    assert calls and max(calls) == 5  # every layer of the decode steps, all five rows in one batch
