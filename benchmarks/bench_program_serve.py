"""Program endpoints under concurrent clients: one batching executor per program vs one executor per request.

One engine, one uvicorn server per arm (a thread of this process, a free loopback port), the same program
and arguments. `--clients` concurrent HTTP clients (asyncio + httpx) each send requests back to back until
`--requests` in all are answered; the prefix cache is flushed before each arm. Arms:

  per-request  a fresh PlanExecutor per HTTP request (what `sglang serve` did before)
  batching     one BatchingExecutor per program function: concurrent requests share engine calls

Prints each arm's requests/s, engine calls and p50/p99 latency, then the ratio batching / per-request.

    python benchmarks/bench_program_serve.py                          # CPU, default model, 64 clients
    python benchmarks/bench_program_serve.py --load-format dummy --requests 128 --max-tokens 8
    python benchmarks/bench_program_serve.py --model-path "$(python benchmarks/model_dirs.py llama-3.2-1b)" \\
        --load-format dummy --dtype bfloat16 --device cuda --requests 2048 --clients 64
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_programs import CountingEngine  # noqa: E402  (one counter for both program benchmarks)

# A judge-like program: a shared system prompt, the client's question, a fork of two short gens and a select.
PROGRAM = '''
def main(question: str = "What is 2 + 2?") {
    system { "You are a careful assistant. Answer briefly." }
    user { question }
    fork f[2] as i {
        assistant { "Answer {i}: " gen a(max_tokens=MAX_TOKENS, temperature=0) }
    }
    "Is the first answer right? " select verdict(choices=["yes", "no"])
    return {"answers": [f[0].a, f[1].a], "verdict": verdict}
}
'''

ARMS = ("per-request", "batching")


async def _client(url: str, bodies: list[dict[str, Any]], next_index: list[int], lat: list[float],
                  failures: list[str]) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=600) as http:
        while next_index[0] < len(bodies):
            i = next_index[0]
            next_index[0] += 1
            t0 = time.perf_counter()
            r = await http.post(f"{url}/programs/main", json=bodies[i])
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                failures.append(f"{r.status_code}: {r.text[:200]}")


async def _drive(url: str, bodies: list[dict[str, Any]], clients: int) -> tuple[float, list[float], list[str]]:
    lat: list[float] = []
    failures: list[str] = []
    nxt = [0]
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(url, bodies, nxt, lat, failures) for _ in range(clients)))
    return time.perf_counter() - t0, lat, failures


def run_arm(arm: str, engine: Any, plan: Any, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    from sglang.compiler.serve import add_program_routes
    from sglang.lang.backends.engine_backend import EngineBackend
    from sglang.runtime.server.http_server import create_app
    from sglang.runtime.server.launch import BackgroundServer

    counting = CountingEngine(engine)
    app = create_app(engine, engine.get_server_args())
    service = add_program_routes(app, plan, EngineBackend(counting), batching=arm == "batching",
                                 registry=app.state.sglang.metrics.registry)
    engine.flush_cache()
    with BackgroundServer(engine, app=app) as server:
        wall, lat, failures = asyncio.run(_drive(server.url, bodies, clients))
    service.close()
    lat.sort()
    return {"arm": arm, "requests": len(bodies), "clients": clients, "wall_s": round(wall, 3),
            "req_per_s": round(len(bodies) / wall, 2), "engine_calls": counting.calls,
            "p50_s": round(statistics.median(lat), 3), "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3),
            "failures": len(failures), "first_failure": failures[0] if failures else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-path", default="default", help="the model ('default': SmolLM2-135M-Instruct)")
    p.add_argument("--load-format", default="auto", help="auto | dummy (random weights at the real shapes)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--max-total-tokens", type=int, default=65536, help="the engine's KV pool in tokens")
    p.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients")
    p.add_argument("--requests", type=int, default=256, help="requests per arm, all clients together")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each of the program's two gens")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms to run, in this order")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    from sglang.compiler.lower import compile_source
    from sglang.runtime.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "judge.sgl"
        src.write_text(PROGRAM.replace("MAX_TOKENS", str(args.max_tokens)))
        plan = compile_source(src)
    bodies = [{"question": f"Question {i}: what is {i} + {i}?"} for i in range(args.requests)]
    engine = Engine(model_path=args.model_path, load_format=args.load_format, device=args.device, dtype=args.dtype,
                    max_total_tokens=args.max_total_tokens)
    try:
        results = {arm: run_arm(arm, engine, plan, bodies, args.clients) for arm in args.arms}
    finally:
        engine.shutdown()
    for r in results.values():
        print(json.dumps(r))
    if set(ARMS) <= set(results):
        ratio = results["batching"]["req_per_s"] / results["per-request"]["req_per_s"]
        print(f"requests/s at {args.clients} clients: batching {results['batching']['req_per_s']} vs per-request "
              f"{results['per-request']['req_per_s']}: x{ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["failures"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
