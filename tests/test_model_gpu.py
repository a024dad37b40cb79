"""The model runner on CUDA (skipped without a GPU): every attention backend and the Triton element-wise
ops against transformers on the same weights, CUDA-graph decode against eager, and a dummy load of a
real-size config. CPU CI skips these; run them on a GPU machine with `pytest -m gpu tests/test_model_gpu.py`."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import TINY_LLAMA_CONFIG, TINY_QWEN2_CONFIG
from test_model_runner import Seq, all_logprobs, amplify, decode, extend, hf_logprobs, runner_for, save_hf_tiny

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BACKENDS = ["torch", "triton"] + (["flashinfer"] if importlib.util.find_spec("flashinfer") else [])
IDS = torch.randint(3, 49152, (200,), generator=torch.Generator().manual_seed(0)).tolist()


TINY_QWEN3_CONFIG = dict(TINY_QWEN2_CONFIG, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32)
# head_dim 64: a size FlashInfer's Hopper kernels take, so that backend is compared too
TINY_QWEN3_HD64_CONFIG = dict(TINY_QWEN3_CONFIG, head_dim=64)
CONFIGS = {"qwen2": TINY_QWEN2_CONFIG, "qwen3": TINY_QWEN3_CONFIG, "qwen3-hd64": TINY_QWEN3_HD64_CONFIG}


def skip_if_refused(backend: str, dtype: torch.dtype, head_dim: int) -> None:
    """Skip the combinations a backend refuses by design (asked of the backend itself, not listed here)."""
    if backend == "flashinfer":
        from sglang.runtime.attention.flashinfer_backend import check_supported

        try:
            check_supported(dtype, head_dim)
        except ValueError as e:
            pytest.skip(str(e))


def head_dim_of(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


@pytest.fixture(scope="module", params=list(CONFIGS))
def qwen_hf(tmp_path_factory, request):
    cfg = CONFIGS[request.param]
    folder, hf = save_hf_tiny(tmp_path_factory.mktemp(request.param), cfg, None)
    return folder, hf.cuda(), head_dim_of(cfg)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_matches_transformers(qwen_hf, backend):
    folder, hf, head_dim = qwen_hf
    skip_if_refused(backend, torch.float32, head_dim)
    runner = runner_for(folder, device="cuda", attention_backend=backend, disable_cuda_graph=True)
    ref = hf_logprobs(hf, IDS)
    # TF32 matmuls are off by default in torch, so fp32 should agree closely
    assert (all_logprobs(runner, IDS) - ref).abs().max().item() <= 2e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_close_to_fp32(qwen_hf, backend):
    folder, hf, head_dim = qwen_hf
    skip_if_refused(backend, torch.bfloat16, head_dim)
    runner = runner_for(folder, device="cuda", dtype="bfloat16", attention_backend=backend, disable_cuda_graph=True)
    ours = all_logprobs(runner, IDS)
    ref = hf_logprobs(hf, IDS)
    # bf16 has ~3 significant digits: compare the distributions, not bits
    assert torch.isfinite(ours).all()
    agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_cuda_graph_decode_equals_eager(tiny_llama_gpu_path, backend):
    skip_if_refused(backend, torch.float32, head_dim_of(TINY_LLAMA_GPU_CONFIG))
    eager = amplify(runner_for(tiny_llama_gpu_path, device="cuda", load_format="dummy", attention_backend=backend,
                               disable_cuda_graph=True))
    graph = amplify(runner_for(tiny_llama_gpu_path, device="cuda", load_format="dummy", attention_backend=backend,
                               cuda_graph_max_bs=8))
    assert graph.cuda_graph_runner is not None and eager.cuda_graph_runner is None
    prompts = [IDS[:17], IDS[20:25], IDS[40:73]]
    results = []
    for r in (eager, graph):
        seqs = [Seq(r) for _ in prompts]
        outs = [extend(r, seqs, prompts).next_token_logits]
        nxt = outs[0].argmax(-1).tolist()
        for _ in range(4):
            outs.append(decode(r, seqs, nxt).next_token_logits)
            nxt = outs[-1].argmax(-1).tolist()
        results.append(torch.stack(outs))
    assert (results[0] - results[1]).abs().max().item() <= 1e-3


TINY_LLAMA_GPU_CONFIG = dict(TINY_LLAMA_CONFIG, head_dim=64)


@pytest.fixture(scope="module")
def tiny_llama_gpu_path(tmp_path_factory):
    from conftest import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("llama"), TINY_LLAMA_GPU_CONFIG, None)


def test_dummy_real_size_config(tmp_path):
    """Llama-3.2-1B's shapes with dummy weights: loads on the GPU, sizes the pool, gives finite logits."""
    from conftest import make_tiny_model_dir

    cfg = dict(TINY_LLAMA_CONFIG, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
               max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True,
               rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    folder = make_tiny_model_dir(tmp_path, cfg, None)
    runner = runner_for(folder, device="cuda", dtype="auto", load_format="dummy", max_total_tokens=None,
                        context_length=8192, mem_fraction_static=0.5)
    assert runner.dtype == torch.bfloat16 and runner.max_total_num_tokens > 10000
    out = extend(runner, [Seq(runner)], [IDS[:100]])
    assert out.next_token_logits.shape == (1, 128256) and torch.isfinite(out.next_token_logits).all()


@pytest.mark.skipif(not importlib.util.find_spec("flashinfer"), reason="needs flashinfer")
def test_flashinfer_prefill_warm_up_compiles_and_runs_off_the_main_thread():
    """The triton backend's warm-up thread (it hands large extends to FlashInfer only once this finished)."""
    import threading
    from types import SimpleNamespace

    from sglang.runtime.attention.flashinfer_backend import FlashInferAttentionBackend

    runner = SimpleNamespace(model_config=SimpleNamespace(num_heads=8, head_dim=64), dtype=torch.bfloat16,
                             device="cuda", tp_size=1)
    backend = FlashInferAttentionBackend(runner)
    errors: list = []

    def warm() -> None:
        try:
            backend.warm_up_ragged_prefill(2, 64, torch.bfloat16)
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=warm)
    t.start()
    t.join(600)
    assert not t.is_alive() and not errors, errors
