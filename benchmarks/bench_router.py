"""Cache-aware vs round-robin routing over N replicas, in one run: the generated shared-prefix workload of
bench_serving.py through `sglang router`, once per policy, printing cache hit rate and request throughput.

    # N local servers of ours (dummy weights by default; on one GPU they share it by memory fraction)
    python benchmarks/bench_router.py --model-path /models/llama-3.2-1b --num-workers 2 \
        --gsp-num-groups 64 --gsp-prompts-per-group 16 --out router.json
    # or servers already running
    python benchmarks/bench_router.py --worker-urls http://10.0.0.1:30000 http://10.0.0.2:30000

Every arm starts cold (all workers' caches flushed) and gets a fresh router process, so the arms see the
same prompts in the same order and differ only in the policy.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving  # noqa: E402
from serving_arms import wait_healthy  # noqa: E402

POLICIES = ("cache_aware", "round_robin")


def start_workers(args: argparse.Namespace, log_dir: Path) -> tuple[list[str], list[subprocess.Popen]]:
    """`--num-workers` servers of ours on consecutive ports, each with 1/N of the memory fraction. They start
    one after another: a server sizes its KV pool as mem_fraction_static x total minus what the GPU already
    uses, so worker i (0-based) is given (i+1)/N of the fraction, of which the workers before it hold i/N."""
    urls, procs = [], []
    share = args.mem_fraction_static / args.num_workers
    try:
        for i in range(args.num_workers):
            port = args.worker_base_port + i
            cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", args.model_path,
                   "--load-format", args.load_format, "--port", str(port),
                   "--mem-fraction-static", f"{share * (i + 1):.4f}", *args.server_args]
            log = open(log_dir / f"router_worker{i}.log", "w")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
            wait_healthy(urls[-1], procs[-1], args.startup_timeout)
    except BaseException:
        stop(procs)
        raise
    return urls, procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_policy(policy: str, urls: list[str], requests: list[Any], args: argparse.Namespace,
               log_dir: Path) -> dict[str, Any]:
    for url in urls:  # cold start for every arm: the same prompts would otherwise hit the last arm's cache
        r = httpx.post(f"{url}/flush_cache", timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"flush_cache on {url}: {r.status_code} {r.text}")
    cmd = [sys.executable, "-m", "sglang.cli", "router", "--worker-urls", *urls, "--policy", policy,
           "--port", str(args.router_port), "--log-level", "warning"]
    log = open(log_dir / f"router_{policy}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{args.router_port}"
    try:
        wait_healthy(base, proc, 60)
        summary = asyncio.run(bench_serving.run_benchmark(
            base, requests, args.request_rate, args.backend, args.seed, True, None, args.max_concurrency))
        workers = httpx.get(f"{base}/workers", timeout=30).json()["workers"]
        summary["served_per_worker"] = {w["url"]: w["served"] for w in workers}
        return summary
    finally:
        stop([proc])


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--worker-urls", nargs="+", help="servers already running")
    src.add_argument("--model-path", help="start --num-workers local servers of this model")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--load-format", default="dummy")
    p.add_argument("--mem-fraction-static", type=float, default=0.85, help="split evenly over the workers")
    p.add_argument("--worker-base-port", type=int, default=31100)
    p.add_argument("--router-port", type=int, default=31000)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--backend", choices=["sglang", "openai"], default="sglang")
    p.add_argument("--request-rate", type=float, default=float("inf"))
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--gsp-num-groups", type=int, default=64)
    p.add_argument("--gsp-prompts-per-group", type=int, default=16)
    p.add_argument("--gsp-system-prompt-len", type=int, default=2048)
    p.add_argument("--gsp-question-len", type=int, default=128)
    p.add_argument("--gsp-output-len", type=int, default=256)
    p.add_argument("--min-token-id", type=int, default=100)
    p.add_argument("--max-token-id", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=300)
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra worker flags (last)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    # the dataset is bench_serving's generator with its own flag names
    requests = bench_serving.build_dataset(argparse.Namespace(
        dataset="generated-shared-prefix", seed=args.seed, min_token_id=args.min_token_id,
        max_token_id=args.max_token_id, gsp_num_groups=args.gsp_num_groups,
        gsp_prompts_per_group=args.gsp_prompts_per_group, gsp_system_prompt_len=args.gsp_system_prompt_len,
        gsp_question_len=args.gsp_question_len, gsp_output_len=args.gsp_output_len))
    log_dir = Path(args.out).resolve().parent if args.out else Path.cwd()
    procs: list[subprocess.Popen] = []
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items()}}
    try:
        if args.worker_urls:
            urls = [u.rstrip("/") for u in args.worker_urls]
        else:
            urls, procs = start_workers(args, log_dir)
        for policy in args.policies:
            print(f"[{policy}] {len(requests)} requests over {len(urls)} workers ...", flush=True)
            results[policy] = run_policy(policy, urls, requests, args, log_dir)
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        stop(procs)
    print(f"{'policy':<12} {'cache_hit_rate':>14} {'req/s':>9} {'failed':>6}  served per worker")
    for policy in args.policies:
        s = results[policy]
        print(f"{policy:<12} {s['cache_hit_rate']:>14.4f} {s['request_throughput']:>9.2f} {s['failed']:>6}  "
              f"{list(s['served_per_worker'].values())}")
    if set(args.policies) == set(POLICIES):
        a, b = (results[p] for p in POLICIES)
        results["throughput_ratio"] = round(a["request_throughput"] / max(b["request_throughput"], 1e-9), 3)
        print(f"cache_aware / round_robin request throughput: {results['throughput_ratio']}x")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    out = main()
    sys.exit(0 if all(out[p]["failed"] == 0 for p in POLICIES if p in out) else 1)
