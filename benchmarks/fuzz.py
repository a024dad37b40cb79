"""Fuzz the HTTP APIs (from the server's OpenAPI schema) and the `.sgl` compiler at a large budget and
print the figures that docs/benchmarks.md records: cases tried, 5xx count (goal 0), worst latency,
peak memory. tests/test_fuzz.py runs the same code at a small budget in CI.

    python benchmarks/fuzz.py --http-examples 300 --sgl-examples 3000 [--model-path PATH] [--seed N]

The server is a real uvicorn server in this process over an Engine (default: a tiny dummy-weight Llama
built from the default model's tokenizer, so a case costs milliseconds); peak memory is this process's
(server and fuzzer together). --seed 0 replays the same cases every run; any other seed explores anew.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from conftest import TINY_LLAMA_CONFIG, make_tiny_model_dir  # noqa: E402
from fuzz_helpers import FuzzFigures, fuzz_http, fuzz_sgl, peak_rss_mb  # noqa: E402


def _tiny_model(folder: Path) -> str:
    from sglang.runtime.model_loader import resolve_model_path

    return make_tiny_model_dir(folder, TINY_LLAMA_CONFIG, resolve_model_path("default"))


def _row(name: str, f: FuzzFigures, wall: float) -> dict:
    return {"target": name, "cases": f.cases, "5xx": f.server_errors, "statuses": dict(sorted(f.statuses.items())),
            "worst_latency_s": round(f.worst_latency_s, 3), "worst_case": f.worst_case[:160],
            "wall_s": round(wall, 1), "failures": f.failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--http-examples", type=int, default=300, help="generated bodies per HTTP operation")
    p.add_argument("--sgl-examples", type=int, default=3000, help="generated .sgl programs")
    p.add_argument("--model-path", default=None, help="serve this model instead of the tiny dummy Llama")
    p.add_argument("--seed", type=int, default=0, help="0: the same cases every run; other: fresh cases")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)

    from sglang.runtime.engine import Engine
    from sglang.runtime.server.launch import BackgroundServer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = {"model_path": args.model_path} if args.model_path else \
            {"model_path": _tiny_model(Path(tmp) / "tiny"), "load_format": "dummy", "max_total_tokens": 8192}
        engine = Engine(**kwargs, max_batch_size_per_request=8, served_model_name="fuzz")
        try:
            with BackgroundServer(engine) as srv:
                start = time.monotonic()
                figures = fuzz_http(srv.url, args.http_examples, seed=args.seed)
                rows.append(_row("HTTP (4 POST operations)", figures, time.monotonic() - start))
        finally:
            engine.shutdown()
    start = time.monotonic()
    rows.append(_row(".sgl parse + compile", fuzz_sgl(args.sgl_examples, seed=args.seed), time.monotonic() - start))
    report = {"rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1)}
    print("| target | cases | 5xx / crashes | worst latency s | wall s | statuses |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['target']} | {r['cases']} | {r['5xx']} | {r['worst_latency_s']} | {r['wall_s']} | {r['statuses']} |")
    print(f"peak RSS of the process (server + fuzzer): {report['peak_rss_mb']} MiB")
    for r in rows:
        for f in r["failures"]:
            print("FAILURE", r["target"], f)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 1 if any(r["5xx"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
