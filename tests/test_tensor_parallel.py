"""Tensor parallelism on CPU (gloo): tp=2 computes tp=1's function (same dummy weights), errors, shutdown."""
from __future__ import annotations

import functools
import os
import time

import pytest

from sglang.runtime.engine import Engine

from server_helpers import child_pids

PROMPTS = [[1, 5, 9, 200, 31], [7, 7, 3], [100, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
PARAMS = {"max_new_tokens": 8, "temperature": 0.0, "ignore_eos": True}


def _run(path: str, tp: int, **kw) -> list[dict]:
    engine = Engine(model_path=path, load_format="dummy", device="cpu", dtype="float32", tp_size=tp,
                    max_total_tokens=2048, **kw)
    try:
        return engine.generate(input_ids=PROMPTS, sampling_params=PARAMS, return_logprob=True, logprob_start_len=0)
    finally:
        engine.shutdown()


@functools.lru_cache(maxsize=None)
def _tp1(path: str) -> list[dict]:
    return _run(path, 1)


def _assert_same(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b):
        ox, oy = x["meta_info"]["output_token_logprobs"], y["meta_info"]["output_token_logprobs"]
        assert [t[1] for t in ox] == [t[1] for t in oy]
        assert max(abs(p[0] - q[0]) for p, q in zip(ox, oy)) < 1e-4
        ix, iy = x["meta_info"]["input_token_logprobs"][1:], y["meta_info"]["input_token_logprobs"][1:]
        assert max(abs(p[0] - q[0]) for p, q in zip(ix, iy)) < 1e-4


@pytest.mark.parametrize("fixture", ["tiny_llama_path", "tiny_qwen2_path"])
def test_tp2_equals_tp1(fixture, request):
    path = request.getfixturevalue(fixture)
    _assert_same(_tp1(path), _run(path, 2))
    assert not _tp_children()


def test_tp2_scheduler_process_equals_tp1(tiny_llama_path):
    _assert_same(_tp1(tiny_llama_path), _run(tiny_llama_path, 2, scheduler_process=True))
    assert not _tp_children()


def test_workers_exit_when_rank0_dies(tiny_llama_path):
    engine = Engine(model_path=tiny_llama_path, load_format="dummy", device="cpu", dtype="float32", tp_size=2,
                    max_total_tokens=2048, scheduler_process=True)
    try:
        workers = [p.pid for p in engine._tp_workers.procs]
        engine.scheduler.proc.kill()  # rank 0 (the scheduler process) dies without a stop message
        deadline = time.time() + 20
        while any(p.is_alive() for p in engine._tp_workers.procs) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(p.is_alive() for p in engine._tp_workers.procs), workers
    finally:
        engine.shutdown()
    assert not _tp_children()


def test_tp_size_must_divide_heads(tiny_llama_path):
    with pytest.raises(ValueError, match="tp_size=3"):
        Engine(model_path=tiny_llama_path, load_format="dummy", device="cpu", tp_size=3)
    assert not _tp_children()


def _tp_children() -> list[int]:
    """Live children of this process, but multiprocessing's resource tracker (spawned once, kept by design)."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    tracker = resource_tracker._resource_tracker._pid
    deadline = time.time() + 10
    while True:
        pids = [p for p in child_pids(os.getpid()) if p != tracker]
        if not pids or time.time() > deadline:
            return pids
        time.sleep(0.1)


def test_checkpoint_slices_equal_dummy_shards(tiny_qwen2_path, tmp_path):
    """A tp=1 model saved as an HF checkpoint loads, per rank, into exactly the dummy init's tp=2 shards."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from sglang.runtime.distributed import tp_context
    from sglang.runtime.model_config import ModelConfig
    from sglang.runtime.model_loader.loader import load_model

    cfg = ModelConfig.from_path(tiny_qwen2_path)
    full = load_model(cfg, torch.float32, torch.device("cpu"), "dummy", seed=3)
    state = {}
    for name, p in full.named_parameters():  # un-fuse into the checkpoint's names
        offsets = getattr(p, "shard_offsets", None)
        if offsets is None:
            state[name] = p.data.clone()
            continue
        for ckpt, ours, shard in full.stacked_params:
            if ours in name and shard in offsets:
                start, size = offsets[shard]
                state[name.replace(ours, ckpt)] = p.data.narrow(0, start, size).clone()
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_qwen2_path, folder)
    save_file(state, str(folder / "model.safetensors"))
    cfg = ModelConfig.from_path(str(folder))
    for rank in range(2):
        with tp_context(rank, 2):
            loaded = dict(load_model(cfg, torch.float32, torch.device("cpu"), "auto").named_parameters())
            dummy = dict(load_model(cfg, torch.float32, torch.device("cpu"), "dummy", seed=3).named_parameters())
        assert loaded["model.layers.0.self_attn.qkv_proj.weight"].shape[0] == (cfg.q_size + 2 * cfg.kv_size) // 2
        for name, p in loaded.items():
            assert torch.equal(p, dummy[name]), name
