"""Per-call client overhead of our frontend vs SGLang 0.2.10's, on one server of ours (the interpreter profile).

    python benchmarks/bench_client_overhead.py [--n 64] [--model-path default]

Runs benchmarks/programs/probe_calls.py under each frontend (SGLang's in a process whose path holds
sglang==0.2.10, see sglang_0210.py) and prints wall and client-CPU ms per call (CPU is the frontend's own cost, whatever the load) for raw HTTP, fn.run (gen / select / fork) and
fn.run_batch; the model's work per call is one token of a short prompt, the same for both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sglang_0210  # noqa: E402
from bench_programs import our_child_env  # noqa: E402

PROBE = HERE / "programs" / "probe_calls.py"


def probe(python: str, env: dict[str, str], url: str, n: int) -> dict:
    proc = subprocess.run([python, str(PROBE), url, str(n)], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), timeout=1800)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        raise RuntimeError(f"probe failed under {python}:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("PROBE "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default="default")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--sglang-target")
    p.add_argument("--sglang-python")
    args = p.parse_args(argv)
    from sglang.runtime.engine import Engine
    from sglang.runtime.server.launch import BackgroundServer

    with Engine(model_path=args.model_path) as engine, BackgroundServer(engine) as srv:
        theirs = probe(*sglang_0210.python_and_env(args.sglang_target, args.sglang_python), srv.url, args.n)
        ours = probe(sys.executable, our_child_env(), srv.url, args.n)
    print(f"{'ms per call':<24}{'wall: 0.2.10':>13}{'ours':>8}{'CPU: 0.2.10':>13}{'ours':>8}{'CPU ours/theirs':>17}")
    for key in theirs:
        if key != "frontend":
            (tw, tc), (ow, oc) = theirs[key], ours[key]
            print(f"{key:<24}{tw:>13.2f}{ow:>8.2f}{tc:>13.2f}{oc:>8.2f}{oc / tc if tc else float('nan'):>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
