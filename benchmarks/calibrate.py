"""Measure the runtime costs the compiler's cost model reads, and write them as a calibration table.

    python benchmarks/calibrate.py --model-path default --load-format dummy --out benchmarks/calibration/cpu.json
    sglc compile --explain prog.sgl --calibration benchmarks/calibration/cpu.json   # or $SGLANG_CALIBRATION

Three medians on an in-process engine (no HTTP; pass --url to time a running server, HTTP included, which
is what a client program pays per call): a call with a one-token prompt and one new token (the per-call
overhead), a `--prompt-tokens` prefill with one new token (prefill per token), and a one-token prompt
decoding `--decode-tokens` tokens with ignore_eos (decode per token). Every prompt starts with a fresh
token so no run hits the prefix cache of an earlier one. See sglang/compiler/calibration.py for the format.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

Generate = Callable[[list[int], dict[str, Any]], Any]


def median_time(generate: Generate, ids: Callable[[int], list[int]], sp: dict[str, Any], repeat: int,
                clock: Callable[[], float] = time.perf_counter) -> float:
    times = []
    for r in range(repeat):
        prompt = ids(r)
        start = clock()
        generate(prompt, sp)
        times.append(clock() - start)
    return statistics.median(times)


def measure(generate: Generate, vocab: int, prompt_tokens: int = 512, decode_tokens: int = 64, repeat: int = 5,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """The three medians `fit_calibration` takes. Prompt r of a kind starts with token 1 + r * 7919 % (vocab - 2)
    (a fresh first token: no prefix-cache hit across runs)."""
    def ids(n: int, salt: int) -> Callable[[int], list[int]]:
        return lambda r: [1 + (salt * 104729 + r * 7919) % (vocab - 2)] + [100 + i % 1000 for i in range(n - 1)]

    one = {"max_new_tokens": 1, "temperature": 0.0}
    generate(ids(8, 0)(0), one)  # warm-up: first-call setup is no per-call cost
    return {
        "short_call_s": median_time(generate, ids(1, 1), one, repeat, clock),
        "long_prefill_s": median_time(generate, ids(prompt_tokens, 2), one, repeat, clock),
        "decode_s": median_time(generate, ids(1, 3), {"max_new_tokens": decode_tokens, "temperature": 0.0,
                                                      "ignore_eos": True}, repeat, clock),
    }


def http_generate(url: str) -> Generate:
    def call(input_ids: list[int], sp: dict[str, Any]) -> Any:
        body = json.dumps({"input_ids": input_ids, "sampling_params": sp}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/generate", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())

    return call


def device_name(engine_device: Optional[str]) -> str:
    import torch

    if engine_device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default="default")
    p.add_argument("--load-format", default=None, help="e.g. dummy (random weights of the model's shapes)")
    p.add_argument("--device", default=None)
    p.add_argument("--url", help="time this running server over HTTP instead of an in-process engine")
    p.add_argument("--vocab", type=int, default=32000, help="with --url: token ids stay below this")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", help="where to write the table (default: benchmarks/calibration/<device>.json)")
    args = p.parse_args(argv)

    from sglang.compiler.calibration import fit_calibration, save_calibration

    engine = None
    if args.url:
        generate, vocab, device = http_generate(args.url), args.vocab, f"server {args.url}"
    else:
        from sglang.runtime.engine import Engine

        kw = {k: v for k, v in (("load_format", args.load_format), ("device", args.device)) if v is not None}
        engine = Engine(model_path=args.model_path, **kw)
        vocab = len(engine.tokenizer)
        device = device_name(args.device)

        def generate(input_ids: list[int], sp: dict[str, Any]) -> Any:
            return engine.generate(input_ids=input_ids, sampling_params=sp)
    try:
        m = measure(generate, vocab, args.prompt_tokens, args.decode_tokens, args.repeat)
    finally:
        if engine is not None:
            engine.shutdown()
    cal = fit_calibration(m["short_call_s"], m["long_prefill_s"], args.prompt_tokens, m["decode_s"],
                          args.decode_tokens, device, args.model_path)
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-") or "device"
    out = save_calibration(cal, args.out or REPO / "benchmarks" / "calibration" / f"{slug}.json")
    print(json.dumps({"measured": m, "table": cal.to_json(), "written": str(out)}, indent=2))
    print(f"use it: sglc compile --explain PROG.sgl --calibration {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
