"""Turn one GPU session's JSON results into Markdown tables for docs/benchmarks.md.

    python benchmarks/report.py RESULTS_DIR [--title "Run 2 ..."] >> docs/benchmarks.md

Reads whichever of these RESULTS_DIR holds: bench_one_batch.json, check_kernels.json, check_e2e.json,
kernel_timings.json, bench_offline*.json, serving_arms.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(d: Path, name: str) -> Any:
    p = d / name
    return json.loads(p.read_text()) if p.is_file() else None


def short(failed: list | None) -> str:
    """First line of each failure message, capped: tracebacks do not belong in a table caption."""
    return "; ".join(str(f).splitlines()[0][:160] for f in failed) if failed else "none"


def one_batch(r: dict) -> list[str]:
    bw = r["copy_bandwidth_gbs"]
    out = [f"### bench_one_batch ({r['steps']} timed decode steps, median; {r['dtype']})", "",
           f"Measured copy bandwidth (read + write bytes / time, 1 GiB device-to-device): **{bw:.0f} GB/s**. "
           "Decode ms is wall clock per step (host batch building included), gpu ms the device time of the step "
           "(CUDA events); effective bandwidth = weight bytes / decode ms.", "",
           "| model | arm | bs | input | prefill ms | decode ms | gpu ms | tok/s | eff. GB/s | % copy BW |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["results"]:
        gpu = x.get("decode_gpu_ms", float("nan"))
        out.append(f"| {x['model']} | {x['arm']} | {x['batch_size']} | {x['input_len']} | {x['prefill_ms']:.1f} | "
                   f"{x['decode_ms']:.2f} | {'' if gpu != gpu else f'{gpu:.2f}'} | {x['decode_tok_s']:.0f} | "
                   f"{x['eff_bw_gbs']:.0f} | {100 * x['eff_bw_gbs'] / bw:.1f} |")
    by: dict = {}
    for x in r["results"]:
        by.setdefault((x["model"], x["batch_size"], x["input_len"]), {})[x["arm"]] = x
    ratios = []
    for (m, bs, n), arms in by.items():
        for arm, x in arms.items():
            if arm.startswith("full"):
                parts = [f"{arm}/{b} decode x{arms[b]['decode_ms'] / x['decode_ms']:.1f}, "
                         f"prefill x{arms[b]['prefill_ms'] / x['prefill_ms']:.1f}" for b in ("hf", "naive") if b in arms]
                if parts:
                    ratios.append(f"- {m} bs={bs} in={n}: " + "; ".join(parts))
    if ratios:
        out += ["", "Ratios (baseline time / full time):", *ratios]
    for key, prof in (r.get("profiles") or {}).items():
        total = prof[0].get("kernel_us_per_step_total") if prof else None
        out += ["", f"Decode profile {key} (per step, {total} us of kernels):", "",
                "| us/step | calls/step | kernel |", "|---:|---:|---|"]
        out += [f"| {p['us_per_step']:.1f} | {p['calls_per_step']:.0f} | `{p['kernel'][:80]}` |" for p in prof[1:16]]
    return out


def checks(c: dict | None, e: dict | None, t: dict | None) -> list[str]:
    out = []
    if c:
        ok = sum(x["ok"] for x in c["checks"])
        worst = {}
        for x in c["checks"]:
            k = x["name"].split()[0] + " " + x["dtype"].replace("torch.", "")
            worst[k] = max(worst.get(k, 0.0), x["rel_err"] if x["rel_err"] == x["rel_err"] else float("inf"))
        out += ["### Kernel and backend checks at real sizes", "",
                f"{ok}/{len(c['checks'])} passed; failed: {short(c.get('failed'))}. Worst relative error per kernel:", "",
                "| kernel / backend, dtype | worst ‖out−ref‖/‖ref‖ |", "|---|---:|"]
        out += [f"| {k} | {v:.1e} |" for k, v in sorted(worst.items())]
    if e:
        out += ["", "### End-to-end greedy tokens on GPU vs the CPU fp32 reference (same dummy weights)", "",
                "| case | equal-prefix length per prompt | exact | logits rel. err (prefill, 1st decode) |",
                "|---|---|---|---|"]
        for g in e.get("greedy", []):
            le = ", ".join(f"{v:.1e}" for v in g.get("logits_rel_err", []))
            out.append(f"| {g['case']} | {g['tokens_equal_prefix']} | {g['exact']} | {le} |")
        for m in e.get("memory", []):
            out.append(f"\nKV pool sizing: {m}")
        if e.get("failed"):
            out.append(f"\nfailed: {short(e['failed'])}")
    if t:
        out += ["", "### Kernel micro-timings (triton.testing.do_bench median)", "", "| kernel | ms | note |", "|---|---:|---|"]
        for x in t.get("timings", []):
            extra = {k: v for k, v in x.items() if k not in ("name", "ms")}
            out.append(f"| {x['name']} | {x['ms']:.4f} | {extra or ''} |")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("results")
    p.add_argument("--title", default=None)
    a = p.parse_args()
    d = Path(a.results)
    lines = [f"## {a.title}", ""] if a.title else []
    lines += checks(load(d, "check_kernels.json"), load(d, "check_e2e.json"), load(d, "kernel_timings.json"))
    ob = load(d, "bench_one_batch.json")
    if ob:
        lines += ["", *one_batch(ob)]
    for f in sorted(d.glob("bench_offline*.json")):
        lines += ["", f"### {f.stem}", "", "```json", json.dumps(json.loads(f.read_text()), indent=1)[:6000], "```"]
    sv = load(d, "serving_arms.json")
    if sv:
        lines += ["", f"### Serving arms ({sv['model']})", "",
                  "| arm | dataset | req/s | out tok/s | in tok/s | cache hit | TTFT p50 ms | ITL p50 ms | failed |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sv["results"]:
            if "error" in r:
                lines.append(f"| {r['arm']} | error: {r['error']} | | | | | | | |")
            for ds in ("random", "shared_prefix"):
                s = r.get(ds)
                if s and "error" not in s:
                    lines.append(f"| {r['arm']} | {ds} | {s['request_throughput']:.2f} | {s['output_throughput']:.0f} | "
                                 f"{s['input_throughput']:.0f} | {s['cache_hit_rate']:.2f} | {s['ttft_ms']['p50']} | "
                                 f"{s['itl_ms']['p50']} | {s['failed']} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
