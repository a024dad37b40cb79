"""Our model vs transformers on the same weights, and the KV-pool paths (cached prefix, decode, ragged
batches) vs one full prefill. All fp32 on CPU with the torch attention backend."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sglang.runtime.forward_batch import ForwardBatch, ForwardMode
from sglang.runtime.model_runner import ModelRunner
from sglang.runtime.server_args import ServerArgs

from conftest import TINY_LLAMA_CONFIG, TINY_QWEN2_CONFIG, make_tiny_model_dir

TOL = 1e-3  # max |Δ log-softmax| against transformers in fp32


# -- hand-built batches ---------------------------------------------------------------------------
class Seq:
    """One request's token history in a runner's pools."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.row = runner.req_to_token_pool.alloc()
        self.len = 0


def place_tokens(runner: ModelRunner, seqs: list[Seq], new_ids: list[list[int]]) -> tuple[list, list, list, list, list]:
    """KV slots for each seq's new tokens, written into its req_to_token row: (ids, positions, slot tensors,
    prefix lengths, extend lengths); each seq's length grows by its new tokens."""
    ids, pos, locs, prefix, ext = [], [], [], [], []
    for s, toks in zip(seqs, new_ids):
        slots = runner.token_kv_pool.alloc(len(toks))
        runner.req_to_token_pool.write(s.row, s.len, slots)
        ids += toks
        pos += range(s.len, s.len + len(toks))
        locs.append(slots)
        prefix.append(s.len)
        ext.append(len(toks))
        s.len += len(toks)
    return ids, pos, locs, prefix, ext


def extend(runner: ModelRunner, seqs: list[Seq], new_ids: list[list[int]], logprob_starts=None, top_ks=None):
    """One EXTEND forward: each seq gets its new tokens on top of what it already holds."""
    pool, r2t = runner.token_kv_pool, runner.req_to_token_pool
    dev = lambda x: torch.tensor(x, device=runner.device)  # noqa: E731
    ids, pos, locs, prefix, ext = place_tokens(runner, seqs, new_ids)
    starts = [sum(ext[:i]) for i in range(len(ext))]
    batch = ForwardBatch(
        mode=ForwardMode.EXTEND, batch_size=len(seqs), input_ids=dev(ids), positions=dev(pos),
        req_pool_indices=dev([s.row for s in seqs]), seq_lens=dev([s.len for s in seqs]),
        out_cache_loc=torch.cat(locs), req_to_token=r2t.req_to_token, kv_pool=pool,
        extend_prefix_lens=dev(prefix), extend_seq_lens=dev(ext),
        extend_start_loc=dev(starts), seq_lens_cpu=[s.len for s in seqs],
        extend_prefix_lens_cpu=prefix, extend_seq_lens_cpu=ext,
        return_logprob=logprob_starts is not None, extend_logprob_start_lens_cpu=logprob_starts,
        top_logprobs_nums=top_ks,
    )
    return runner.forward(batch)


def decode(runner: ModelRunner, seqs: list[Seq], next_ids: list[int]):
    pool, r2t = runner.token_kv_pool, runner.req_to_token_pool
    dev = lambda x: torch.tensor(x, device=runner.device)  # noqa: E731
    slots = pool.alloc(len(seqs))
    for s, slot in zip(seqs, slots):
        r2t.write(s.row, s.len, slot[None])
    pos = [s.len for s in seqs]
    for s in seqs:
        s.len += 1
    batch = ForwardBatch(
        mode=ForwardMode.DECODE, batch_size=len(seqs), input_ids=dev(next_ids), positions=dev(pos),
        req_pool_indices=dev([s.row for s in seqs]), seq_lens=dev([s.len for s in seqs]),
        out_cache_loc=slots, req_to_token=r2t.req_to_token, kv_pool=pool, seq_lens_cpu=[s.len for s in seqs],
    )
    return runner.forward(batch)


def all_logprobs(runner: ModelRunner, ids: list[int]) -> torch.Tensor:
    """[n, vocab] log-softmax at every position of a fresh prefill, through the public outputs: rows
    0..n-2 from the input top-logprobs with k = vocab (scattered back by id), row n-1 from next_token_logits."""
    out = extend(runner, [Seq(runner)], [ids], logprob_starts=[0], top_ks=[runner.model_config.vocab_size])
    vals, idx = out.input_top_logprobs[0]
    rows = torch.empty_like(vals).scatter_(1, idx, vals)
    last = torch.log_softmax(out.next_token_logits, dim=-1)
    return torch.cat([rows, last])


def hf_logprobs(hf_model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        x = torch.tensor([ids], device=hf_model.device)
        return torch.log_softmax(hf_model(x).logits[0].float(), dim=-1)


def amplify(runner: ModelRunner) -> ModelRunner:
    """Scale dummy weights up (x10) so the tiny model's outputs depend strongly on every input token."""
    with torch.no_grad():
        for name, p in runner.model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(10.0)
    return runner


def runner_for(path: str, device: str = "cpu", dtype: str = "float32", **kw) -> ModelRunner:
    kw.setdefault("max_total_tokens", 4096)
    kw.setdefault("max_running_requests", 8)
    return ModelRunner(ServerArgs(model_path=path, device=device, dtype=dtype, **kw))


# -- the real default model -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm(default_model_path):
    from transformers import AutoModelForCausalLM

    from sglang.runtime.tokenizer import get_tokenizer

    hf = AutoModelForCausalLM.from_pretrained(default_model_path, dtype=torch.float32, local_files_only=True).eval()
    return runner_for(default_model_path), hf, get_tokenizer(default_model_path)


PROMPTS = ["The capital of France is", "def fibonacci(n):\n    if n < 2:", "<|im_start|>user\nHi there!<|im_end|>\n"]


def test_default_model_matches_transformers(smollm):
    runner, hf, tok = smollm
    for prompt in PROMPTS:
        ids = tok(prompt).input_ids
        ours = all_logprobs(runner, ids)
        assert (ours - hf_logprobs(hf, ids)).abs().max().item() <= TOL, prompt
    ids = tok("The capital of France is").input_ids
    out = extend(runner, [Seq(runner)], [ids])
    assert tok.decode(out.next_token_logits[0].argmax()) == " Paris"


def test_default_model_ragged_batch_and_decode_match_transformers(smollm):
    runner, hf, tok = smollm
    prompts = [tok(p).input_ids for p in PROMPTS]
    seqs = [Seq(runner) for _ in prompts]
    out = extend(runner, seqs, prompts)
    nxt = out.next_token_logits.argmax(-1).tolist()
    out2 = decode(runner, seqs, nxt)
    for i, ids in enumerate(prompts):
        ref = hf_logprobs(hf, ids + [nxt[i]])
        assert (torch.log_softmax(out.next_token_logits[i], -1) - ref[-2]).abs().max() <= TOL
        assert (torch.log_softmax(out2.next_token_logits[i], -1) - ref[-1]).abs().max() <= TOL


def test_input_logprobs_contract(smollm):
    runner, hf, tok = smollm
    a, b, c = (tok(p).input_ids for p in PROMPTS)
    out = extend(runner, [Seq(runner) for _ in range(3)], [a, b, c], logprob_starts=[2, len(b) - 1, len(c)],
                 top_ks=[3, 0, 5])
    ref = hf_logprobs(hf, a)
    lp = out.input_token_logprobs[0]
    assert lp.dtype == torch.float32 and lp.shape == (len(a) - 3,)
    expected = ref[2:-1].gather(1, torch.tensor(a[3:])[:, None]).squeeze(1)
    assert (lp - expected).abs().max() <= TOL
    vals, ids = out.input_top_logprobs[0]
    assert vals.shape == ids.shape == (len(a) - 3, 3)
    assert torch.equal(ids[:, 0], ref[2:-1].argmax(-1))
    assert out.input_token_logprobs[1].numel() == 0 and out.input_top_logprobs[1] is None  # s == e - 1
    assert out.input_token_logprobs[2] is None and out.input_top_logprobs[2] is None  # s >= e: none wanted
    no_lp = extend(runner, [Seq(runner)], [a])
    assert no_lp.input_token_logprobs is None
    assert torch.allclose(no_lp.next_token_logits, out.next_token_logits[:1], atol=1e-4)


# -- tiny configs with seeded random weights, saved by transformers --------------------------------
def save_hf_tiny(tmp_path: Path, config: dict, tokenizer_src: str, seed: int = 0, **save_kw) -> tuple[str, object]:
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(make_tiny_model_dir(tmp_path, config, tokenizer_src))
    torch.manual_seed(seed)
    hf_cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32).eval()
    # HF's init (std 0.02, unit norms) gives near-uniform next-token distributions, where a wrong rope or
    # mask changes log-probs by < 1e-3; larger weights make every component matter (spread ~1.6 nats)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 1.0 if "embed_tokens" in name else 0.2)
    model.save_pretrained(str(folder), **save_kw)
    return str(folder), model


QWEN_IDS = [1, 504, 3458, 282, 4649, 314, 17, 28, 9, 3001, 12, 7, 700, 11, 4]


def test_qwen2_matches_transformers_sharded(tmp_path, default_model_path):
    folder, hf = save_hf_tiny(tmp_path, TINY_QWEN2_CONFIG, default_model_path, max_shard_size="2MB")
    assert (Path(folder) / "model.safetensors.index.json").is_file()  # sharded checkpoint path is exercised
    runner = runner_for(folder)
    assert runner.model_config.attention_bias and runner.model.lm_head is None
    assert (all_logprobs(runner, QWEN_IDS) - hf_logprobs(hf, QWEN_IDS)).abs().max() <= TOL


@pytest.mark.parametrize("arch", ["llama3_rope", "mistral", "qwen3"])
def test_llama3_rope_mistral_qwen3_match_transformers(tmp_path, default_model_path, arch):
    cfg = dict(TINY_LLAMA_CONFIG)
    if arch == "qwen3":
        cfg.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32, tie_word_embeddings=True,
                   rope_theta=1000000.0, rms_norm_eps=1e-6)
    elif arch == "llama3_rope":
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
        cfg["rope_theta"] = 500000.0
    else:
        cfg.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None,
                   tie_word_embeddings=True, head_dim=32)  # head_dim != hidden / heads
    folder, hf = save_hf_tiny(tmp_path, cfg, default_model_path, seed=1)
    runner = runner_for(folder)
    if arch == "llama3_rope":
        assert runner.model_config.rope_scaling.rope_type == "llama3"
    else:
        assert runner.model_config.head_dim == 32
    assert runner.model_config.qk_norm == (arch == "qwen3")
    ids = [int(x) for x in torch.randint(3, 49152, (300,), generator=torch.Generator().manual_seed(0))]
    assert (all_logprobs(runner, ids) - hf_logprobs(hf, ids)).abs().max() <= TOL


def test_cached_prefix_and_decode_equal_full_prefill(tiny_llama_path):
    runner = amplify(runner_for(tiny_llama_path, load_format="dummy"))
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(3, 49152, (20,), generator=gen).tolist()
    b = torch.randint(3, 49152, (13,), generator=gen).tolist()
    full_a, full_b = all_logprobs(runner, a), all_logprobs(runner, b)
    assert full_a.std(-1).min() > 0.5  # outputs are far from uniform, so 1e-4 is a strict bound
    sa, sb = Seq(runner), Seq(runner)
    # a: prefill 7, then extend 9 on the cached prefix together with b's first 10 tokens (ragged batch)
    out1 = extend(runner, [sa], [a[:7]])
    out2 = extend(runner, [sa, sb], [a[7:16], b[:10]])
    got = [(out1.next_token_logits[0], full_a[6]), (out2.next_token_logits[0], full_a[15]),
           (out2.next_token_logits[1], full_b[9])]
    # then decode the rest of both, one token per step, in one batch
    for step in range(3):
        out = decode(runner, [sa, sb], [a[16 + step], b[10 + step]])
        got += [(out.next_token_logits[0], full_a[16 + step]), (out.next_token_logits[1], full_b[10 + step])]
    for ours, ref in got:
        assert (torch.log_softmax(ours, -1) - ref).abs().max() <= 1e-4


def test_chunked_input_logprobs_stitch_to_full(tiny_qwen2_path):
    runner = amplify(runner_for(tiny_qwen2_path, load_format="dummy"))
    ids = torch.randint(3, 49152, (12,), generator=torch.Generator().manual_seed(5)).tolist()
    full = extend(runner, [Seq(runner)], [ids], logprob_starts=[0]).input_token_logprobs[0]
    s = Seq(runner)
    c1 = extend(runner, [s], [ids[:5]], logprob_starts=[0])
    c2 = extend(runner, [s], [ids[5:]], logprob_starts=[0])
    boundary = torch.log_softmax(c1.next_token_logits[0], -1)[ids[5]][None]
    stitched = torch.cat([c1.input_token_logprobs[0], boundary, c2.input_token_logprobs[0]])
    assert stitched.shape == full.shape == (11,)
    assert (stitched - full).abs().max() <= 1e-4


# -- dummy weights, pools, errors ------------------------------------------------------------------
def test_dummy_weights_deterministic_per_seed(tiny_qwen2_path):
    ids = list(range(100, 110))

    def logits(seed: int) -> torch.Tensor:
        r = runner_for(tiny_qwen2_path, load_format="dummy", random_seed=seed)
        return extend(r, [Seq(r)], [ids]).next_token_logits

    a, b, c = logits(0), logits(0), logits(1)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.allclose(a, c)


def test_pool_sizing(tiny_llama_path):
    r = runner_for(tiny_llama_path, load_format="dummy", max_total_tokens=333, max_running_requests=4)
    assert r.max_total_num_tokens == r.token_kv_pool.size == 333
    assert r.req_to_token_pool.size >= 4 and r.req_to_token_pool.max_context_len > r.model_config.context_len
    d = ModelRunner(ServerArgs(model_path=tiny_llama_path, load_format="dummy", device="cpu", context_length=256,
                               max_running_requests=4))
    assert d.dtype == torch.float32 and d.model_config.context_len == 256
    assert d.max_total_num_tokens == 256 * 4  # CPU default: 4 full contexts
    assert type(d.attn_backend).__name__ == "TorchAttentionBackend"


def test_load_errors(tmp_path, default_model_path):
    bad = dict(TINY_LLAMA_CONFIG, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    with pytest.raises(ValueError, match="unsupported model architecture.*LlamaForCausalLM"):
        runner_for(make_tiny_model_dir(tmp_path / "gpt2", bad, None), load_format="dummy")
    with pytest.raises(ValueError, match="no weights"):
        runner_for(make_tiny_model_dir(tmp_path / "empty", TINY_LLAMA_CONFIG, None))
    # weights that do not fit the config: a clear error naming the tensor
    folder, _ = save_hf_tiny(tmp_path / "q", TINY_QWEN2_CONFIG, default_model_path)
    cfg = json.loads((Path(folder) / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (Path(folder) / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"checkpoint tensor 'model.layers.0.mlp.*has shape"):
        runner_for(folder)


def test_attention_backend_choice_errors(monkeypatch):
    from types import SimpleNamespace

    from sglang.runtime.attention import create_attention_backend, default_backend_name

    cpu = SimpleNamespace(device=torch.device("cpu"))
    assert default_backend_name(torch.device("cpu")) == "torch"
    assert default_backend_name(torch.device("cuda")) in ("flashinfer", "triton")
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        create_attention_backend("xformers", cpu)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="'flashinfer' needs a CUDA device"):
        create_attention_backend("flashinfer", cpu)
    with pytest.raises(ValueError, match="'triton' needs a CUDA device"):
        create_attention_backend("triton", cpu)
