"""`sglang run` and `sglang serve`.

    sglang run prog.sgl|prog.sglc|module.py:fn [--function NAME] [--model PATH] [--arg k=v ...] [--args-file batch.jsonl]
               [--backend URL] [--max-tokens N] [--temperature T] [--text] [--stream] [--stats] [--force]
    sglang serve prog.sgl|prog.sglc|module.py:fn [--model PATH] [--host H] [--port P] [--api-key KEY] [-O0|-O1]
                 [-fno-<pass>] [--drain-grace-period S] [--max-program-* N] [--force]

A `.sglc` is validated and checked fresh (compiler/artifact.py) before any model loads; --force runs a
stale or other-model artifact with a warning.

`run` prints one JSON line per batch item ({"index", "return", "variables"[, "text"]}), with a progress
bar on stderr for batches. Without --backend it starts the in-process Engine on --model (default: the
default model). `module.py:fn` is a Python `@sgl.function`, traced and compiled now (compiler/targets.py).
User mistakes print a positioned message and exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sglang.lang.sgl.errors import SglError
from sglang.compiler.plan import PlanError
from sglang.compiler.targets import load_plan  # noqa: F401  (this module's API before targets.py)


def make_backend(model: str | None, backend_url: str | None, **engine_kwargs: Any) -> Any:
    if backend_url:
        from sglang.lang.backends.runtime_endpoint import RuntimeEndpoint

        return RuntimeEndpoint(backend_url)
    from sglang.lang.backends.engine_backend import EngineBackend

    return EngineBackend(model_path=model or "default", **engine_kwargs)


def parse_kv_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SglError(f"--arg needs NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def read_batch(path: str) -> list[dict[str, Any]]:
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SglError(f"cannot read --args-file {path}: {e}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SglError(f"{path}:{i}: not a JSON object: {e.msg}") from None
        if not isinstance(row, dict):
            raise SglError(f"{path}:{i}: each line must be a JSON object of arguments, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise SglError(f"--args-file {path} has no rows")
    return rows


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sglang run", description="Run a .sgl program, a compiled .sglc plan or a Python "
                                "@sgl.function (module.py:fn).")
    p.add_argument("program", help="prog.sgl, prog.sglc or module.py:fn")
    p.add_argument("--function", help="function to run (default: main, else the last one defined)")
    p.add_argument("--model", default=None, help="model path for the in-process engine (default: the default model)")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE", help="an argument (repeatable)")
    p.add_argument("--args-file", help="JSON lines, one argument object per batch item")
    p.add_argument("--backend", help="URL of a running server (ours or SGLang's) instead of the in-process engine")
    p.add_argument("--max-tokens", type=int, default=None, help="default max_tokens for gens that do not set it")
    p.add_argument("--temperature", type=float, default=None, help="default temperature for gens that do not set it")
    p.add_argument("--text", action="store_true", help="also print each item's full program text")
    p.add_argument("--stream", action="store_true", help="print each variable as a JSON line when it is generated")
    p.add_argument("--stats", action="store_true", help="print engine calls and token counts on stderr")
    p.add_argument("-O", dest="opt_level", type=int, default=1, choices=(0, 1), help="optimization level for .sgl")
    _add_force(p)
    return p


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="run a stale .sglc (source changed since compiling) or one built for another model, with a warning")


def main_run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    backend = None
    try:
        plan = load_plan(args.program, args.opt_level, model=args.model, force=args.force)
        fplan = plan.function(args.function)
        batch = read_batch(args.args_file) if args.args_file else [{}]
        if args.arg:
            extra = parse_kv_args(args.arg)
            batch = [dict(row, **extra) for row in batch]
        from sglang.compiler.executor import PlanExecutor, bind_args

        for row in batch:  # check every row before loading a model
            bind_args(fplan, row)
        defaults: dict[str, Any] = {}
        if args.max_tokens is not None:
            defaults["max_new_tokens"] = args.max_tokens
        if args.temperature is not None:
            defaults["temperature"] = args.temperature
        backend = make_backend(args.model, args.backend)
        ex = PlanExecutor(plan, backend, default_sampling=defaults)
        def on_event(index: int, ev: dict[str, Any]) -> None:
            print(json.dumps({"event": "variable", "index": index, **ev}, ensure_ascii=False), flush=True)

        results = ex.run_batch(fplan.name, batch, progress=not args.stream, on_event=on_event if args.stream else None)
        failed = 0
        for r in results:
            if not args.text:
                r.pop("text", None)
            failed += "error" in r
            print(json.dumps(r, ensure_ascii=False), flush=True)
        if args.stats:
            print(json.dumps({"stats": ex.stats.as_dict()}), file=sys.stderr)
        return 1 if failed else 0
    except (SglError, PlanError) as e:
        print(str(e), file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if backend is not None and hasattr(backend, "shutdown") and not args.backend:
            backend.shutdown()


SERVE_PORT = 30001  # launch-server has 30000


def _serve_parser() -> argparse.ArgumentParser:
    from sglang.compiler.passes import PASS_ORDER
    from sglang.compiler.limits import ProgramLimits

    d = ProgramLimits()
    p = argparse.ArgumentParser(prog="sglang serve", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Serve each function of a program as POST /programs/{name}")
    p.add_argument("program", help="a .sgl program, a .sglc plan compiled by sglc, or module.py:fn")
    p.add_argument("--model", default=None, help="the model: 'default', a local HF folder or a .gguf "
                   "(None: the default model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=SERVE_PORT,
                   help="port to listen on (not launch-server's 30000, so both can run side by side)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every route but /health")
    p.add_argument("--drain-grace-period", type=float, default=30.0,
                   help="seconds a SIGTERM lets running requests finish (new ones get 503) before the rest are aborted")
    p.add_argument("-O", dest="opt_level", type=int, default=1, choices=(0, 1),
                   help="optimization level of a .sgl or module.py:fn: -O0 runs no passes, -O1 all of them")
    p.add_argument("-f", dest="flags", action="append", default=[], metavar="[no-]PASS",
                   help=f"switch one pass off (-fno-<pass>) or on (-f<pass>), repeatable; passes: {', '.join(PASS_ORDER)}")
    p.add_argument("--max-program-seconds", type=float, default=d.max_seconds, help="wall time of one program run")
    p.add_argument("--max-program-gens", type=int, default=d.max_gens,
                   help="model requests (gens, select scorings) of one program run")
    p.add_argument("--max-program-streams", type=int, default=d.max_streams,
                   help="streams (the main one and every fork branch) of one program run")
    p.add_argument("--max-program-chars", type=int, default=d.max_total_chars,
                   help="characters of prompt text one program run may build (one prompt is also bounded by the "
                        "model's context)")
    _add_force(p)
    return p


def main_serve(argv: list[str]) -> int:
    from sglang.compiler.cli import pass_flags, split_argv
    from sglang.compiler.limits import ProgramLimits

    args = _serve_parser().parse_args(split_argv(argv))
    try:
        disabled, enabled = pass_flags(args.flags)
        plan = load_plan(args.program, args.opt_level, disabled, enabled=enabled, model=args.model, force=args.force)
        limits = ProgramLimits(max_seconds=args.max_program_seconds, max_gens=args.max_program_gens,
                               max_streams=args.max_program_streams, max_total_chars=args.max_program_chars)
    except (SglError, PlanError) as e:
        print(str(e), file=sys.stderr)
        return 1
    from sglang.compiler.serve import serve

    return serve(plan, model=args.model, host=args.host, port=args.port, limits=limits, api_key=args.api_key,
                 drain_grace_period=args.drain_grace_period)
