"""Summarize a forward timeline (SGLANG_TIMELINE=path, sglang/runtime/scheduler/timeline.py): where serving time went.

    python benchmarks/timeline_summary.py timeline.jsonl [--json summary.json] [--gaps 8]

A file is cut into runs at each "flush_cache" mark (benchmarks flush the cache between runs); each run prints:
  - wall time in extend / mixed / decode steps, between steps (host idle or loop overhead), and the device's
    busy time (CUDA events; GPU idle = span - device busy);
  - extend throughput (tokens per second of extend wall and of extend device time), rows and tokens per round;
  - decode ms/step (wall and device) by batch-size bucket, with the share of CUDA-graph replays;
  - when requests arrived, when the last one was admitted and got its first token, and how many extend rounds
    and decode steps ran until then;
  - host time around the forwards (admission + batch building, launch, sampling + processing);
  - the longest gaps between steps.
Times are seconds from the run's first step unless named otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, Optional

BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048)  # decode batch sizes: (previous, this]
MODES = ("extend", "mixed", "decode")


def load(path: str) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """(meta line, runs): the step lines cut at every flush_cache mark; runs without steps dropped."""
    meta: dict[str, Any] = {}
    runs: list[list[dict[str, Any]]] = [[]]
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            kind = rec.get("kind")
            if kind == "meta":
                meta = rec
            elif kind == "mark" and rec.get("name") == "flush_cache":
                runs.append([])
            elif kind == "step":
                runs[-1].append(rec)
    return meta, [sorted(r, key=lambda s: s["t0"]) for r in runs if r]


def bucket_of(rows: int) -> str:
    lo = 0
    for hi in BUCKETS:
        if rows <= hi:
            return f"{lo + 1}-{hi}" if hi > lo + 1 else str(hi)
        lo = hi
    return f">{BUCKETS[-1]}"


def _device_s(steps: Iterable[dict[str, Any]]) -> Optional[float]:
    ms = [s.get("device_ms") for s in steps]
    return None if not ms or any(m is None for m in ms) else sum(ms) / 1e3


def _mode_stats(steps: list[dict[str, Any]]) -> dict[str, Any]:
    wall = sum(s["t1"] - s["t0"] for s in steps)
    dev = _device_s(steps)
    tokens = sum(s["extend_tokens"] for s in steps)
    attn: dict[str, int] = {}
    for s in steps:
        if s.get("attn"):
            attn[s["attn"]] = attn.get(s["attn"], 0) + 1
    return {"steps": len(steps), "wall_s": wall, "device_s": dev, "tokens": tokens, "attention": attn,
            "rows": sum(s["rows"] for s in steps), "prefix_tokens": sum(s["prefix_tokens"] for s in steps),
            "tokens_per_s_wall": tokens / wall if wall > 0 else None,
            "tokens_per_s_device": tokens / dev if dev else None,
            "graph_share": sum(bool(s.get("graph")) for s in steps) / len(steps) if steps else None}


def _decode_buckets(steps: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        by.setdefault(bucket_of(s["rows"]), []).append(s)
    out = {}
    for name, group in sorted(by.items(), key=lambda kv: min(s["rows"] for s in kv[1])):
        dev = _device_s(group)
        out[name] = {"steps": len(group),
                     "wall_ms_per_step": 1e3 * sum(s["t1"] - s["t0"] for s in group) / len(group),
                     "device_ms_per_step": 1e3 * dev / len(group) if dev is not None else None,
                     "graph_share": sum(bool(s.get("graph")) for s in group) / len(group)}
    return out


def _last(steps: list[dict[str, Any]], key: str) -> Optional[int]:
    idx = [i for i, s in enumerate(steps) if s.get(key)]
    return idx[-1] if idx else None


def time_at_share(steps: list[dict[str, Any]], key: str, share: float, start: float) -> Optional[float]:
    """When the count `key` (per step) reached `share` of its total: e.g. the median request's first token."""
    total = sum(s.get(key, 0) for s in steps)
    if not total:
        return None
    seen = 0
    for s in steps:
        seen += s.get(key, 0)
        if seen >= share * total:  # arrivals count at the step's start, first tokens at its end
            return (s["t0"] if key == "arrived" else s["t1"]) - start
    return None


def _admission(steps: list[dict[str, Any]], start: float) -> dict[str, Any]:
    arrived = [i for i, s in enumerate(steps) if s.get("arrived")]
    last_admit, last_first = _last(steps, "admitted"), _last(steps, "first_tokens")
    upto = steps[: last_first + 1] if last_first is not None else []
    return {
        "requests_arrived": sum(s.get("arrived", 0) for s in steps),
        "requests_admitted": sum(s.get("admitted", 0) for s in steps),
        "first_tokens": sum(s.get("first_tokens", 0) for s in steps),
        # a request counts at the first step after the scheduler took it in
        "first_arrival_s": steps[arrived[0]]["t0"] - start if arrived else None,
        "last_arrival_s": steps[arrived[-1]]["t0"] - start if arrived else None,
        # the median request reached the scheduler / got its first token by then (compare with client TTFT p50)
        "arrival_p50_s": time_at_share(steps, "arrived", 0.5, start),
        "first_token_p50_s": time_at_share(steps, "first_tokens", 0.5, start),
        "last_admitted_s": steps[last_admit]["t1"] - start if last_admit is not None else None,
        "last_first_token_s": steps[last_first]["t1"] - start if last_first is not None else None,
        "extend_rounds_until_last_first_token": sum(s["mode"] != "decode" for s in upto),
        "decode_steps_until_last_first_token": sum(s["mode"] == "decode" for s in upto),
        "max_waiting": max((s.get("waiting", 0) for s in steps), default=0),
        "max_running": max((s.get("running", 0) for s in steps), default=0),
    }


def _host(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Host seconds per step part: before the forward (admission, batch building), inside runner.forward
    (launches; waits if the runner blocks), after it (sampling, token processing, outputs)."""
    steps = [s for s in steps if "fwd_s" in s]  # a forward that raised (e.g. out of memory) has no timing
    pre = sum(s["t_fwd"] - s["t0"] for s in steps)
    fwd = sum(s["fwd_s"] for s in steps)
    post = sum(s["t1"] - s["t_fwd"] - s["fwd_s"] for s in steps)
    n = max(len(steps), 1)
    return {"pre_s": pre, "forward_call_s": fwd, "post_s": post,
            "pre_ms_per_step": 1e3 * pre / n, "forward_call_ms_per_step": 1e3 * fwd / n, "post_ms_per_step": 1e3 * post / n}


def _gaps(steps: list[dict[str, Any]], start: float, top: int) -> dict[str, Any]:
    gaps = [(b["t0"] - a["t1"], i) for i, (a, b) in enumerate(zip(steps, steps[1:]))]
    longest = sorted(gaps, reverse=True)[:top]
    return {"total_s": sum(g for g, _ in gaps),
            "longest": [{"at_s": steps[i]["t1"] - start, "gap_ms": 1e3 * g, "after": steps[i]["mode"],
                         "before": steps[i + 1]["mode"], "waiting": steps[i]["waiting"], "running": steps[i]["running"]}
                        for g, i in longest]}


def summarize_run(steps: list[dict[str, Any]], top_gaps: int = 8, origin: Optional[float] = None) -> dict[str, Any]:
    """origin: epoch seconds the admission times count from (e.g. when the benchmark client started sending);
    default the run's first step."""
    start, end = steps[0]["t0"], steps[-1]["t1"]
    span = end - start
    modes = {m: _mode_stats([s for s in steps if s["mode"] == m]) for m in MODES}
    busy = sum(m["wall_s"] for m in modes.values())
    dev = _device_s(steps)
    ext = [s for s in steps if s["mode"] != "decode"]
    return {
        "span_s": span, "steps": len(steps),
        "modes": modes,
        "between_steps_s": span - busy,
        "device_busy_s": dev, "device_idle_s": span - dev if dev is not None else None,
        "extend_rows_per_round": sum(s["rows"] for s in ext) / len(ext) if ext else None,
        "extend_tokens_per_round": sum(s["extend_tokens"] for s in ext) / len(ext) if ext else None,
        "extend_tokens_per_round_max": max((s["extend_tokens"] for s in ext), default=None),
        "decode_by_batch_size": _decode_buckets([s for s in steps if s["mode"] == "decode"]),
        "origin": "client start" if origin is not None else "first step",
        "first_step_s": start - origin if origin is not None else 0.0,
        "admission": _admission(steps, start if origin is None else origin),
        "host": {m: _host([s for s in steps if s["mode"] == m]) for m in MODES if modes[m]["steps"]},
        "gaps": _gaps(steps, start, top_gaps),
    }


def summarize_file(path: str, top_gaps: int = 8) -> dict[str, Any]:
    meta, runs = load(path)
    return {"path": path, "meta": meta, "runs": [summarize_run(r, top_gaps) for r in runs]}


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def format_run(i: int, r: dict[str, Any]) -> str:
    out = [f"run {i}: {r['steps']} steps over {r['span_s']:.3f} s"]
    for m in MODES:
        s = r["modes"][m]
        if s["steps"]:
            out.append(f"  {m:<7}{s['steps']:>7} steps  wall {s['wall_s']:8.3f} s  device {_f(s['device_s'])} s  "
                       f"{s['tokens']} tokens ({_f(s['tokens_per_s_wall'], '.0f')} tok/s wall, "
                       f"{_f(s['tokens_per_s_device'], '.0f')} tok/s device)  graphs {_f(s['graph_share'], '.0%')}"
                       + (f"  attention {s['attention']}" if s["attention"] else ""))
    out.append(f"  between steps {r['between_steps_s']:.3f} s; device busy {_f(r['device_busy_s'])} s, "
               f"idle {_f(r['device_idle_s'])} s")
    if r["extend_rows_per_round"] is not None:
        out.append(f"  extend rounds: {r['extend_rows_per_round']:.1f} rows, {r['extend_tokens_per_round']:.0f} tokens "
                   f"per round (max {r['extend_tokens_per_round_max']})")
    a = r["admission"]
    out.append(f"  times from the {r['origin']} (first step at {r['first_step_s']:.3f} s): median request in at "
               f"{_f(a['arrival_p50_s'])} s, its first token by {_f(a['first_token_p50_s'])} s")
    out.append(f"  requests: {a['requests_arrived']} arrived ({_f(a['first_arrival_s'])} .. {_f(a['last_arrival_s'])} s), "
               f"{a['requests_admitted']} admitted (last at {_f(a['last_admitted_s'])} s), {a['first_tokens']} first "
               f"tokens (last at {_f(a['last_first_token_s'])} s, after {a['extend_rounds_until_last_first_token']} "
               f"extend rounds and {a['decode_steps_until_last_first_token']} decode steps); max waiting "
               f"{a['max_waiting']}, max running {a['max_running']}")
    if r["decode_by_batch_size"]:
        out.append("  decode by batch size: " + "; ".join(
            f"{k}: {v['steps']} x {v['wall_ms_per_step']:.2f} ms wall / {_f(v['device_ms_per_step'], '.2f')} ms device"
            f" ({v['graph_share']:.0%} graphs)" for k, v in r["decode_by_batch_size"].items()))
    for m, h in r["host"].items():
        out.append(f"  host per {m} step: {h['pre_ms_per_step']:.2f} ms before the forward, "
                   f"{h['forward_call_ms_per_step']:.2f} in it, {h['post_ms_per_step']:.2f} after")
    g = r["gaps"]
    out.append(f"  gaps between steps: {g['total_s']:.3f} s in all; longest: " + ", ".join(
        f"{x['gap_ms']:.1f} ms at {x['at_s']:.3f} s ({x['after']}->{x['before']}, waiting {x['waiting']})"
        for x in g["longest"]))
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--gaps", type=int, default=8, help="longest gaps to list per run")
    p.add_argument("--json", default=None, help="also write the summary as JSON here")
    args = p.parse_args(argv)
    summary = summarize_file(args.path, args.gaps)
    m = summary["meta"]
    print(f"{args.path}: device {m.get('device')}, chunk {m.get('chunked_prefill_size')}, max prefill "
          f"{m.get('max_prefill_tokens')}, max running {m.get('max_running_requests')}, policy {m.get('schedule_policy')}")
    for i, r in enumerate(summary["runs"]):
        print(format_run(i, r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
