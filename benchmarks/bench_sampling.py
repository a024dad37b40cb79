"""Cost of one sampling step (SamplingBatchInfo.build + Sampler.sample) per batch size and parameter mix,
on random logits, in steady decode (each step appends one token per row, as the scheduler does).

    python benchmarks/bench_sampling.py --device cuda --batch-sizes 1 64 256 --vocab 49152 --out s.json

`sample` includes reading the ids back to the host (as the scheduler does), so it is wall time per step.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import torch

from sglang.runtime.sampling import Sampler, SamplingBatchInfo, SamplingParams, make_generator

CASES: dict[str, Any] = {
    "greedy": lambda i: SamplingParams(temperature=0),
    "temperature": lambda i: SamplingParams(temperature=0.7),
    "top_p+top_k": lambda i: SamplingParams(temperature=0.7, top_p=0.9, top_k=50),
    "top_p=0.95": lambda i: SamplingParams(top_p=0.95),
    "min_p": lambda i: SamplingParams(min_p=0.05),
    "seeded": lambda i: SamplingParams(seed=i),
    "penalties": lambda i: SamplingParams(temperature=0.7, repetition_penalty=1.1, frequency_penalty=0.2),
    "mixed": lambda i: [SamplingParams(temperature=0), SamplingParams(top_p=0.9, seed=i),
                        SamplingParams(presence_penalty=0.5)][i % 3],
}


def run_case(name: str, bs: int, vocab: int, device: str, steps: int, prompt_len: int) -> dict[str, float]:
    rng = random.Random(0)
    params = [CASES[name](i) for i in range(bs)]
    gens = [make_generator(p.seed, device) for p in params]
    prompts = [[rng.randrange(vocab) for _ in range(prompt_len)] for _ in range(bs)]
    outs = [[rng.randrange(vocab) for _ in range(16)] for _ in range(bs)]
    logits = torch.randn(bs, vocab, device=device)
    sampler = Sampler(seed=0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    build_s = sample_s = 0.0
    for step in range(steps + 2):  # two warm-up steps (first counts the prompts)
        t0 = time.perf_counter()
        info = SamplingBatchInfo.build(params, outs, gens, vocab, device, prompt_ids=prompts)
        sync()
        t1 = time.perf_counter()
        ids, _ = sampler.sample(logits, info)
        new = ids.tolist()
        t2 = time.perf_counter()
        for o, t in zip(outs, new):
            o.append(t)
        if step >= 2:
            build_s += t1 - t0
            sample_s += t2 - t1
    return {"build_ms": build_s / steps * 1e3, "sample_ms": sample_s / steps * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompt-len", type=int, default=1000)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
          f"vocab {args.vocab}")
    print(f"{'case':14s} {'bs':>5s} {'build ms':>10s} {'sample ms':>10s}")
    for bs in args.batch_sizes:
        for name in args.cases:
            r = {"case": name, "bs": bs, **run_case(name, bs, args.vocab, args.device, args.steps, args.prompt_len)}
            rows.append(r)
            print(f"{name:14s} {bs:5d} {r['build_ms']:10.3f} {r['sample_ms']:10.3f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": args.device, "vocab": args.vocab, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
