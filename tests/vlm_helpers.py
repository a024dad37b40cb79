"""Tiny random LLaVA / LLaVA-NeXT / LLaVA-NeXT-Video models built with transformers and saved as HF folders,
and a driver that runs OUR model on them through a ModelRunner's pools with multimodal items (what the
scheduler will do once it is wired), without the scheduler."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from test_model_runner import Seq, place_tokens  # noqa: F401  (Seq: re-exported to the VLM tests)

from sglang.runtime.forward_batch import ForwardBatch, ForwardMode
from sglang.runtime.model_runner import ModelRunner
from sglang.runtime.multimodal.inputs import MultimodalItem
from sglang.runtime.server_args import ServerArgs

VOCAB = 256
IMAGE_TOKEN, VIDEO_TOKEN = 250, 251
CROP = 56  # px: a 4x4 grid of 14-px patches per crop
PINPOINTS = [[56, 112], [112, 56], [112, 112], [56, 168]]


def vision_config(kind: str = "clip"):
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=CROP, patch_size=14)
    return CLIPVisionConfig(projection_dim=16, **common) if kind == "clip" else SiglipVisionConfig(**common)


def text_config(kind: str = "llama", vocab: int = VOCAB):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[kind]
    return cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=1024, rms_norm_eps=1e-5)


def build_hf(kind: str, folder: Path, vision: str = "clip", text: str = "llama", seed: int = 0,
             vocab: int = VOCAB, image_token: int = IMAGE_TOKEN, **extra):
    """A random HF model of `kind` (llava | llava_next | llava_next_video), saved to `folder`; returns it."""
    import transformers as tf

    cfg_cls, model_cls = {
        "llava": (tf.LlavaConfig, tf.LlavaForConditionalGeneration),
        "llava_next": (tf.LlavaNextConfig, tf.LlavaNextForConditionalGeneration),
        "llava_next_video": (tf.LlavaNextVideoConfig, tf.LlavaNextVideoForConditionalGeneration),
    }[kind]
    kw = dict(vision_config=vision_config(vision), text_config=text_config(text, vocab), image_token_id=image_token,
              **extra)
    if kind != "llava":
        kw["image_grid_pinpoints"] = PINPOINTS
    if kind == "llava_next_video":
        kw["video_token_id"] = VIDEO_TOKEN
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**kw)).eval()
    with torch.no_grad():  # larger weights than HF's init: outputs then depend strongly on every input
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(4.0)
    model.save_pretrained(folder)
    return model


def runner_for(path: str) -> ModelRunner:
    return ModelRunner(ServerArgs(model_path=path, device="cpu", dtype="float32", max_total_tokens=4096,
                                  max_running_requests=8))


def forward(runner: ModelRunner, seqs: list[Seq], new_ids: list[list[int]],
            mm: Optional[list[Optional[list[MultimodalItem]]]] = None, all_logprobs: bool = False):
    """One forward (EXTEND, or DECODE when every request adds one token and there are no items) of our
    model with multimodal items, as the runtime will call it: attention metadata, model, logits."""
    pool, r2t = runner.token_kv_pool, runner.req_to_token_pool
    dev = lambda x: torch.tensor(x, device=runner.device)  # noqa: E731
    ids, pos, locs, prefix, ext = place_tokens(runner, seqs, new_ids)
    decode = mm is None and all(n == 1 for n in ext) and all(p > 0 for p in prefix) and not all_logprobs
    batch = ForwardBatch(
        mode=ForwardMode.DECODE if decode else ForwardMode.EXTEND, batch_size=len(seqs), input_ids=dev(ids),
        positions=dev(pos), req_pool_indices=dev([s.row for s in seqs]), seq_lens=dev([s.len for s in seqs]),
        out_cache_loc=torch.cat(locs), req_to_token=r2t.req_to_token, kv_pool=pool,
        seq_lens_cpu=[s.len for s in seqs],
    )
    if not decode:
        batch.extend_prefix_lens, batch.extend_seq_lens = dev(prefix), dev(ext)
        batch.extend_start_loc = dev([sum(ext[:i]) for i in range(len(ext))])
        batch.extend_prefix_lens_cpu, batch.extend_seq_lens_cpu = prefix, ext
        if all_logprobs:
            batch.return_logprob, batch.extend_logprob_start_lens_cpu = True, [0] * len(seqs)
            batch.top_logprobs_nums = [runner.model_config.vocab_size] * len(seqs)
    with torch.inference_mode():
        runner.attn_backend.init_forward_metadata(batch)
        hidden = runner.model(batch.input_ids, batch.positions, batch, mm_items=mm)
        return runner.logits_processor(hidden, runner.model.lm_head_weight, batch)


def all_logprobs(runner: ModelRunner, ids: list[int], items: list[MultimodalItem]) -> torch.Tensor:
    """[n, vocab] log-softmax at every position of one fresh prefill with `items`."""
    out = forward(runner, [Seq(runner)], [ids], [items], all_logprobs=True)
    vals, idx = out.input_top_logprobs[0]
    rows = torch.empty_like(vals).scatter_(1, idx, vals)
    return torch.cat([rows, torch.log_softmax(out.next_token_logits, dim=-1)])


def greedy(runner: ModelRunner, ids: list[int], items: list[MultimodalItem], n: int) -> list[int]:
    """n greedy tokens: one prefill with the items, then text-only decode steps over the KV pool."""
    seq = Seq(runner)
    out = forward(runner, [seq], [ids], [items])
    toks = [int(out.next_token_logits[0].argmax())]
    while len(toks) < n:
        out = forward(runner, [seq], [[toks[-1]]])
        toks.append(int(out.next_token_logits[0].argmax()))
    return toks


# -- a tiny LLaVA the whole runtime can serve (Engine, server, frontend): SmolLM2's tokenizer + "<image>" ----
def build_servable_llava(folder: Path, tokenizer_src: str, seed: int = 0):
    """(the HF model, the image token id) of the package's tiny random llava-1.5 saved in `folder`."""
    from sglang.runtime.multimodal.tiny import build_tiny_llava

    return build_tiny_llava(folder, tokenizer_src, seed)


def make_image(color: tuple[int, int, int], size: tuple[int, int] = (40, 60)):
    """A small RGB PIL image: a colour with a diagonal gradient (so crops differ from a flat fill)."""
    import numpy as np
    from PIL import Image

    h, w = size
    grad = np.add.outer(np.arange(h), np.arange(w)) * 2 % 256
    arr = np.stack([(grad // 2 + c) % 256 for c in color], axis=-1).astype(np.uint8)
    return Image.fromarray(arr)


def write_video(path, frames: int = 10) -> None:
    """An mpeg4 file of `frames` 64x48 frames, frame i a flat grey of level i*25 (skips without PyAV)."""
    import numpy as np
    import pytest

    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 25, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
