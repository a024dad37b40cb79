"""Cache-aware vs round-robin routing over N replicas, in one run: the generated shared-prefix workload of
bench_serving.py through `sglang router`, once per policy, printing cache hit rate and request throughput.

    # N local servers of ours (dummy weights by default; on one GPU they share it by memory fraction)
    python benchmarks/bench_router.py --model-path /models/llama-3.2-1b --num-workers 2 \
        --gsp-num-groups 64 --gsp-prompts-per-group 16 --out router.json
    # or servers already running
    python benchmarks/bench_router.py --worker-urls http://10.0.0.1:30000 http://10.0.0.2:30000
    # on a CPU: stub workers (benchmarks/stub_worker.py) check routing, per-worker loads and the router's cost
    python benchmarks/bench_router.py --stub-workers 2 --stub-step-ms 20

Before the first arm, a small warm-up of the same shape goes to every worker (a fresh server compiles
kernels on first use, which would otherwise land on whichever policy runs first), then every arm starts
cold (all workers' caches flushed) with a fresh router process, so the arms see the same prompts in the
same order and differ only in the policy. `--repeats` runs the arms again in alternating order.

Per arm it reports, besides bench_serving's summary: requests, prompt and cached tokens per worker (the
worker's /metrics), the router's decisions and health events, and the CPU seconds the router process
used (near the run's duration: the router, not the GPU, was the bottleneck).
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
            port = worker_ports(args, args.num_workers)[i]
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


def worker_ports(args: argparse.Namespace, n: int) -> list[int]:
    """`--worker-ports` when given, else n consecutive ports from `--worker-base-port`."""
    if args.worker_ports:
        if len(args.worker_ports) != n:
            raise ValueError(f"--worker-ports names {len(args.worker_ports)} ports for {n} workers")
        return list(args.worker_ports)
    return [args.worker_base_port + i for i in range(n)]


def start_stub_workers(args: argparse.Namespace, log_dir: Path) -> tuple[list[str], list[subprocess.Popen]]:
    """`--stub-workers` fake servers (stub_worker.py, one process) on consecutive ports."""
    ports = worker_ports(args, args.stub_workers)
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "stub_worker.py"), "--ports", *map(str, ports),
           "--step-ms", str(args.stub_step_ms), "--prefill-us-per-token", str(args.stub_prefill_us_per_token)]
    log = open(log_dir / "router_stub_workers.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            wait_healthy(url, proc, 60)
    except BaseException:
        stop([proc])
        raise
    return urls, [proc]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def worker_counters(url: str) -> dict[str, float]:
    """Prompt and cached tokens the worker has served so far (its /metrics); {} where it has none."""
    try:
        r = httpx.get(f"{url}/metrics", timeout=30)
    except httpx.HTTPError:
        return {}
    out = {}
    for line in r.text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("sglang_prompt_tokens_total", "sglang_cached_tokens_total"):
            out[name[len("sglang_"):-len("_total")]] = float(value)
    return out


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flush(urls: list[str]) -> None:
    for url in urls:  # cold start for every arm: the same prompts would otherwise hit the last arm's cache
        r = httpx.post(f"{url}/flush_cache", timeout=120)
        if r.status_code != 200:
            raise RuntimeError(f"flush_cache on {url}: {r.status_code} {r.text}")


def per_worker(urls: list[str], before: dict[str, dict[str, float]], routed: dict[str, Any]) -> dict[str, Any]:
    """Per worker: requests the router sent it and what it served (prompt / cached tokens, hit rate)."""
    out = {}
    for url in urls:
        after = worker_counters(url)
        prompt = after.get("prompt_tokens", 0) - before[url].get("prompt_tokens", 0)
        cached = after.get("cached_tokens", 0) - before[url].get("cached_tokens", 0)
        info = routed.get(url, {})
        out[url] = {"requests": info.get("routed", {}).get("requests", info.get("served")),
                    "routed": info.get("routed", {}),
                    "prompt_tokens": int(prompt), "cached_tokens": int(cached),
                    "hit_rate": round(cached / prompt, 4) if prompt else None}
    return out


def run_policy(policy: str, urls: list[str], requests: list[Any], args: argparse.Namespace,
               log_dir: Path) -> dict[str, Any]:
    flush(urls)
    cmd = [sys.executable, "-m", "sglang.cli", "router", "--worker-urls", *urls, "--policy", policy,
           "--port", str(args.router_port), "--log-level", "warning"]
    log = open(log_dir / f"router_{policy}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{args.router_port}"
    try:
        wait_healthy(base, proc, 60)
        before = {u: worker_counters(u) for u in urls}
        cpu0 = cpu_seconds(proc.pid)
        summary = asyncio.run(bench_serving.run_benchmark(
            base, requests, args.request_rate, args.backend, args.seed, True, None, args.max_concurrency))
        cpu1 = cpu_seconds(proc.pid)
        state = httpx.get(f"{base}/workers", timeout=30).json()
        summary["per_worker"] = per_worker(urls, before, {w["url"]: w for w in state["workers"]})
        summary["router_events"] = state.get("events", {})
        if cpu0 is not None and cpu1 is not None:
            summary["router_cpu_s"] = round(cpu1 - cpu0, 3)
        return summary
    finally:
        stop([proc])


def warm_up(urls: list[str], args: argparse.Namespace, log_dir: Path) -> None:
    """The workload's shapes on every worker before anything is measured (round robin: each sees all)."""
    if args.warmup_groups <= 0:
        return
    requests = dataset(args, groups=args.warmup_groups, seed=args.seed + 1,
                       output_len=min(args.gsp_output_len, 32))
    print(f"[warm-up] {len(requests)} requests over {len(urls)} workers ...", flush=True)
    out = run_policy("round_robin", urls, requests, args, log_dir)
    if out["failed"]:
        raise RuntimeError(f"warm-up failed: {out['errors']}")


def dataset(args: argparse.Namespace, groups: int, seed: int, output_len: int) -> list[Any]:
    # bench_serving's generator with its own flag names
    return bench_serving.build_dataset(argparse.Namespace(
        dataset="generated-shared-prefix", seed=seed, min_token_id=args.min_token_id,
        max_token_id=args.max_token_id, gsp_num_groups=groups,
        gsp_prompts_per_group=args.gsp_prompts_per_group, gsp_system_prompt_len=args.gsp_system_prompt_len,
        gsp_question_len=args.gsp_question_len, gsp_output_len=output_len))


def arm_order(policies: list[str], repeats: int) -> list[str]:
    """The policies, then reversed, and so on: neither always runs on the workers the other just used."""
    return [p for r in range(repeats) for p in (policies if r % 2 == 0 else policies[::-1])]


def mean_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(sum(r[key] for r in runs) / len(runs), 4)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--worker-urls", nargs="+", help="servers already running")
    src.add_argument("--model-path", help="start --num-workers local servers of this model")
    src.add_argument("--stub-workers", type=int, help="start this many stub workers (stub_worker.py; for CPUs)")
    p.add_argument("--stub-step-ms", type=float, default=20.0, help="a stub worker's decode step (0: instant)")
    p.add_argument("--stub-prefill-us-per-token", type=float, default=0.0,
                   help="stub workers share one device and pay this per uncached prompt token (0: free)")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--load-format", default="dummy")
    p.add_argument("--mem-fraction-static", type=float, default=0.85, help="split evenly over the workers")
    p.add_argument("--worker-base-port", type=int, default=31100)
    p.add_argument("--worker-ports", type=int, nargs="+", default=None, help="one port per started worker")
    p.add_argument("--router-port", type=int, default=31000)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--repeats", type=int, default=1, help="run the arms this many times, order alternating")
    p.add_argument("--warmup-groups", type=int, default=8,
                   help="groups of the workload's shape sent to the workers before the arms (0: none)")
    p.add_argument("--backend", choices=["sglang", "openai"], default="sglang")
    p.add_argument("--request-rate", type=float, default=float("inf"))
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--gsp-num-groups", type=int, default=64)
    p.add_argument("--gsp-prompts-per-group", type=int, default=16)
    p.add_argument("--gsp-system-prompt-len", type=int, default=2048)
    p.add_argument("--gsp-question-len", type=int, default=128)
    p.add_argument("--gsp-output-len", type=int, default=256,
                   help="tokens out per request (e.g. 16 for a prefill-heavy row)")
    p.add_argument("--min-token-id", type=int, default=100)
    p.add_argument("--max-token-id", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=300)
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra worker flags (last)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    requests = dataset(args, args.gsp_num_groups, args.seed, args.gsp_output_len)
    log_dir = Path(args.out).resolve().parent if args.out else Path.cwd()
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    results: dict[str, Any] = {"config": {k: v for k, v in vars(args).items()}, "runs": []}

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    try:
        if args.worker_urls:
            urls = [u.rstrip("/") for u in args.worker_urls]
        elif args.stub_workers:
            urls, procs = start_stub_workers(args, log_dir)
        else:
            urls, procs = start_workers(args, log_dir)
        warm_up(urls, args, log_dir)
        for policy in arm_order(args.policies, args.repeats):
            print(f"[{policy}] {len(requests)} requests over {len(urls)} workers ...", flush=True)
            results["runs"].append({"policy": policy, **run_policy(policy, urls, requests, args, log_dir)})
            save()
    finally:
        stop(procs)
    report(results, args.policies)
    save()
    return results


def report(results: dict[str, Any], policies: list[str]) -> None:
    """Print every run, then per policy the mean (the last run's details stay under the policy's name)."""
    print(f"{'policy':<12} {'hit':>7} {'req/s':>8} {'failed':>6} {'router cpu s':>12} {'duration s':>10}  "
          "requests / hit rate per worker; router events")
    for run in results["runs"]:
        workers = [f"{w['requests']}/{w['hit_rate']}" for w in run["per_worker"].values()]
        events = {k: v for k, v in run["router_events"].items() if not k.startswith("decision_")}
        print(f"{run['policy']:<12} {run['cache_hit_rate']:>7.4f} {run['request_throughput']:>8.2f} "
              f"{run['failed']:>6} {run.get('router_cpu_s', float('nan')):>12.2f} {run['duration_s']:>10.2f}  "
              f"{workers} {events or ''}")
    for policy in policies:
        runs = [r for r in results["runs"] if r["policy"] == policy]
        results[policy] = {**runs[-1], "cache_hit_rate": mean_of(runs, "cache_hit_rate"),
                           "request_throughput": mean_of(runs, "request_throughput"),
                           "failed": sum(r["failed"] for r in runs)}
    if set(policies) == set(POLICIES):
        a, b = (results[p] for p in POLICIES)
        results["throughput_ratio"] = round(a["request_throughput"] / max(b["request_throughput"], 1e-9), 3)
        print(f"cache_aware / round_robin request throughput: {results['throughput_ratio']}x "
              f"(mean of {len(results['runs']) // 2} run(s) each)")


if __name__ == "__main__":
    out = main()
    sys.exit(0 if all(out[p]["failed"] == 0 for p in POLICIES if p in out) else 1)
