"""Offline throughput: N prompts through the Engine vs transformers `generate`, and radix cache on vs off.

    python benchmarks/bench_offline.py --num-prompts 32 --input-len 128 --output-len 64
    python benchmarks/bench_offline.py --device cuda --dtype bfloat16 --num-prompts 512 --hf-batch-size 64
    python benchmarks/bench_offline.py --model-path <hf folder> --load-format dummy --skip-hf

Part 1 (engine vs HF): the same random prompts (equal length, so HF needs no padding), the same
number of new tokens for every request (ignore_eos / no eos in HF), greedy. Throughput = generated
tokens / wall time; the ratio is engine / HF.
Part 2 (radix on vs off): prompts sharing a long prefix (few-shot style), the engine with and
without the radix cache; reports throughput and the cache hit rate.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def random_prompts(n: int, length: int, vocab: int, seed: int, prefix_len: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    # stay clear of the special tokens at the start of the vocabulary
    prefix = [rng.randrange(100, vocab) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(100, vocab) for _ in range(length)] for _ in range(n)]


def run_engine(args: argparse.Namespace, prompts: list[list[int]], **extra: Any) -> dict[str, Any]:
    import sglang

    kw: dict[str, Any] = dict(model_path=args.model_path, device=args.device, dtype=args.dtype,
                              load_format=args.load_format, **extra)
    if args.max_total_tokens:
        kw["max_total_tokens"] = args.max_total_tokens
    if args.disable_overlap:
        kw["disable_overlap"] = True
    if args.disable_cuda_graph:
        kw["disable_cuda_graph"] = True
    sp = {"max_new_tokens": args.output_len, "temperature": 0, "ignore_eos": True}
    with sglang.Engine(**kw) as engine:
        engine.generate(input_ids=prompts[:2], sampling_params={**sp, "max_new_tokens": 4})  # warm up
        engine.flush_cache()
        start = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=sp)
        elapsed = time.perf_counter() - start
        stats = engine.stats()
        engine.check_invariant()
    out_tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
    in_tokens = sum(len(p) for p in prompts)
    return {"seconds": elapsed, "output_tokens": out_tokens, "output_tok_s": out_tokens / elapsed,
            "total_tok_s": (out_tokens + in_tokens) / elapsed, "cache_hit_rate": stats["cache_hit_rate"],
            "retractions": stats["retractions"]}


def run_hf(args: argparse.Namespace, prompts: list[list[int]]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from sglang.runtime.model_loader import resolve_model_path

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16, "float32": torch.float32,
             "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    path = resolve_model_path(args.model_path)
    if args.load_format == "dummy":
        from transformers import AutoConfig

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    model.generation_config.eos_token_id = None  # exactly output_len new tokens, as ignore_eos
    bs = args.hf_batch_size or len(prompts)

    def gen(batch: list[list[int]], n: int) -> int:
        ids = torch.tensor(batch, device=device)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                 pad_token_id=0)
        return (out.shape[1] - ids.shape[1]) * out.shape[0]

    gen(prompts[:1], 2)  # warm up
    start = time.perf_counter()
    out_tokens = sum(gen(prompts[i : i + bs], args.output_len) for i in range(0, len(prompts), bs))
    elapsed = time.perf_counter() - start
    in_tokens = sum(len(p) for p in prompts)
    return {"seconds": elapsed, "output_tokens": out_tokens, "output_tok_s": out_tokens / elapsed,
            "total_tok_s": (out_tokens + in_tokens) / elapsed, "batch_size": bs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default="default")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--load-format", default="auto")
    p.add_argument("--max-total-tokens", type=int, default=None)
    p.add_argument("--hf-batch-size", type=int, default=None, help="HF generate batch size (default: all prompts)")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--skip-radix", action="store_true")
    p.add_argument("--shared-prefix-len", type=int, default=512)
    p.add_argument("--suffix-len", type=int, default=32)
    p.add_argument("--disable-overlap", action="store_true")
    p.add_argument("--disable-cuda-graph", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)

    from sglang.runtime.model_config import ModelConfig
    from sglang.runtime.model_loader import resolve_model_path

    vocab = ModelConfig.from_path(resolve_model_path(args.model_path)).vocab_size
    result: dict[str, Any] = {"args": vars(args), "commit": _commit()}

    prompts = random_prompts(args.num_prompts, args.input_len, vocab, args.seed)
    result["engine"] = run_engine(args, prompts)
    print(f"engine: {result['engine']['output_tok_s']:.1f} output tok/s "
          f"({result['engine']['seconds']:.2f} s, {args.num_prompts} x {args.input_len}+{args.output_len})")
    if not args.skip_hf:
        result["hf"] = run_hf(args, prompts)
        result["speedup_vs_hf"] = result["engine"]["output_tok_s"] / result["hf"]["output_tok_s"]
        print(f"hf generate (batch {result['hf']['batch_size']}): {result['hf']['output_tok_s']:.1f} output tok/s "
              f"({result['hf']['seconds']:.2f} s)")
        print(f"engine / hf: {result['speedup_vs_hf']:.2f}x")

    if not args.skip_radix:
        shared = random_prompts(args.num_prompts, args.suffix_len, vocab, args.seed + 1, args.shared_prefix_len)
        on = run_engine(args, shared)
        off = run_engine(args, shared, disable_radix_cache=True)
        result["radix_on"], result["radix_off"] = on, off
        result["radix_speedup"] = on["total_tok_s"] / off["total_tok_s"]
        print(f"shared prefix {args.shared_prefix_len} + {args.suffix_len}, {args.num_prompts} prompts: "
              f"radix on {on['total_tok_s']:.1f} tok/s (hit rate {on['cache_hit_rate']:.2f}), "
              f"off {off['total_tok_s']:.1f} tok/s -> {result['radix_speedup']:.2f}x")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=os.path.dirname(os.path.abspath(__file__))).strip()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    main(sys.argv[1:])
