"""Image-QA throughput of a vision-language model: our Engine against transformers `generate` in the same
run (issue 15's target: >= 5x on an H200 at llava-1.5-7b shapes with dummy weights).

Each request is one image (a distinct random 640x480 picture) + a 64-token question, 64 tokens out
(ignore_eos: every request generates all 64). Prompts go in as input_ids (the benchmark model pairs the
published config with SmolLM2's tokenizer, whose ids do not fit llava's vocabulary). Ours: all requests
at once through Engine.generate (continuous batching; preprocessing in the engine's worker pool).
transformers: `generate` over batches of --hf-batch with the same pixels and the expanded prompt ids.
Afterwards the first image is sent again with another question: the cached prompt tokens must include
its 576 image tokens.

    python benchmarks/bench_vlm.py --out vlm.json                         # llava-1.5-7b shapes, dummy weights
    python benchmarks/bench_vlm.py --model-path DIR --device cpu --dtype float32 --requests 4   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

QUESTION_TOKENS = 64
OUTPUT_TOKENS = 64


def make_images(n: int, seed: int = 0) -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(n)]


def make_prompts(n: int, image_token: int, seed: int = 1) -> list[list[int]]:
    """BOS, the image placeholder, then a random 64-token question (ids of ordinary text tokens)."""
    rng = np.random.default_rng(seed)
    return [[1, image_token] + rng.integers(100, 30000, QUESTION_TOKENS).tolist() for _ in range(n)]


def bench_ours(args: argparse.Namespace, prompts: list[list[int]], images: list[Any]) -> dict[str, Any]:
    from sglang.runtime.engine import Engine

    engine = Engine(model_path=args.model_path, load_format=args.load_format, device=args.device, dtype=args.dtype)
    try:
        sp = {"max_new_tokens": OUTPUT_TOKENS, "temperature": 0, "ignore_eos": True}
        engine.generate(input_ids=prompts[:2], sampling_params=sp, image_data=images[:2])  # warm-up
        engine.flush_cache()
        start = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=sp, image_data=images)
        elapsed = time.perf_counter() - start
        image_tokens = engine.multimodal.processor.process_image(images[0]).num_tokens
        again = engine.generate(input_ids=[prompts[0][:2] + prompts[1][2:]], sampling_params=sp,
                                image_data=[images[0]])[0]
        return {
            "requests_per_s": len(prompts) / elapsed, "seconds": elapsed,
            "output_tokens": sum(o["meta_info"]["completion_tokens"] for o in outs),
            "prompt_tokens": outs[0]["meta_info"]["prompt_tokens"], "image_tokens": image_tokens,
            "same_image_cached_tokens": again["meta_info"]["cached_tokens"],
            "same_image_hits_cache": again["meta_info"]["cached_tokens"] >= 1 + image_tokens,
        }
    finally:
        engine.shutdown()


def hf_model(args: argparse.Namespace):
    """transformers' Llava: the folder's weights if it has any, else random ones of the config's shapes."""
    import os

    import transformers as tf

    dtype = getattr(torch, args.dtype)
    has_weights = any(f.endswith((".safetensors", ".bin")) for f in os.listdir(args.model_path))
    if has_weights:
        model = tf.LlavaForConditionalGeneration.from_pretrained(args.model_path, torch_dtype=dtype)
    else:
        cfg = tf.AutoConfig.from_pretrained(args.model_path)
        with torch.device(args.device):
            model = tf.LlavaForConditionalGeneration._from_config(cfg, torch_dtype=dtype)
    return model.to(args.device).eval()


def bench_hf(args: argparse.Namespace, prompts: list[list[int]], images: list[Any], processor: Any,
             image_token: int) -> dict[str, Any]:
    model = hf_model(args)
    model.generation_config.eos_token_id = None
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    processed = [processor.process_image(img) for img in images]  # preprocessing is not timed for HF

    def run(lo: int, hi: int) -> int:
        ids = []
        for p, inp in zip(prompts[lo:hi], processed[lo:hi]):
            row = []
            for tok in p:
                row += [tok] * (inp.num_tokens if tok == image_token else 1)
            ids.append(row)
        x = torch.tensor(ids, device=dev)  # equal lengths: no padding needed
        pixels = torch.cat([inp.pixel_values for inp in processed[lo:hi]]).to(dev, dtype)
        with torch.inference_mode():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=pixels,
                                 max_new_tokens=OUTPUT_TOKENS, min_new_tokens=OUTPUT_TOKENS, do_sample=False,
                                 pad_token_id=0)
        return int(out.shape[0] * (out.shape[1] - x.shape[1]))

    run(0, min(2, len(prompts)))  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = sum(run(lo, min(lo + args.hf_batch, len(prompts))) for lo in range(0, len(prompts), args.hf_batch))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del model
    return {"requests_per_s": len(prompts) / elapsed, "seconds": elapsed, "output_tokens": tokens,
            "batch_size": args.hf_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", help="an HF LLaVA folder (default: llava-1.5-7b shapes, dummy weights)")
    parser.add_argument("--load-format", default=None, help="default: dummy for the built-in shapes, else auto")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--hf-requests", type=int, default=64, help="requests for the (slower) transformers arm")
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.model_path is None:
        from model_dirs import model_dir

        args.model_path = model_dir("llava-1.5-7b")
        args.load_format = args.load_format or "dummy"
    args.load_format = args.load_format or "auto"

    from sglang.runtime.model_config import ModelConfig
    from sglang.runtime.multimodal.processing import MultimodalProcessor

    vlm = ModelConfig.from_path(args.model_path).vision
    images = make_images(args.requests)
    prompts = make_prompts(args.requests, vlm.image_token_id)
    result: dict[str, Any] = {"model_path": args.model_path, "device": args.device, "dtype": args.dtype,
                              "requests": args.requests, "question_tokens": QUESTION_TOKENS,
                              "output_tokens": OUTPUT_TOKENS}
    result["ours"] = bench_ours(args, prompts, images)
    print(json.dumps(result["ours"]), flush=True)
    if not args.skip_hf:
        n = min(args.hf_requests, args.requests)
        processor = MultimodalProcessor.from_model_path(args.model_path, vlm)
        result["transformers"] = bench_hf(args, prompts[:n], images[:n], processor, vlm.image_token_id)
        result["speedup"] = result["ours"]["requests_per_s"] / result["transformers"]["requests_per_s"]
        print(json.dumps(result["transformers"]), flush=True)
    print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "transformers")}, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
