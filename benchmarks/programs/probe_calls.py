"""Per-call cost of a frontend's client path, against a running server (run under either sglang).

    python benchmarks/programs/probe_calls.py URL [N]

Times, in wall and client-CPU ms per call, with a 1-token greedy gen on a short prompt (so the model's share is small and
equal for every frontend): raw `requests.post` to /generate (the floor), the frontend's `fn.run()`
sequentially, then `fn.run_batch()` of N items on its default thread pool, a select, and a 2-way fork.
Prints one JSON line. Imports nothing of ours at the top: it runs under SGLang 0.2.10 too.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests
import sglang as sgl


@sgl.function
def one_gen(s, i):
    s += "Item " + i + ": the capital of France is" + sgl.gen("x", max_tokens=1, temperature=0)
    return s["x"]


@sgl.function
def one_select(s, i):
    s += "Item " + i + ": the capital of France is" + sgl.select("x", choices=[" Paris", " London"])
    return s["x"]


@sgl.function
def one_fork(s, i):
    s += "Item " + i + ": two fruits:"
    forks = s.fork(2)
    for f in forks:
        f += sgl.gen("x", max_tokens=1, temperature=0)
    return forks[0]["x"] + forks[1]["x"]


def timed(run, n: int) -> list:
    """[wall ms, client CPU ms] per call of `run()` (n calls): CPU time of this process, all threads, is what
    the frontend itself costs, and unlike wall time it does not depend on the load of a shared machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    run()
    return [(time.perf_counter() - w0) / n * 1e3, (time.process_time() - c0) / n * 1e3]


def per_call_ms(fn, n: int) -> list:
    return timed(lambda: [fn(k) for k in range(n)], n)


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64
    backend = sgl.RuntimeEndpoint(url)
    body = lambda k: {"text": f"Item {k}: the capital of France is",  # noqa: E731
                      "sampling_params": {"max_new_tokens": 1, "temperature": 0}}
    session = requests.Session()
    rows = [{"i": str(k)} for k in range(n)]
    res = {"frontend": getattr(sgl, "__version__", "?")}
    for _ in range(3):  # warm: connections, templates, thread pools
        one_gen.run(i="w", backend=backend)
    res["raw_requests_seq"] = per_call_ms(lambda k: requests.post(url + "/generate", json=body(k)).json(), n)
    res["raw_session_seq"] = per_call_ms(lambda k: session.post(url + "/generate", json=body(k)).json(), n)
    res["run_gen_seq"] = per_call_ms(lambda k: one_gen.run(i=str(k), backend=backend), n)
    res["run_select_seq"] = per_call_ms(lambda k: one_select.run(i=str(k), backend=backend), n)
    res["run_fork_seq"] = per_call_ms(lambda k: one_fork.run(i=str(k), backend=backend), n)
    with ThreadPoolExecutor(64) as pool:
        res["raw_requests_64threads"] = timed(lambda: list(pool.map(
            lambda k: requests.post(url + "/generate", json=body(k)).json(), range(n))), n)
    for name, fn in (("batch_gen", one_gen), ("batch_select", one_select), ("batch_fork", one_fork)):
        res[name] = timed(lambda: fn.run_batch(rows, backend=backend), n)
    print("PROBE " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
