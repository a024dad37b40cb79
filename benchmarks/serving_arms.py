"""Run benchmarks/bench_serving.py against this runtime's server in several configurations ("arms"),
one server at a time, and print them side by side:

  naive  torch attention, torch ops, no CUDA graphs, no radix cache, no overlap
  full   the defaults (GPU attention backend, Triton ops, CUDA graphs, radix cache, overlap)

    python benchmarks/serving_arms.py --model llama-3.2-1b --out serving.json

Each arm runs the `random` dataset and the `generated-shared-prefix` dataset (the radix cache's case).
`--timeline` has each arm's scheduler record a forward timeline (SGLANG_TIMELINE, scheduler/timeline.py) into
timeline_<arm>-<pid>.jsonl beside --out; its summary per dataset run (benchmarks/timeline_summary.py) goes into
the arm's JSON under "timeline", so it comes back with it.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_dirs import NAMES, model_dir  # noqa: E402

ARMS = {
    "naive": ["--attention-backend", "torch", "--disable-cuda-graph", "--disable-radix-cache", "--disable-overlap"],
    "full": [],
    "noradix": ["--disable-radix-cache"],  # the full arm without its prefix cache (issue 17's baseline)
    "cascade": ["--enable-cascade-decode"],  # the full arm with shared-prefix decode attention
}


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before becoming healthy")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"server at {url} not healthy after {timeout:.0f} s")


def run_arm(arm: str, path: str, args: argparse.Namespace, log_dir: Path,
            out: Optional[dict[str, Any]] = None, save: Any = lambda: None) -> dict[str, Any]:
    """One server with the arm's flags; every dataset x rate run against it. `save()` after each run keeps
    finished numbers on disk if a later run is cut off by the session's time limit."""
    import bench_serving

    port = args.port
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", path, "--load-format", "dummy",
           "--port", str(port), "--dtype", args.dtype, *ARMS[arm], *args.server_args]
    env = dict(os.environ, SGLANG_TORCH_OPS="1" if arm == "naive" else "0")
    timeline = str(log_dir / f"timeline_{arm}-{{pid}}.jsonl") if args.timeline else None
    if timeline:
        env["SGLANG_TIMELINE"] = timeline
    log = open(log_dir / f"server_{arm}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    out = {} if out is None else out
    out.update(arm=arm, cmd=" ".join(cmd))
    runs: list[tuple[str, list[str]]] = []
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, args.startup_timeout)
        common = ["--port", str(port), "--max-token-id", str(min(args.vocab, 30000))]
        datasets = (("random", ["--dataset", "random", "--num-prompts", str(args.num_prompts),
                                "--random-input-len", str(args.input_len),
                                "--random-output-len", str(args.output_len),
                                "--random-range-ratio", "0.5"]),
                    ("shared_prefix", ["--dataset", "generated-shared-prefix",
                                       "--gsp-num-groups", str(args.gsp_groups),
                                       "--gsp-prompts-per-group", str(args.gsp_per_group),
                                       "--gsp-system-prompt-len", str(args.gsp_system_len),
                                       "--gsp-question-len", str(args.gsp_question_len),
                                       "--gsp-output-len", str(args.gsp_output_len)]))
        runs = [(name if rate == "inf" else f"{name}@{rate}", extra + ["--request-rate", rate])
                for rate in args.request_rates for name, extra in datasets if name in args.datasets]
        for name, extra in runs:
            print(f"[{arm}] {name} ...", flush=True)
            # every run starts cold: the same prompts recur across rates and would hit the cache
            httpx.post(f"http://127.0.0.1:{port}/flush_cache", timeout=60)
            try:
                out[name] = bench_serving.main(common + extra)
            except Exception as e:  # keep the other dataset's numbers
                out[name] = {"error": f"{type(e).__name__}: {e}"}
            save()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        if timeline:
            try:
                origins = {name: out[name].get("started_at") for name, _ in runs if isinstance(out.get(name), dict)}
                out["timeline"] = summarize_timelines(timeline, [name for name, _ in runs], origins=origins)
            except Exception as e:  # the arm's numbers stand without it
                out["timeline"] = {"error": f"{type(e).__name__}: {e}"}
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return out


def _settled(paths: list[str], quiet_s: float = 1.0, timeout_s: float = 15.0) -> None:
    """Wait until the timeline files stop growing: the scheduler writes its last steps when it goes idle."""
    deadline, last = time.time() + timeout_s, None
    while time.time() < deadline:
        sizes = [os.path.getsize(p) for p in paths]
        if sizes == last:
            return
        last = sizes
        time.sleep(quiet_s)


def summarize_timelines(pattern: str, names: list[str], quiet_s: float = 1.0,
                        origins: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """Each scheduler's timeline summarized per dataset run (the runs after its flush_cache marks; anything
    before the first mark, e.g. a startup warm-up, is "startup"). origins: run name -> epoch when its client
    started sending (bench_serving's started_at): admission times then count from there."""
    import timeline_summary

    paths = sorted(glob.glob(pattern.replace("{pid}", "*")))
    _settled(paths, quiet_s)
    out: dict[str, Any] = {}
    for path in paths:
        try:
            meta, steps = timeline_summary.load(path)
        except (OSError, ValueError) as e:
            out[path] = {"error": f"{type(e).__name__}: {e}"}
            continue
        extra = len(steps) - len(names)
        labels = ["startup"] * extra + names if extra >= 0 else [f"run{i}" for i in range(len(steps))]
        runs = {}
        for label, st in zip(labels, steps):
            runs[label] = timeline_summary.summarize_run(st, origin=(origins or {}).get(label))
            print(f"[timeline {Path(path).name}] {label}\n{timeline_summary.format_run(0, runs[label])}", flush=True)
        out[Path(path).name] = {"meta": meta, "runs": runs}
    return out


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-3.2-1b", choices=NAMES)
    p.add_argument("--arms", nargs="+", default=["naive", "full"], choices=list(ARMS))
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--port", type=int, default=30111)
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--input-len", type=int, default=1024)
    p.add_argument("--output-len", type=int, default=128)
    # generated-shared-prefix workload, SGLang's shape: 64 groups x 16 prompts, 2048-token system prompt,
    # 128-token question, 256 output tokens
    p.add_argument("--datasets", nargs="+", default=["random", "shared_prefix"], choices=["random", "shared_prefix"])
    p.add_argument("--gsp-groups", type=int, default=64)
    p.add_argument("--gsp-per-group", type=int, default=16)
    p.add_argument("--gsp-system-len", type=int, default=2048)
    p.add_argument("--gsp-question-len", type=int, default=128)
    p.add_argument("--gsp-output-len", type=int, default=256)
    p.add_argument("--request-rates", nargs="+", default=["inf"],
                   help="Poisson arrival rates in req/s to sweep ('inf' = all at once)")
    p.add_argument("--timeline", action="store_true",
                   help="record each arm's forward timeline (SGLANG_TIMELINE) and summarize it per run")
    p.add_argument("--startup-timeout", type=float, default=240)
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra server flags (last)")
    p.add_argument("--out", default="serving_arms.json")
    args = p.parse_args(argv)
    path = model_dir(args.model)
    args.vocab = int(json.loads((Path(path) / "config.json").read_text())["vocab_size"])
    log_dir = Path(args.out).resolve().parent
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []

    def save() -> None:
        Path(args.out).write_text(json.dumps({"model": args.model, "results": results}, indent=1))

    for a in args.arms:
        results.append({"arm": a})
        run_arm(a, path, args, log_dir, out=results[-1], save=save)
        save()
    print(f"\n{'arm':<8}{'dataset':<22}{'req/s':>8}{'out tok/s':>11}{'in tok/s':>11}{'hit':>7}{'ttft p50':>10}"
          f"{'ttft p99':>10}{'itl p50':>9}{'itl p99':>9}{'failed':>8}")
    by = {}
    for r in results:
        if "error" in r:
            print(f"{r['arm']:<8}ERROR {r['error']}")
        for ds in [k for k in r if k.startswith(("random", "shared_prefix"))]:
            s = r.get(ds)
            if not s or "error" in s:
                continue
            by[(r["arm"], ds)] = s
            print(f"{r['arm']:<8}{ds:<22}{s['request_throughput']:>8.2f}{s['output_throughput']:>11.1f}"
                  f"{s['input_throughput']:>11.1f}{s['cache_hit_rate']:>7.2f}{s['ttft_ms']['p50'] or 0:>10.1f}"
                  f"{s['ttft_ms']['p99'] or 0:>10.1f}{s['itl_ms']['p50'] or 0:>9.2f}{s['itl_ms']['p99'] or 0:>9.2f}"
                  f"{s['failed']:>8}")
    for ds in sorted({d for _, d in by}):
        if ("full", ds) in by and ("naive", ds) in by:
            f, n = by[("full", ds)], by[("naive", ds)]
            print(f"full/naive {ds}: request throughput x{f['request_throughput'] / n['request_throughput']:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
