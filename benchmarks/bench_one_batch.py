"""Latency of one static batch: prefill time and median decode time per step, straight on the ModelRunner
(no scheduler, no server), for several arms side by side:

  hf     transformers model forward with its KV cache (eager, SDPA), the baseline
  naive  this runtime: torch attention backend, torch element-wise ops, no CUDA graphs
  full   this runtime: default GPU attention backend (or --backends), Triton ops, CUDA graphs

    python benchmarks/bench_one_batch.py --model llama-3-8b --batch-sizes 1 8 64 --input-lens 128 1024

Effective bandwidth = weight bytes / decode step time (every weight is read once per step; KV bytes are
reported beside it). The copy bandwidth of the device (a large device-to-device copy, read + write bytes)
is measured in the same run, so the ratio does not depend on a datasheet. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_dirs import NAMES, model_dir  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# -- driving the ModelRunner directly ------------------------------------------------------------
class Driver:
    """Greedy prefill/decode of a static batch through ModelRunner.forward, managing pool slots itself."""

    def __init__(self, runner: Any) -> None:
        from sglang.runtime.forward_batch import ForwardBatch, ForwardMode

        self.r = runner
        self.FB, self.M = ForwardBatch, ForwardMode
        self.dev = runner.device

    def reset(self) -> None:
        self.r.req_to_token_pool.clear()
        self.r.token_kv_pool.clear()

    def prefill(self, prompts: list[list[int]]) -> tuple[list[int], list[int], torch.Tensor]:
        rp, kp = self.r.req_to_token_pool, self.r.token_kv_pool
        lens = [len(p) for p in prompts]
        rows = [rp.alloc() for _ in prompts]
        if any(r is None for r in rows):
            raise RuntimeError("request pool exhausted: raise max_running_requests")
        locs = kp.alloc(sum(lens))
        if locs is None:
            raise RuntimeError("KV pool exhausted: raise max_total_tokens")
        start = 0
        for row, n in zip(rows, lens):
            rp.write(row, 0, locs[start:start + n])
            start += n
        d = self.dev
        t = lambda xs: torch.tensor(xs, dtype=torch.int64).to(d, non_blocking=True)  # noqa: E731
        batch = self.FB(
            mode=self.M.EXTEND, batch_size=len(prompts),
            input_ids=t([x for p in prompts for x in p]),
            positions=t([i for n in lens for i in range(n)]),
            req_pool_indices=t(rows), seq_lens=t(lens), out_cache_loc=locs,
            req_to_token=rp.req_to_token, kv_pool=kp,
            extend_prefix_lens=t([0] * len(lens)), extend_seq_lens=t(lens),
            extend_start_loc=t([sum(lens[:i]) for i in range(len(lens))]),
            seq_lens_cpu=list(lens), extend_prefix_lens_cpu=[0] * len(lens), extend_seq_lens_cpu=list(lens),
            extend_logprob_start_lens_cpu=list(lens),
        )
        logits = self.r.forward(batch).next_token_logits
        self.last_logits = logits
        return rows, lens, logits.argmax(-1)

    def decode(self, rows: list[int], seq_lens: list[int], last: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        rp, kp = self.r.req_to_token_pool, self.r.token_kv_pool
        bs = len(rows)
        locs = kp.alloc(bs)
        if locs is None:
            raise RuntimeError("KV pool exhausted: raise max_total_tokens")
        d = self.dev
        rows_t = torch.tensor(rows, dtype=torch.int64).to(d, non_blocking=True)
        pos_t = torch.tensor(seq_lens, dtype=torch.int64).to(d, non_blocking=True)
        rp.req_to_token[rows_t, pos_t] = locs.to(rp.req_to_token.dtype)
        new_lens = [s + 1 for s in seq_lens]
        batch = self.FB(
            mode=self.M.DECODE, batch_size=bs, input_ids=last.to(torch.int64), positions=pos_t,
            req_pool_indices=rows_t, seq_lens=pos_t + 1, out_cache_loc=locs,
            req_to_token=rp.req_to_token, kv_pool=kp, seq_lens_cpu=new_lens,
        )
        logits = self.r.forward(batch).next_token_logits
        self.last_logits = logits
        return new_lens, logits.argmax(-1)

    def greedy(self, prompts: list[list[int]], max_new: int, logits: Optional[list] = None) -> list[list[int]]:
        """Greedy tokens per prompt; with `logits`, also appends each step's logits (fp32, on the CPU)."""
        self.reset()
        rows, lens, nxt = self.prefill(prompts)
        out = [[int(x)] for x in nxt.tolist()]
        for _ in range(max_new - 1):
            if logits is not None:
                logits.append(self.last_logits.float().cpu())
            lens, nxt = self.decode(rows, lens, nxt)
            for o, x in zip(out, nxt.tolist()):
                o.append(int(x))
        if logits is not None:
            logits.append(self.last_logits.float().cpu())
        return out


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@dataclass
class Result:
    model: str
    arm: str
    batch_size: int
    input_len: int
    prefill_ms: float
    decode_ms: float  # median per decode step (one token per request), wall clock incl. host work
    decode_gpu_ms: float  # median per decode step between CUDA events (device-side time of the step)
    decode_tok_s: float
    weight_gb: float
    eff_bw_gbs: float  # weight bytes / decode step
    kv_gb_per_step: float


def time_runtime_arm(driver: Driver, bs: int, input_len: int, steps: int, vocab: int,
                     prefill_reps: int = 3) -> tuple[float, float, float]:
    """(median prefill ms over `prefill_reps`, median decode ms/step wall, median decode ms/step device)."""
    dev = driver.dev
    g = torch.Generator().manual_seed(bs * 7919 + input_len)
    prompts = torch.randint(0, vocab, (bs, input_len), generator=g).tolist()
    # warm-up: compiles/loads every kernel variant these shapes use
    driver.reset()
    rows, lens, nxt = driver.prefill(prompts)
    for _ in range(3):
        lens, nxt = driver.decode(rows, lens, nxt)
    prefill = []
    for _ in range(prefill_reps):
        driver.reset()
        sync(dev)
        t0 = time.perf_counter()
        rows, lens, nxt = driver.prefill(prompts)
        sync(dev)
        prefill.append((time.perf_counter() - t0) * 1e3)
    times, gpu = [], []
    for _ in range(steps):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if dev.type == "cuda" else None
        t0 = time.perf_counter()
        if ev:
            ev[0].record()
        lens, nxt = driver.decode(rows, lens, nxt)
        if ev:
            ev[1].record()
        sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
        gpu.append(ev[0].elapsed_time(ev[1]) if ev else float("nan"))
    return statistics.median(prefill), statistics.median(times), statistics.median(gpu)


def time_hf_arm(model: Any, bs: int, input_len: int, steps: int, vocab: int, dev: torch.device,
                prefill_reps: int = 3) -> tuple[float, float, float]:
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(bs * 7919 + input_len)
    ids = torch.randint(0, vocab, (bs, input_len), generator=g).to(dev)
    prefill, times = [], []
    for rep in range(prefill_reps + 1):  # the first is a warm-up
        cache = DynamicCache()
        sync(dev)
        t0 = time.perf_counter()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        sync(dev)
        if rep:
            prefill.append((time.perf_counter() - t0) * 1e3)
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        sync(dev)
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    del out, cache
    return statistics.median(prefill), statistics.median(times), float("nan")


def profile_decode(driver: Driver, bs: int, input_len: int, vocab: int, steps: int = 10) -> list[dict]:
    """Per-kernel device time of `steps` decode steps (torch.profiler), largest first, as dicts."""
    from torch.profiler import ProfilerActivity, profile

    prompts = torch.randint(0, vocab, (bs, input_len)).tolist()
    driver.reset()
    rows, lens, nxt = driver.prefill(prompts)
    for _ in range(3):
        lens, nxt = driver.decode(rows, lens, nxt)
    sync(driver.dev)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            lens, nxt = driver.decode(rows, lens, nxt)
        sync(driver.dev)
    rows_out = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0:
            rows_out.append({"kernel": e.key[:90], "us_per_step": round(t / steps, 2), "calls_per_step": e.count / steps})
    rows_out.sort(key=lambda r: -r["us_per_step"])
    total = sum(r["us_per_step"] for r in rows_out)
    print(f"  profile bs={bs}: {total:.0f} us of kernels per decode step; top kernels:")
    for r in rows_out[:15]:
        print(f"    {r['us_per_step']:9.1f} us  x{r['calls_per_step']:<6.0f} {r['kernel']}")
    return [{"kernel_us_per_step_total": round(total, 1)}] + rows_out[:40]


def copy_bandwidth_gbs(dev: torch.device, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, (read + write bytes) / time, median of 20 after warm-up."""
    if dev.type != "cuda":
        return float("nan")
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=dev).normal_()
    b = torch.empty_like(a)
    times = []
    for i in range(25):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e))
    del a, b
    return 2 * nbytes / (statistics.median(times) / 1e3) / 1e9


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_runner(path: str, arm: str, backend: Optional[str], args: argparse.Namespace, max_tokens: int) -> Any:
    from sglang.runtime.model_runner import ModelRunner
    from sglang.runtime.server_args import ServerArgs

    naive = arm == "naive"
    # the element-wise ops pick torch vs Triton when the layers are built
    os.environ["SGLANG_TORCH_OPS"] = "1" if naive else "0"
    if backend and "@" in backend:  # e.g. triton@8: the triton backend with 8 decode KV splits at every size
        backend, splits = backend.split("@", 1)
        os.environ["SGLANG_DECODE_SPLITS"] = splits
    sa = ServerArgs(
        model_path=path, load_format="dummy", dtype=args.dtype, device=args.device,
        attention_backend="torch" if naive else backend, disable_cuda_graph=naive or args.disable_cuda_graph,
        cuda_graph_max_bs=max(args.batch_sizes), max_running_requests=max(args.batch_sizes),
        max_total_tokens=max_tokens, disable_radix_cache=naive,
    )
    try:
        return ModelRunner(sa)
    finally:
        os.environ.pop("SGLANG_TORCH_OPS", None)
        os.environ.pop("SGLANG_DECODE_SPLITS", None)


def weight_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in module.parameters():
        if p.data_ptr() not in seen:  # tied embeddings count once
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def run(args: argparse.Namespace, partial_out: Optional[str] = None) -> dict:
    dev = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    copy_bw = copy_bandwidth_gbs(dev)
    results: list[Result] = []
    profiles: dict[str, Any] = {}
    max_in = max(args.input_lens)
    max_tokens = max(args.batch_sizes) * (max_in + args.steps + 8) + 64
    for name in args.models:
        path = model_dir(name)
        cfg = json.loads((Path(path) / "config.json").read_text())
        vocab = int(cfg["vocab_size"])
        kv_bytes_tok = (2 * cfg["num_hidden_layers"] * cfg.get("num_key_value_heads", cfg["num_attention_heads"])
                        * (cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]) * 2)
        arms = []
        for a in args.arms:
            if a == "full":
                arms += [("full" if len(args.backends) == 1 else f"full-{b}", b) for b in args.backends]
            else:
                arms.append((a, None))
        for arm, backend in arms:
            print(f"[{name}] arm {arm} ...", flush=True)
            try:
                if arm == "hf":
                    model = build_hf(path, args.dtype, dev)
                    wbytes = weight_bytes(model)
                    fn = lambda bs, n: time_hf_arm(model, bs, n, args.steps, vocab, dev)  # noqa: E731
                else:
                    runner = build_runner(path, arm, backend, args, max_tokens)
                    wbytes = weight_bytes(runner.model)
                    driver = Driver(runner)
                    fn = lambda bs, n: time_runtime_arm(driver, bs, n, args.steps, vocab)  # noqa: E731
                if arm != "hf" and arm.startswith(args.profile_arm or "\0") and dev.type == "cuda":
                    profiles[f"{name}/{arm}"] = profile_decode(driver, args.profile_bs, min(args.input_lens), vocab)
                for n in args.input_lens:
                    for bs in args.batch_sizes:
                        pre, dec, dec_gpu = fn(bs, n)
                        r = Result(name, arm, bs, n, round(pre, 3), round(dec, 4), round(dec_gpu, 4),
                                   round(bs / dec * 1e3, 1),
                                   round(wbytes / 1e9, 3), round(wbytes / (dec / 1e3) / 1e9, 1),
                                   round(bs * (n + args.steps / 2) * kv_bytes_tok / 1e9, 4))
                        results.append(r)
                        print("   ", asdict(r), flush=True)
            except Exception as e:  # one broken arm must not lose the others' numbers
                print(f"[{name}] arm {arm} FAILED: {type(e).__name__}: {e}", flush=True)
            finally:
                model = runner = driver = fn = None  # noqa: F841
                free_memory()
                if partial_out:  # keep what is done if a later arm hangs past the step's time limit
                    Path(partial_out).write_text(json.dumps({"partial": True, "results": [asdict(r) for r in results],
                                                             "profiles": profiles}, indent=1))
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "copy_bandwidth_gbs": round(copy_bw, 1), "steps": args.steps, "dtype": args.dtype,
            "results": [asdict(r) for r in results], "profiles": profiles}


def build_hf(path: str, dtype: str, dev: torch.device) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
                   "auto": torch.bfloat16 if dev.type == "cuda" else torch.float32}[dtype]
    cfg = AutoConfig.from_pretrained(path)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype, attn_implementation="sdpa")
    return model.eval().requires_grad_(False)


def print_table(report: dict) -> None:
    rows = report["results"]
    print(f"\ndevice: {report['device']}   copy bandwidth (read+write): {report['copy_bandwidth_gbs']} GB/s")
    hdr = (f"{'model':<14}{'arm':<18}{'bs':>4}{'in':>6}{'prefill ms':>12}{'decode ms':>11}{'gpu ms':>9}"
           f"{'tok/s':>10}{'eff GB/s':>10}{'%copy':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        pct = 100 * r["eff_bw_gbs"] / report["copy_bandwidth_gbs"] if report["copy_bandwidth_gbs"] == report["copy_bandwidth_gbs"] else float("nan")
        print(f"{r['model']:<14}{r['arm']:<18}{r['batch_size']:>4}{r['input_len']:>6}{r['prefill_ms']:>12.2f}"
              f"{r['decode_ms']:>11.3f}{r['decode_gpu_ms']:>9.3f}{r['decode_tok_s']:>10.1f}{r['eff_bw_gbs']:>10.1f}{pct:>7.1f}")
    # ratios of every arm against the baselines, per (model, bs, input_len)
    key = lambda r: (r["model"], r["batch_size"], r["input_len"])  # noqa: E731
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(key(r), {})[r["arm"]] = r
    print("\nratios (decode speed-up, prefill speed-up) vs hf / vs naive:")
    for k, arms in by.items():
        parts = []
        for arm, r in arms.items():
            for base in ("hf", "naive"):
                if base in arms and arm not in ("hf", base):
                    b = arms[base]
                    parts.append(f"{arm}/{base}: decode x{b['decode_ms'] / r['decode_ms']:.2f} "
                                 f"prefill x{b['prefill_ms'] / r['prefill_ms']:.2f}")
        if parts:
            print(f"  {k[0]} bs={k[1]} in={k[2]}: " + "; ".join(parts))


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["llama-3.2-1b"], choices=NAMES)
    p.add_argument("--arms", nargs="+", default=["hf", "naive", "full"], choices=["hf", "naive", "full"])
    p.add_argument("--backends", nargs="+", default=[None], help="attention backends for the full arm (NAME@K: triton with K decode KV splits at every batch size)")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument("--input-lens", nargs="+", type=int, default=[128, 1024])
    p.add_argument("--steps", type=int, default=32, help="timed decode steps (median reported)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="auto")
    p.add_argument("--disable-cuda-graph", action="store_true")
    p.add_argument("--profile-arm", default=None, help="profile decode kernels of arms starting with this name")
    p.add_argument("--profile-bs", type=int, default=1)
    p.add_argument("--out", default="bench_one_batch.json")
    args = p.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes) or any(n < 1 for n in args.input_lens) or args.steps < 1:
        p.error("--batch-sizes, --input-lens and --steps must be positive")
    args.backends = [None if b in (None, "default") else b for b in args.backends]
    report = run(args, partial_out=args.out)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_table(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
