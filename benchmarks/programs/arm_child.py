"""One benchmark arm as a client process: runs program classes against a server when the parent says so.

    python benchmarks/programs/arm_child.py MODE URL

MODE is `sglang0210` (the real SGLang 0.2.10 frontend: this process must see it, and not our package, as
`sglang`), `interp` or `default` (our `fn.run_batch` over `RuntimeEndpoint`) or `compiled` (our compiled plan
+ `PlanExecutor` over `RuntimeEndpoint`). It imports nothing of ours at the top, so that it runs under
SGLang 0.2.10 too.

Line protocol on stdin/stdout, one JSON object a line, so that the parent can flush the server's cache
and read its counters around each run (the wall time here excludes process start, imports and compiling):
  parent: {"cls": NAME, "items": N, "scale": S, "threads": T}  child: {"ready": true, "prep_s": ...}
  parent: {"go": true}                   child: {"wall": s, "cpu": client CPU s, "outputs": [...], "errors": n}
  a child that cannot run a class answers {"error": "..."} instead of ready.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/, for `programs`
import sglang as sgl  # noqa: E402  (whichever sglang this process was given)

import programs  # noqa: E402


def _plain(value: Any) -> Any:
    """A JSON-comparable form of a program's return value (tuples become lists, odd objects strings)."""
    return json.loads(json.dumps(value, default=str))


def interp_run_batch(fn: Any, rows: list, backend: Any, threads: Any, **opts: Any) -> list:
    """Run `fn` on every row through `run_batch`: SGLang's interpreter, ours (`compiled=False`: our
    `run_batch` compiles by default) or our default path (no options). This is the one place that says what
    "the interpreter" means for the benchmark."""
    states = fn.run_batch(rows, backend=backend, num_threads=threads, **opts)
    return [_state_result(st) for st in states]


def _state_result(state: Any) -> Any:
    err = getattr(state, "error", None)
    err = err() if callable(err) else err
    if err is None and getattr(state, "ret_value", None) is None:
        err = "no return value"
    return {"error": repr(err)} if err is not None else {"value": _plain(state.ret_value), "text": state.text()}


def compiled_runner(fn: Any, backend: Any) -> Callable[[list], list]:
    """Our compiled arm: trace + compile once (not timed), then a PlanExecutor per run."""
    from sglang.compiler.executor import PlanExecutor
    from sglang.compiler.lower import compile_function

    plan = compile_function(fn)

    def run(rows: list) -> list:
        results = PlanExecutor(plan, backend).run_batch(None, rows)
        return [{"error": r["error"]} if r.get("error") else {"value": _plain(r.get("return")), "text": r.get("text")}
                for r in results]

    return run


def prepare(mode: str, url: str, cmd: dict, cache: dict) -> Callable[[], list]:
    key = (cmd["cls"], cmd.get("scale", 1.0))
    if key not in cache:
        mod = programs.load(cmd["cls"])
        fn = mod.build(cmd.get("scale", 1.0))
        backend = cache.setdefault("backend", sgl.RuntimeEndpoint(url))
        runner = compiled_runner(fn, backend) if mode == "compiled" else None
        cache[key] = (mod, fn, backend, runner)
    mod, fn, backend, runner = cache[key]
    rows = mod.rows(cmd["items"])
    if runner is not None:
        return lambda: runner(rows)
    opts = {"compiled": False} if mode == "interp" else {}  # "default": what fn.run_batch does by default
    return lambda: interp_run_batch(fn, rows, backend, cmd.get("threads", "auto"), **opts)


def main(argv: list) -> int:
    mode, url = argv[1], argv[2]
    if mode == "sglang0210" and sgl.__version__ != "0.2.10":
        print(json.dumps({"fatal": f"expected sglang 0.2.10, got {sgl.__version__} from {sgl.__file__}"}), flush=True)
        return 2
    cache: dict = {}
    send = lambda obj: print(json.dumps(obj), flush=True)  # noqa: E731
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        t0 = time.perf_counter()
        try:
            job = prepare(mode, url, cmd, cache)
        except Exception as exc:  # e.g. a program that cannot be traced: the arm has no number for it
            send({"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
            continue
        send({"ready": True, "prep_s": time.perf_counter() - t0})
        json.loads(sys.stdin.readline())  # {"go": true}: the cache is flushed, the counters read
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            outputs = job()
        except Exception as exc:
            send({"wall": time.perf_counter() - t0, "outputs": [], "errors": cmd["items"],
                  "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
            continue
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0  # cpu: the client's own cost, all threads
        send({"wall": wall, "cpu": cpu, "outputs": outputs, "errors": sum("error" in o for o in outputs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
