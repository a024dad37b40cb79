"""Compiled plan vs the interpreted Python frontend, on the same in-process engine.

For a fork-heavy, a select-heavy and a batched program (each written once in .sgl and once with the
Python frontend), run both on the same Engine and report: engine calls (native `generate` calls),
prefill tokens the engine computed (its own counter: prompt tokens not served from the prefix cache),
and wall time, as interpreter / compiled ratios. The prefix cache is flushed before every run.

    python benchmarks/bench_programs.py [--model default] [--items 8] [--repeat 2] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sglang as sgl  # noqa: E402
from sglang.compiler.executor import PlanExecutor  # noqa: E402
from sglang.compiler.lower import compile_source  # noqa: E402
from sglang.lang.backends.engine_backend import EngineBackend  # noqa: E402

CONTEXT = ("You are reviewing a short essay about renewable energy. The essay argues that solar and wind "
           "power are now cheaper than coal in most countries, that storage costs are falling quickly, and that "
           "grid upgrades are the main obstacle to faster adoption. It cites falling panel prices, new battery "
           "factories and several national grid plans. ")

FORK_SGL = f'''
def fork_heavy(topic: str) {{
    "{CONTEXT}"
    "Topic: " + topic + "\\n"
    fork views[4] as i {{
        "Perspective {{i + 1}} in one line:" gen view(max_tokens=8, stop="\\n", temperature=0)
    }}
    "Summary:" gen summary(max_tokens=8, stop="\\n", temperature=0)
    return [views[0].view, views[1].view, views[2].view, views[3].view, summary]
}}
'''


@sgl.function
def fork_heavy(s, topic):
    s += CONTEXT
    s += "Topic: " + topic + "\n"
    forks = s.fork(4)
    for i, f in enumerate(forks):
        f += f"Perspective {i + 1} in one line:" + sgl.gen("view", max_tokens=8, stop="\n", temperature=0)
    s += "Summary:" + sgl.gen("summary", max_tokens=8, stop="\n", temperature=0)
    return [forks[i]["view"] for i in range(4)] + [s["summary"]]


SELECT_SGL = f'''
def select_heavy(topic: str) {{
    "{CONTEXT}"
    "Topic: " + topic + "\\n"
    "Tone:" select tone(choices=[" positive", " negative", " neutral", " mixed"])
    "\\nEvidence:" select evidence(choices=[" strong", " weak", " anecdotal", " none"])
    "\\nAudience:" select audience(choices=[" experts", " students", " policymakers", " everyone"])
    "\\nVerdict:" select verdict(choices=[" accept", " revise", " reject"])
    return [tone, evidence, audience, verdict]
}}
'''


@sgl.function
def select_heavy(s, topic):
    s += CONTEXT
    s += "Topic: " + topic + "\n"
    s += "Tone:" + sgl.select("tone", choices=[" positive", " negative", " neutral", " mixed"])
    s += "\nEvidence:" + sgl.select("evidence", choices=[" strong", " weak", " anecdotal", " none"])
    s += "\nAudience:" + sgl.select("audience", choices=[" experts", " students", " policymakers", " everyone"])
    s += "\nVerdict:" + sgl.select("verdict", choices=[" accept", " revise", " reject"])
    return [s["tone"], s["evidence"], s["audience"], s["verdict"]]


BATCH_SGL = '''
def batched(topic: str) {
    system { "You are a helpful assistant. Answer in one short sentence." }
    user { "Give one fact about " + topic + "." }
    assistant { gen fact(max_tokens=12, stop="\\n", temperature=0) }
    return fact
}
'''


@sgl.function
def batched(s, topic):
    s += sgl.system("You are a helpful assistant. Answer in one short sentence.")
    s += sgl.user("Give one fact about " + topic + ".")
    s += sgl.assistant(sgl.gen("fact", max_tokens=12, stop="\n", temperature=0))
    return s["fact"]


TOPICS = ["solar panels", "wind turbines", "batteries", "power grids", "hydropower", "geothermal energy",
          "nuclear power", "heat pumps", "electric cars", "hydrogen", "tidal energy", "biofuels",
          "coal plants", "smart meters", "carbon prices", "offshore wind"]


class CountingEngine:
    """The engine as the backends see it, counting native generate calls."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.calls = engine, 0

    def generate(self, **kw: Any) -> Any:
        self.calls += 1
        return self.engine.generate(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def measure(engine: Any, fn: Callable[[Any], list[Any]]) -> dict[str, Any]:
    engine.flush_cache()
    before = engine.stats()
    counting = CountingEngine(engine)
    t0 = time.perf_counter()
    outputs = fn(EngineBackend(counting))
    wall = time.perf_counter() - t0
    after = engine.stats()
    return {"calls": counting.calls, "prefill": after["prefill_tokens"] - before["prefill_tokens"],
            "wall": wall, "outputs": outputs}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts are deterministic; wall time is the minimum over the repeats (the machine is shared)."""
    return dict(runs[-1], wall=min(r["wall"] for r in runs))


def run_case(engine: Any, name: str, src: str, py: Any, items: int, repeat: int = 1) -> dict[str, Any]:
    rows = [{"topic": t} for t in TOPICS[:items]]
    plan = compile_source(text=src, file=f"{name}.sgl")

    def interpreted(backend: Any) -> list[Any]:
        return [st.ret_value for st in py.run_batch(rows, backend=backend)]

    def compiled(backend: Any) -> list[Any]:
        return [r.get("return") for r in PlanExecutor(plan, backend).run_batch(name, rows)]

    interp_runs, comp_runs = [], []
    for _ in range(repeat):  # alternate, so load from elsewhere hits both sides alike
        interp_runs.append(measure(engine, interpreted))
        comp_runs.append(measure(engine, compiled))
    interp, comp = _best(interp_runs), _best(comp_runs)
    same = sum(a == b for a, b in zip(interp["outputs"], comp["outputs"]))
    return {"program": name, "items": items, "interp": interp, "compiled": comp, "same_outputs": same}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def report(results: list[dict[str, Any]]) -> str:
    head = ("| program | items | engine calls (interp / compiled) | prefill tokens (interp / compiled) | "
            "wall s (interp / compiled) | same outputs |\n|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        i, c = r["interp"], r["compiled"]
        lines.append(f"| {r['program']} | {r['items']} | {i['calls']} / {c['calls']} = {_ratio(i['calls'], c['calls'])} | "
                     f"{i['prefill']} / {c['prefill']} = {_ratio(i['prefill'], c['prefill'])} | "
                     f"{i['wall']:.2f} / {c['wall']:.2f} = {_ratio(i['wall'], c['wall'])} | "
                     f"{r['same_outputs']}/{r['items']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--items", type=int, default=8, help="batch size of every program")
    p.add_argument("--repeat", type=int, default=2, help="runs per side; wall time is the minimum")
    p.add_argument("--markdown", help="append a dated section with the table to this file")
    args = p.parse_args(argv)
    from sglang.runtime.engine import Engine

    engine = Engine(model_path=args.model)
    try:
        engine.generate(text="warm up", sampling_params={"max_new_tokens": 2})
        cases = [("fork_heavy", FORK_SGL, fork_heavy), ("select_heavy", SELECT_SGL, select_heavy),
                 ("batched", BATCH_SGL, batched)]
        results = [run_case(engine, n, src, py, args.items, args.repeat) for n, src, py in cases]
    finally:
        engine.shutdown()
    table = report(results)
    print(table)
    print(json.dumps([{k: v for k, v in r.items() if k not in ("interp", "compiled")} |
                      {"interp": {k: v for k, v in r["interp"].items() if k != "outputs"},
                       "compiled": {k: v for k, v in r["compiled"].items() if k != "outputs"}} for r in results]))
    if args.markdown:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        date = datetime.date.today().isoformat()
        with open(args.markdown, "a") as f:
            f.write(f"\n## Programs: compiled plan vs interpreter ({date}, CPU {os.cpu_count()} cores, commit {commit})\n\n"
                    f"`python benchmarks/bench_programs.py --items {args.items} --repeat {args.repeat}` on {args.model}; "
                    f"ratios are interpreter / compiled (higher = the compiled plan does less); wall = best of "
                    f"{args.repeat}.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
