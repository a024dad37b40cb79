"""LM programs against SGLang 0.2.10's own frontend: the same program text, one server of ours, five arms.

Program classes of the SGLang paper (benchmarks/programs/, each written once as `import sglang as sgl` code
that runs unchanged on both frontends): few-shot select, LLM judge (fork), tree of thought (nested forks),
skeleton of thought, multi-turn chat, JSON by regex, a ReAct agent loop (Python control flow on generated
values) and many tiny calls. Arms:

  sglang     the real sglang==0.2.10 frontend (`RuntimeEndpoint`, its thread-per-program interpreter), in a
             process of its own whose path holds it and not our package (benchmarks/sglang_0210.py)
  interp     our interpreter: `fn.run_batch` over `RuntimeEndpoint`
  default    whatever our `fn.run_batch` does by default (today the interpreter; compiled once item 2 lands)
  compiled   `compile_function(fn)` + `PlanExecutor` over `RuntimeEndpoint`
  inproc     the same plan + `PlanExecutor` over `EngineBackend` (in this process, on the server's engine)

The HTTP arms are client processes (arm_child.py) against one server of ours in this process; before every
run the prefix cache is flushed and the counters read: `/generate` calls (the server's per-route counter;
engine calls for inproc), computed prefill tokens and cached tokens (engine.stats()). Wall is the median of
--repeat runs; outputs are compared item by item with the sglang arm (else interp).

    python benchmarks/bench_programs.py --items 8                         # CPU, default model
    python benchmarks/bench_programs.py --model-path "$(python benchmarks/model_dirs.py llama-3.2-1b)" \\
        --load-format dummy --dtype bfloat16 --device cuda --items 64 256 --sglang-target /tmp/sgl0210
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import programs  # noqa: E402
import sglang_0210  # noqa: E402

ARMS = ("sglang", "interp", "default", "compiled", "inproc")
HTTP_MODES = {"sglang": "sglang0210", "interp": "interp", "default": "default", "compiled": "compiled"}
CHILD = HERE / "programs" / "arm_child.py"


# --------------------------------------------------------------------------- counters

class CountingEngine:
    """The engine as EngineBackend sees it, counting native generate calls (the inproc arm's `/generate`)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.calls = engine, 0

    def generate(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.engine.generate(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def generate_calls(url: str) -> int:
    """The server's count of `/generate` requests so far, any status (its Prometheus per-route counter)."""
    import httpx

    total = 0
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("sglang_http_requests_total{") and 'route="/generate"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def wait_idle_and_flush(engine: Any, timeout: float = 120.0) -> None:
    """Every run starts cold: wait until nothing runs, then flush the prefix cache (refused while busy)."""
    deadline = time.monotonic() + timeout
    while True:
        st = engine.stats()
        if st["running"] == 0 and st["waiting"] == 0 and engine.flush_cache() is not False:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"engine not idle after {timeout:.0f} s: {st}")
        time.sleep(0.05)


class Counters:
    """Before/after snapshot of one run's server-side work."""

    def __init__(self, engine: Any, url: str, log: Optional[PromptLog] = None) -> None:
        self.engine, self.url, self.log = engine, url, log

    def snap(self) -> dict[str, int]:
        st = self.engine.stats()
        return {"prefill": int(st["prefill_tokens"]), "cached": int(st["cached_tokens"]),
                "calls": generate_calls(self.url), "prompt_log": len(self.log.prompts) if self.log else 0}

    def delta(self, before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
        """The run's counters, and the prompts it sent over HTTP (what the server's log holds since `before`)."""
        out: dict[str, Any] = {k: after[k] - before[k] for k in before if k != "prompt_log"}
        if self.log is not None:
            out["prompts"] = self.log.prompts[before["prompt_log"]:after["prompt_log"]]
        return out


class PromptLog:
    """ASGI middleware in front of our server: every prompt (text, or token ids) that reaches `/generate`, in
    arrival order, so that the prompts of two arms' runs can be compared (`same_prompts`). Pure ASGI: the
    body it read is handed on unchanged and later receives (disconnect detection) go to the server's own."""

    def __init__(self, app: Any) -> None:
        self.app, self.prompts = app, []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != "/generate" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        messages, body = [], b""
        while True:
            msg = await receive()
            messages.append(msg)
            body += msg.get("body", b"")
            if msg.get("type") != "http.request" or not msg.get("more_body"):
                break
        self.prompts.extend(request_prompts(body))

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def request_prompts(body: bytes) -> list[Any]:
    """The prompts of one native `/generate` body (one or a batch) that generate or are scored: texts, or
    token id tuples. Cache warm-ups (no token, no logprob) are left out: the frontends differ in those by
    protocol (SGLang's select prefills its prompt alone; our plans warm a fork's parent or not), not by text."""
    try:
        req = json.loads(body)
    except ValueError:
        return []
    if not isinstance(req, dict):
        return []
    if req.get("text") is not None:
        prompts = [req["text"]] if isinstance(req["text"], str) else list(req["text"])
    elif req.get("input_ids"):
        ids = req["input_ids"]
        prompts = [tuple(v) for v in ids] if isinstance(ids[0], list) else [tuple(ids)]
    else:
        return []

    def per_prompt(value: Any, i: int) -> Any:  # a field sent once for the batch, or one per prompt
        return value[i] if isinstance(value, list) else value

    return [p for i, p in enumerate(prompts)
            if (per_prompt(req.get("sampling_params") or {}, i) or {}).get("max_new_tokens", 1) != 0
            or per_prompt(req.get("return_logprob"), i)]


def same_prompts(ref: list[Any], other: list[Any]) -> int:
    """How many of the reference run's distinct prompts the other run sent too (both frontends send the
    prompt text they built; different templates or a different control-flow path make them differ)."""
    return len(set(ref) & set(other))


def template_parity(choice: Optional[str], arms: list[str], model_path: str, args: argparse.Namespace) -> Optional[str]:
    """The chat template our server is started with (None: the model's own): with `choice` "sglang" (the
    default when the SGLang arm runs) the one SGLang 0.2.10's frontend picks for this model path, so that both
    frontends build the same prompt text; "model": the model's own jinja template; else a template name."""
    if choice is None:
        choice = "sglang" if "sglang" in arms else "model"
    if choice == "model":
        return None
    if choice != "sglang":
        return choice
    python, env = sglang_0210.python_and_env(args.sglang_target, args.sglang_python)
    theirs = sglang_0210.chat_template_for(model_path, python, env)
    name = equal_named_template(theirs)
    if name is None:
        raise SystemExit(f"SGLang {sglang_0210.VERSION} picks chat template {theirs['name']!r} for {model_path!r} and "
                         f"none of ours renders the same roles; pass --chat-template NAME or model")
    return name


def equal_named_template(theirs: dict[str, Any]) -> Optional[str]:
    """Our named template with exactly SGLang's role strings and default system prompt (None if none)."""
    from sglang.runtime.chat_template import NAMED

    if theirs.get("style", "PLAIN") != "PLAIN":  # e.g. LLAMA2: folds the system prompt into the first user turn
        return None
    for name, ours in NAMED.items():
        if ({r: list(ours.roles[r]) for r in theirs["roles"]} == theirs["roles"]
                and ours.default_system_prompt == theirs.get("default_system_prompt")):
            return name
    return None


# --------------------------------------------------------------------------- arms

class ChildArm:
    """An HTTP arm: a client process speaking arm_child.py's line protocol."""

    def __init__(self, arm: str, url: str, python: str, env: dict[str, str]) -> None:
        self.arm = arm
        self.proc = subprocess.Popen([python, str(CHILD), HTTP_MODES[arm], url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())

    def _send(self, obj: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def _recv(self) -> dict[str, Any]:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"arm {self.arm}: client process exited (rc={self.proc.poll()})")
            if line.startswith("{"):  # anything else is a library's chatter on stdout
                msg = json.loads(line)
                if "fatal" in msg:
                    raise RuntimeError(f"arm {self.arm}: {msg['fatal']}")
                return msg

    def run(self, cls: str, items: int, scale: float, threads: Any, engine: Any, counters: Counters) -> dict:
        self._send({"cls": cls, "items": items, "scale": scale, "threads": threads})
        ready = self._recv()
        if "error" in ready:
            return {"error": ready["error"], "trace": ready.get("trace")}
        wait_idle_and_flush(engine)
        before = counters.snap()
        self._send({"go": True})
        res = self._recv()
        wait_idle_and_flush(engine, timeout=600)  # aborted leftovers of a failed run must not leak into the next
        res.update(counters.delta(before, counters.snap()), prep_s=ready.get("prep_s"))
        return res

    def close(self) -> None:
        try:
            self._send({"quit": True})
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()


class InprocArm:
    """The compiled plan over EngineBackend on the server's own engine (no HTTP)."""

    arm = "inproc"

    def __init__(self) -> None:
        self.plans: dict[tuple[str, float], Any] = {}

    def run(self, cls: str, items: int, scale: float, threads: Any, engine: Any, counters: Counters) -> dict:
        from sglang.compiler.executor import PlanExecutor
        from sglang.compiler.lower import compile_function
        from sglang.lang.backends.engine_backend import EngineBackend

        mod = programs.load(cls)
        t0 = time.perf_counter()
        try:
            if (cls, scale) not in self.plans:
                self.plans[(cls, scale)] = compile_function(mod.build(scale))
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        prep = time.perf_counter() - t0
        rows = mod.rows(items)
        wait_idle_and_flush(engine)
        before = counters.snap()
        counting = CountingEngine(engine)
        t0 = time.perf_counter()
        results = PlanExecutor(self.plans[(cls, scale)], EngineBackend(counting)).run_batch(None, rows)
        wall = time.perf_counter() - t0
        res = counters.delta(before, counters.snap())
        res.pop("prompts", None)  # no HTTP: the engine's prompts are not logged
        outputs = [{"error": r["error"]} if r.get("error") else
                   {"value": json.loads(json.dumps(r.get("return"), default=str)), "text": r.get("text")}
                   for r in results]
        res.update(calls=counting.calls, wall=wall, outputs=outputs, prep_s=prep,
                   errors=sum("error" in o for o in outputs))
        return res

    def close(self) -> None:
        pass


def our_child_env() -> dict[str, str]:
    """Our arms' clients see this checkout's package first (as this process does)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


def start_arms(names: list[str], url: str, args: argparse.Namespace) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for name in names:
        if name == "inproc":
            arms[name] = InprocArm()
        elif name == "sglang":
            python, env = sglang_0210.python_and_env(args.sglang_target, args.sglang_python)
            arms[name] = ChildArm(name, url, python, env)
        else:
            arms[name] = ChildArm(name, url, sys.executable, our_child_env())
    return arms


# --------------------------------------------------------------------------- aggregation

def same_outputs(ref: list[dict[str, Any]], other: list[dict[str, Any]], key: str = "value") -> int:
    """Items whose `key` ("value": the return value, "text": the full text) is equal in both runs; an item
    that failed in either counts as different."""
    return sum(1 for a, b in zip(ref, other) if key in a and key in b and a[key] == b[key])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One (class, arm) cell from its repeats: median wall, counters and outputs of the last run."""
    ok = [r for r in runs if "wall" in r]
    if not ok:
        return {"error": runs[-1].get("error", "no run"), "trace": runs[-1].get("trace")}
    last = ok[-1]
    cell = {k: last[k] for k in ("calls", "prefill", "cached", "errors", "cpu", "prompts") if k in last}
    cell.update(wall=statistics.median(r["wall"] for r in ok), walls=[r["wall"] for r in ok],
                prep_s=last.get("prep_s"), outputs=last["outputs"])
    if last.get("error"):
        cell["error"] = last["error"]
    return cell


def compare(results: dict[str, dict[str, Any]], ref_arm: str) -> None:
    """Add outputs-equal counts and wall ratios (ref wall / arm wall: >1 = faster than the reference)."""
    ref = results.get(ref_arm, {})
    for cell in results.values():
        if "outputs" in cell and "outputs" in ref:
            cell["same"] = same_outputs(ref["outputs"], cell["outputs"])
            cell["same_text"] = same_outputs(ref["outputs"], cell["outputs"], "text")
            cell["speedup"] = ref["wall"] / cell["wall"] if cell["wall"] else None
        if "prompts" in cell and "prompts" in ref:  # the HTTP arms (the server logged their prompts)
            cell["same_prompts"] = same_prompts(ref["prompts"], cell["prompts"])
            cell["ref_prompts"] = len(set(ref["prompts"]))


def geomean(xs: list[float]) -> Optional[float]:
    xs = [x for x in xs if x]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def markdown(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [f"\nchat template of our server: {report.get('chat_template', 'model')}"]
    for block in report["runs"]:
        n = block["items"]
        lines += [f"\n**{n} items per program** (wall s = median of {report['repeat']}; ×{ref} = {ref} wall / arm "
                  f"wall; client CPU = the client process's CPU time, all threads; prefill = prompt tokens the server computed; "
                  f"same = return values / full texts equal to {ref}'s; same prompts = {ref}'s distinct prompt texts "
                  f"that the arm sent too)\n",
                  "| class | arm | wall s | ×" + ref + " | client CPU s | /generate calls | prefill tok | cached tok | "
                  "same ret | same text | same prompts | errors |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for cls, cells in block["classes"].items():
            for arm, c in cells.items():
                if "wall" not in c:
                    lines.append(f"| {cls} | {arm} | n/a | | | | | | | | | {c.get('error', '')[:90]} |")
                    continue
                sp = f"{c['speedup']:.2f}" if c.get("speedup") else ""
                err = f"{c.get('errors', 0)}" + (f" ({c['error'][:60]})" if c.get("error") else "")
                cpu = f"{c['cpu']:.2f}" if c.get("cpu") is not None else ""  # inproc: the engine shares the process
                lines.append(f"| {cls} | {arm} | {c['wall']:.2f} | {sp} | {cpu} | {c['calls']} | {c['prefill']} | "
                             f"{c['cached']} | {c.get('same', '')}/{n} | {c.get('same_text', '')}/{n} | "
                             f"{c.get('same_prompts', '')}/{c.get('ref_prompts', '')} | {err} |")
        gm = [f"{arm} {g:.2f}" for arm in report["arms"] if arm != ref
              and (g := geomean([cells[arm].get("speedup") for cells in block["classes"].values() if arm in cells]))]
        lines.append(f"\ngeometric mean ×{ref}: " + ", ".join(gm))
    return "\n".join(lines)


def strip_outputs(report: dict[str, Any]) -> dict[str, Any]:
    """The report without per-item outputs (kept only with --keep-outputs: they are large at 256 items)."""
    out = json.loads(json.dumps(report))
    for block in out["runs"]:
        for cells in block["classes"].values():
            for c in cells.values():
                c.pop("outputs", None)
                c.pop("prompts", None)
    return out


# --------------------------------------------------------------------------- main

def run_benchmark(engine: Any, url: str, args: argparse.Namespace, log: Optional[PromptLog] = None) -> dict[str, Any]:
    arms = start_arms(args.arms, url, args)
    ref = "sglang" if "sglang" in arms else args.arms[0]
    report: dict[str, Any] = {"arms": args.arms, "reference": ref, "repeat": args.repeat, "scale": args.scale,
                              "classes": args.classes, "runs": []}
    counters = Counters(engine, url, log)
    try:
        for items in args.items:
            block: dict[str, Any] = {"items": items, "classes": {}}
            report["runs"].append(block)
            for cls in args.classes:
                runs: dict[str, list] = {a: [] for a in arms}
                for rep in range(args.warmup + args.repeat):
                    for name, arm in arms.items():  # interleaved: load from elsewhere hits every arm alike
                        if runs[name] and "wall" not in runs[name][-1]:
                            continue  # the arm cannot run this class (e.g. untraceable): asked once
                        res = arm.run(cls, items, args.scale, args.threads, engine, counters)
                        if rep >= args.warmup or "wall" not in res:
                            runs[name].append(res)
                        print(f"[{items} items] {cls:<20} {name:<9} " + (
                            f"wall {res['wall']:.2f}s calls {res['calls']} prefill {res['prefill']} "
                            f"cached {res['cached']} errors {res['errors']}" + (
                                f" prompts {len(set(res['prompts']))}" if "prompts" in res else "") if "wall" in res else
                            f"n/a: {res.get('error')}"), file=sys.stderr, flush=True)
                cells = {a: summarize(r) for a, r in runs.items()}
                compare(cells, ref)
                block["classes"][cls] = cells
    finally:
        for arm in arms.values():
            arm.close()
    return report


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default="default")
    p.add_argument("--load-format", default=None, help="e.g. dummy (random weights of the model's shapes)")
    p.add_argument("--dtype", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Engine keyword (value parsed as JSON when it parses)")
    p.add_argument("--items", type=int, nargs="+", default=[8], help="batch size(s) of every program")
    p.add_argument("--classes", nargs="+", default=list(programs.CLASSES), choices=programs.CLASSES)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per arm; wall is their median")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs per arm before the timed ones")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every fixed token budget")
    p.add_argument("--threads", default="auto", help="run_batch num_threads of the interpreter arms")
    p.add_argument("--sglang-target", help="folder of `pip install --no-deps --target` sglang==0.2.10")
    p.add_argument("--sglang-python", help="a python whose `import sglang` is 0.2.10 (default: a cached venv)")
    p.add_argument("--chat-template", help="our server's chat template: `sglang` (default with the sglang arm: the "
                   "one SGLang 0.2.10's frontend picks by the model path's name, so both frontends send the same "
                   "prompts), `model` (the model's own; default without the sglang arm) or a template name")
    p.add_argument("--markdown", help="append a dated section with the tables to this file")
    p.add_argument("--json", help="write the full report (with per-item outputs if --keep-outputs) here")
    p.add_argument("--keep-outputs", action="store_true")
    args = p.parse_args(argv)
    if args.threads != "auto":
        args.threads = int(args.threads)
    return args


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {k: v for k, v in (("load_format", args.load_format), ("dtype", args.dtype),
                                            ("device", args.device)) if v is not None}
    for item in args.engine_arg:
        key, _, value = item.partition("=")
        try:
            kw[key] = json.loads(value)
        except json.JSONDecodeError:
            kw[key] = value
    return kw


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from sglang.runtime.engine import Engine
    from sglang.runtime.server.launch import BackgroundServer

    from sglang.runtime.server.http_server import create_app

    template = template_parity(args.chat_template, args.arms, args.model_path, args)
    engine = Engine(model_path=args.model_path, **engine_kwargs(args), **({"chat_template": template} if template else {}))
    try:
        log = PromptLog(create_app(engine, engine.get_server_args()))
        with BackgroundServer(engine, app=log) as srv:
            engine.generate(text="warm up", sampling_params={"max_new_tokens": 2})
            report = run_benchmark(engine, srv.url, args, log)
    finally:
        engine.shutdown()
    report.update(model_path=args.model_path, engine_kwargs=engine_kwargs(args), chat_template=template or "model",
                  commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=REPO).stdout.strip())
    table = markdown(report)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(report if args.keep_outputs else strip_outputs(report), indent=1))
    if args.markdown:
        date = datetime.date.today().isoformat()
        with open(args.markdown, "a") as f:
            f.write(f"\n## Programs vs SGLang 0.2.10's frontend ({date}, commit {report['commit']}, "
                    f"{args.model_path} {' '.join(args.engine_arg)})\n\n`python benchmarks/bench_programs.py "
                    f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
