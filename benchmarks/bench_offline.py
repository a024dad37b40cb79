"""Offline throughput: N prompts through the Engine vs transformers `generate`, and radix cache on vs off.

    python benchmarks/bench_offline.py --num-prompts 32 --input-len 128 --output-len 64
    python benchmarks/bench_offline.py --device cuda --dtype bfloat16 --num-prompts 1000 \
        --input-len-range 100 1024 --output-len 128 --arms hf naive full full-nooverlap --hf-batch-size 64
    python benchmarks/bench_offline.py --model-path <hf folder> --load-format dummy --skip-radix
    # the issue's workload: input and output lengths both uniform in [100, 1024]
    python benchmarks/bench_offline.py --device cuda --dtype bfloat16 --num-prompts 1000 \
        --input-len-range 100 1024 --output-len-range 100 1024 --hf-batch-size 64 --hf-batch-stride 4

Arms (same prompts, same number of new tokens for every request: ignore_eos / no eos in HF, greedy):
  hf             transformers `generate` in batches (left padding + attention mask when lengths differ)
  naive          this runtime with torch attention + torch ops (SGLANG_TORCH_OPS=1), no CUDA graphs,
                 no radix cache, no overlap
  full           this runtime with its defaults
  full-nooverlap defaults but --disable-overlap
Throughput = requested output tokens / wall time of one batched call; ratios are against hf and naive.
With --output-len-range every request asks for its own number of tokens. transformers' static batching
cannot stop rows separately, so the hf arm sorts the prompts by output length, runs each batch to its
longest request and counts only the requested tokens (the extra ones are the cost of static batching).
--hf-batch-stride K times every K-th of those batches (a systematic sample across the whole length range)
and reports their throughput as the arm's, so a slow baseline fits a GPU session's time limit.
Radix part: prompts sharing a long prefix (few-shot style) through the full engine with and without
the radix cache; reports throughput and the cache hit rate.
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

from tqdm import tqdm

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def random_prompts(n: int, length: int | tuple[int, int], vocab: int, seed: int, prefix_len: int = 0) -> list[list[int]]:
    """n prompts of `length` tokens (or uniform in [lo, hi]); ids clear of the special tokens."""
    rng = random.Random(seed)
    lo, hi = (length, length) if isinstance(length, int) else length
    prefix = [rng.randrange(100, vocab) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(100, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


ARM_SETTINGS: dict[str, dict[str, Any]] = {
    "naive": {"attention_backend": "torch", "disable_cuda_graph": True, "disable_radix_cache": True,
              "disable_overlap": True},
    "full": {},
    "full-nooverlap": {"disable_overlap": True},
}


def output_lengths(args: argparse.Namespace, n: int) -> list[int]:
    """Each request's max_new_tokens: --output-len, or uniform in --output-len-range (own seed)."""
    if not args.output_len_range:
        return [args.output_len] * n
    lo, hi = args.output_len_range
    rng = random.Random(args.seed + 7)
    return [rng.randint(lo, hi) for _ in range(n)]


def run_engine(args: argparse.Namespace, prompts: list[list[int]], out_lens: list[int] | None = None,
               **extra: Any) -> dict[str, Any]:
    import sglang

    kw: dict[str, Any] = dict(model_path=args.model_path, device=args.device, dtype=args.dtype,
                              load_format=args.load_format, **extra)
    if args.max_total_tokens:
        kw["max_total_tokens"] = args.max_total_tokens
    if args.disable_overlap:
        kw.setdefault("disable_overlap", True)
    if args.disable_cuda_graph:
        kw.setdefault("disable_cuda_graph", True)
    sp = {"temperature": 0, "ignore_eos": True}
    out_lens = out_lens or [args.output_len] * len(prompts)
    with sglang.Engine(**kw) as engine:
        engine.generate(input_ids=prompts[:2], sampling_params={**sp, "max_new_tokens": 4})  # warm up
        engine.flush_cache()
        engine.scheduler.call("set_step_timing", True).result()
        start = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=[{**sp, "max_new_tokens": n} for n in out_lens])
        elapsed = time.perf_counter() - start
        timing = engine.scheduler.call("step_timing").result()
        engine.scheduler.call("set_step_timing", False).result()
        stats = engine.stats()
        engine.check_invariant()
    out_tokens = sum(o["meta_info"]["completion_tokens"] for o in outs)
    in_tokens = sum(len(p) for p in prompts)
    return {"seconds": elapsed, "output_tokens": out_tokens, "output_tok_s": out_tokens / elapsed,
            "total_tok_s": (out_tokens + in_tokens) / elapsed, "cache_hit_rate": stats["cache_hit_rate"],
            "retractions": stats["retractions"], "max_running_requests": stats["max_running_requests"], **timing}


def run_hf(args: argparse.Namespace, prompts: list[list[int]], out_lens: list[int]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from sglang.runtime.model_loader import resolve_model_path

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"auto": torch.float32 if device == "cpu" else torch.bfloat16, "float32": torch.float32,
             "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    path = resolve_model_path(args.model_path)
    if args.load_format == "dummy":
        from transformers import AutoConfig

        with torch.device(device):  # build on the device directly (fast for large models)
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    model.generation_config.eos_token_id = None  # exactly output_len new tokens, as ignore_eos
    bs = args.hf_batch_size or len(prompts)

    def gen(batch: list[list[int]], n: int) -> int:
        width = max(len(p) for p in batch)
        # left padding so every row's last prompt token sits at the end; the mask hides the pads
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0)
        return (out.shape[1] - ids.shape[1]) * out.shape[0]

    # batches of similar lengths waste less: sort by output length when it varies (a batch runs to its
    # longest request), else by prompt length (less padding)
    order = sorted(range(len(prompts)), key=lambda i: (out_lens[i], len(prompts[i])))
    batches = [order[i : i + bs] for i in range(0, len(order), bs)]
    timed = batches[:: max(1, args.hf_batch_stride)]
    gen(prompts[:1], 2)  # warm up
    generated = requested = in_tokens = 0
    start = time.perf_counter()
    for batch in tqdm(timed, desc="hf generate", unit="batch"):
        generated += gen([prompts[i] for i in batch], max(out_lens[i] for i in batch))
        requested += sum(out_lens[i] for i in batch)
        in_tokens += sum(len(prompts[i]) for i in batch)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "output_tokens": requested, "generated_tokens": generated,
            "output_tok_s": requested / elapsed, "total_tok_s": (requested + in_tokens) / elapsed,
            "batch_size": bs, "batches_timed": len(timed), "batches_total": len(batches),
            "prompts_timed": sum(len(b) for b in timed)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", default="default")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--input-len-range", type=int, nargs=2, metavar=("LO", "HI"), default=None,
                   help="uniform prompt lengths in [LO, HI] (overrides --input-len)")
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--output-len-range", type=int, nargs=2, metavar=("LO", "HI"), default=None,
                   help="per-request output lengths uniform in [LO, HI] (overrides --output-len)")
    p.add_argument("--arms", nargs="+", default=["hf", "full"], choices=["hf", "naive", "full", "full-nooverlap"])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--load-format", default="auto")
    p.add_argument("--max-total-tokens", type=int, default=None)
    p.add_argument("--hf-batch-size", type=int, default=None, help="HF generate batch size (default: all prompts)")
    p.add_argument("--hf-batch-stride", type=int, default=1,
                   help="time every K-th hf batch (sorted by length) and report their throughput")
    p.add_argument("--skip-hf", action="store_true", help="drop the hf arm")
    p.add_argument("--skip-radix", action="store_true")
    p.add_argument("--shared-prefix-len", type=int, default=512)
    p.add_argument("--suffix-len", type=int, default=32)
    p.add_argument("--disable-overlap", action="store_true")
    p.add_argument("--disable-cuda-graph", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", "--out", dest="json_out", default=None)
    args = p.parse_args(argv)

    from sglang.runtime.model_config import ModelConfig
    from sglang.runtime.model_loader import resolve_model_path

    vocab = ModelConfig.from_path(resolve_model_path(args.model_path)).vocab_size
    result: dict[str, Any] = {"args": vars(args), "commit": _commit(), "arms": {}}
    lengths = tuple(args.input_len_range) if args.input_len_range else args.input_len
    prompts = random_prompts(args.num_prompts, lengths, vocab, args.seed)
    out_lens = output_lengths(args, len(prompts))
    arms = [a for a in args.arms if not (a == "hf" and args.skip_hf)]
    for arm in arms:
        if arm == "hf":
            res = run_hf(args, prompts, out_lens)
        else:
            res = _with_env({"SGLANG_TORCH_OPS": "1"} if arm == "naive" else {},
                            lambda: run_engine(args, prompts, out_lens, **ARM_SETTINGS[arm]))
        result["arms"][arm] = res
        print(f"{arm}: {res['output_tok_s']:.1f} output tok/s ({res['seconds']:.2f} s)", flush=True)
        if "host_ms_per_decode_step" in res:
            print(f"{arm}: {res['decode_steps_timed']} decode steps, host {res['host_ms_per_decode_step']:.2f} ms/step "
                  f"(+ {res['blocked_ms_per_decode_step']:.2f} ms blocked on the device), "
                  f"GPU {res['gpu_ms_per_decode_step']:.2f} ms/step, max_running_requests "
                  f"{res['max_running_requests']}", flush=True)
    _print_table(result["arms"], args, lengths)

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


def _with_env(env: dict[str, str], fn):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _print_table(arms: dict[str, dict[str, Any]], args: argparse.Namespace, lengths: Any) -> None:
    outs = tuple(args.output_len_range) if args.output_len_range else args.output_len
    print(f"\n{args.num_prompts} prompts, input {lengths}, output {outs}, device {args.device}, "
          f"dtype {args.dtype}")
    print(f"{'arm':<16}{'wall s':>10}{'out tok/s':>12}{'total tok/s':>13}{'vs hf':>8}{'vs naive':>10}")
    for name, r in arms.items():
        vs = [f"{r['output_tok_s'] / arms[b]['output_tok_s']:.2f}x" if b in arms else "-" for b in ("hf", "naive")]
        print(f"{name:<16}{r['seconds']:>10.2f}{r['output_tok_s']:>12.1f}{r['total_tok_s']:>13.1f}{vs[0]:>8}{vs[1]:>10}")
    hf = arms.get("hf")
    if hf and hf["batches_timed"] < hf["batches_total"]:
        print(f"hf timed {hf['batches_timed']} of {hf['batches_total']} batches ({hf['prompts_timed']} prompts, "
              f"every {args.hf_batch_stride}th by length); {hf['generated_tokens']} tokens generated for "
              f"{hf['output_tokens']} requested")


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=os.path.dirname(os.path.abspath(__file__))).strip()
    except Exception:
        return "unknown"


if __name__ == "__main__":
    main(sys.argv[1:])
