"""bench_router's CPU mode: stub workers (benchmarks/stub_worker.py) behind `sglang router`, both policies in
one run, with the per-worker accounting the GPU runs are read by."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from sglang.runtime.server.launch import free_port

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
GROUPS, PER_GROUP, SYSTEM, QUESTION = 6, 8, 64, 8


def _bench_router():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        spec = importlib.util.spec_from_file_location("bench_router", BENCH_DIR / "bench_router.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_stub_mode_runs_both_policies_with_per_worker_accounting(tmp_path):
    bench = _bench_router()
    ports = {free_port()}
    while len(ports) < 2:
        ports.add(free_port())
    out = bench.main(["--stub-workers", "2", "--stub-step-ms", "2", "--worker-ports", *map(str, ports),
                      "--router-port", str(free_port()), "--gsp-num-groups", str(GROUPS),
                      "--gsp-prompts-per-group", str(PER_GROUP), "--gsp-system-prompt-len", str(SYSTEM),
                      "--gsp-question-len", str(QUESTION), "--gsp-output-len", "4", "--warmup-groups", "1",
                      "--repeats", "2", "--out", str(tmp_path / "router.json")])
    n = GROUPS * PER_GROUP
    assert [r["policy"] for r in out["runs"]] == ["cache_aware", "round_robin", "round_robin", "cache_aware"]
    for run in out["runs"]:
        assert run["completed"] == n and run["failed"] == 0
        workers = run["per_worker"].values()
        # every prompt token the client sent was served by one of the workers (their /metrics)
        assert sum(w["prompt_tokens"] for w in workers) == n * (SYSTEM + QUESTION) == run["input_tokens"]
        assert sum(w["cached_tokens"] for w in workers) == round(run["cache_hit_rate"] * run["input_tokens"])
        # routed requests: the prompts plus bench_serving's one /get_model_info
        assert sum(w["requests"] for w in workers) == n + 1
        assert run["router_cpu_s"] > 0
    ca, rr = out["cache_aware"], out["round_robin"]
    # a burst with every prefix fitting: cache-aware computes each prefix once, round robin once per worker
    assert ca["cache_hit_rate"] == pytest.approx((PER_GROUP - 1) * SYSTEM / (PER_GROUP * (SYSTEM + QUESTION)),
                                                 abs=0.01)
    assert rr["cache_hit_rate"] < ca["cache_hit_rate"] - 0.05  # most groups computed on both workers
    assert out["throughput_ratio"] > 0
    assert (tmp_path / "router.json").is_file()


def test_arm_order_alternates():
    bench = _bench_router()
    assert bench.arm_order(["a", "b"], 3) == ["a", "b", "b", "a", "a", "b"]
