"""benchmarks/bench_program_serve.py end to end at a tiny size (tiny dummy-weight Llama, CPU): both arms
answer every request and the ratio line is printed. A child process with a time limit, so a hung arm fails
the test instead of the suite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_program_serve.py"


def test_both_arms_answer_every_request(tiny_llama_path, tmp_path):
    out = tmp_path / "res.json"
    cmd = [sys.executable, str(BENCH), "--model-path", tiny_llama_path, "--load-format", "dummy",
           "--requests", "6", "--clients", "3", "--max-tokens", "2", "--max-total-tokens", "8192", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(BENCH.parents[1])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    for arm in ("per-request", "batching"):
        assert res[arm]["requests"] == 6 and res[arm]["failures"] == 0 and res[arm]["req_per_s"] > 0
    assert "requests/s at 3 clients: batching" in proc.stdout
