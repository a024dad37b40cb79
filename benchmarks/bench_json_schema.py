"""JSON-schema constrained decoding over real-world schemas: coverage, compile time, mask time, validity.

    python benchmarks/bench_json_schema.py                       # ours + xgrammar + outlines-core
    python benchmarks/bench_json_schema.py --impl ours --limit 40 --json /tmp/js.json
    python benchmarks/bench_json_schema.py --impl ours,xgrammar      # both arms in one run (same load)

Schemas: benchmarks/data/json_schemas.jsonl (real-world schemas by category; make_json_schemas.py says
where each comes from). Per schema and engine, in a child process with a time limit (`--timeout`):
- coverage: the schema compiles (an error or the time limit counts as not covered);
- compile: cold compile to a token-level constraint (ours: schema → regex → token FSM, or schema → CFG +
  the first mask; no disk cache; the process keeps its in-memory caches of lexical automata, which are
  meant to be shared across schemas);
- mask: mean µs to produce one token mask (ours: `fill_mask` into a bool row, as the scheduler calls it;
  xgrammar: `fill_next_token_bitmask`; outlines-core: `write_mask_into`) along the random walks;
- validity: random walks to EOS (seeded; past `--soft-len` tokens EOS is taken when allowed), decoded and
  checked with the `jsonschema` validator; walks that reach no EOS within `--max-len` count as unfinished.
xgrammar and outlines-core run in the bench venv (see bench_constrained.py), one subprocess per arm
(`--impl xgrammar|outlines` imports no sglang code).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_constrained import bytes_to_unicode  # noqa: E402  (GPT-2 byte table, stdlib only: the venv arms too)
DATA = os.path.join(HERE, "data", "json_schemas.jsonl")


def load_schemas(limit: Optional[int], category: Optional[str]) -> list[dict]:
    rows = [json.loads(line) for line in open(DATA, encoding="utf-8")]
    if category:
        rows = [r for r in rows if r["category"] == category]
    return rows[:limit] if limit else rows


def validate(schema: Any, text: str) -> Optional[str]:
    """None when `text` is a JSON document valid under `schema`, else the first error. A `$ref` to
    another document (not `#...`) cannot be fetched offline: it is checked as any value, which is what
    every engine here generates for it (the validator would otherwise fail on the reference itself)."""
    import jsonschema

    schema = _remote_refs_as_any(schema)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        err = next(iter(cls(schema).iter_errors(doc)), None)
    except Exception as exc:  # noqa: BLE001 - a schema the validator itself cannot use
        return f"validator failed: {type(exc).__name__}"
    return None if err is None else f"{err.message[:120]} at {list(err.absolute_path)[:6]}"


def _remote_refs_as_any(s: Any) -> Any:
    """`s` with every `$ref` that points outside the document replaced by `{}` (any value)."""
    if isinstance(s, dict):
        r = s.get("$ref")
        if isinstance(r, str) and not r.startswith("#"):
            return {k: _remote_refs_as_any(v) for k, v in s.items() if k != "$ref"}
        return {k: _remote_refs_as_any(v) for k, v in s.items()}
    if isinstance(s, list):
        return [_remote_refs_as_any(v) for v in s]
    return s


def random_walk(mask: Callable[[], Any], ids_of: Callable[[Any], list[int]], advance: Callable[[int], None],
                eos: set[int],
                token_bytes: Callable[[int], bytes], rng: random.Random, soft_len: int, max_len: int,
                mask_times: list[float], deadline: float = float("inf")) -> tuple[Optional[bytes], Optional[str]]:
    """Walk the constraint: (output bytes, None) at EOS, (None, reason) when stuck, too long or past
    `deadline` (perf_counter time)."""
    out: list[bytes] = []
    for step in range(max_len):
        if time.perf_counter() > deadline:
            return None, "unfinished"
        t = time.perf_counter()
        row = mask()  # timed: producing the engine's mask; listing its ids is the harness's business
        mask_times.append(time.perf_counter() - t)
        ids = ids_of(row)
        if not ids:
            return None, "empty mask (a token led nowhere)"
        ends = [i for i in ids if i in eos]
        if ends and (step >= soft_len or len(ends) == len(ids)):
            return b"".join(out), None
        pick = [i for i in ids if i not in eos]
        if step >= soft_len:  # steer towards the end: prefer tokens closing something
            closing = [i for i in pick if any(c in token_bytes(i) for c in b'"}]')]
            pick = closing or pick
        tid = rng.choice(pick)
        advance(tid)
        out.append(token_bytes(tid))
    return None, "unfinished"


def _summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("compile_s") is not None]
    comp = sorted(r["compile_s"] for r in ok)
    masks = [r["mask_us"] for r in ok if r.get("mask_us") is not None]
    samples = sum(r.get("valid", 0) + r.get("invalid", 0) for r in ok)
    cpu = sorted(r["compile_cpu_s"] for r in ok if r.get("compile_cpu_s") is not None)
    return {"schemas": len(rows), "compiled": len(ok),
            "compile_cpu_median_ms": 1e3 * statistics.median(cpu) if cpu else None,
            "compile_cpu_p95_ms": 1e3 * cpu[min(len(cpu) - 1, int(0.95 * len(cpu)))] if cpu else None,
            "compile_median_ms": 1e3 * statistics.median(comp) if comp else None,
            "compile_p95_ms": 1e3 * comp[min(len(comp) - 1, int(0.95 * len(comp)))] if comp else None,
            "mask_us_mean": statistics.mean(masks) if masks else None,
            "samples_valid": sum(r.get("valid", 0) for r in ok), "samples": samples,
            "samples_unfinished": sum(r.get("unfinished", 0) for r in ok)}


# ---------------------------------------------------------------- a child process per engine
def _run_children(worker: Callable, init: Callable, init_args: tuple, schemas: list[dict], timeout: float,
                   opts: dict) -> list[dict]:
    """Each schema in a forked worker (its state warm across schemas); a schema over `timeout` seconds
    (or crashing the worker) is not covered and the worker is restarted."""
    ctx = mp.get_context("fork")
    out: list[dict] = []
    pool = None
    for k, row in enumerate(schemas):
        if pool is None:
            pool = ctx.Pool(1, initializer=init, initargs=init_args)
            pool.apply(_ready)  # the initializer (tokenizer load) is not part of any schema's time
        res = pool.apply_async(worker, (row, opts, k))
        try:
            out.append(res.get(timeout=timeout))
        except mp.TimeoutError:
            out.append({"id": row["id"], "category": row["category"], "error": f"over {timeout:.0f} s"})
            pool.terminate()
            pool = None
        except Exception as exc:  # noqa: BLE001 - the worker died
            out.append({"id": row["id"], "category": row["category"], "error": f"{type(exc).__name__}: {exc}"})
            pool.terminate()
            pool = None
        last = out[-1]
        print(f"  {last['id'][:52]:52s} " + (f"{1e3 * last['compile_s']:9.1f} ms  {last.get('engine', ''):5s} "
                                               f"valid {last.get('valid', 0)}/{last.get('valid', 0) + last.get('invalid', 0)}"
                                               if last.get("compile_s") is not None else last.get("error", "")[:90]),
              file=sys.stderr, flush=True)
    if pool is not None:
        pool.terminate()
    return out


_G: dict[str, Any] = {}


def _ready() -> bool:
    return True


def _sample_walks(row: dict, opts: dict, k: int, deadline: float, walker: Callable[[], tuple], eos: set[int],
                  token_bytes: Callable[[int], bytes]) -> dict[str, Any]:
    """`opts["samples"]` random walks of one compiled schema, every arm alike: `walker()` gives a fresh walk's
    (fill the mask, allowed ids of it, advance by a token); each finished output is validated against the
    schema. Returns the counts, the first two errors (a stuck walk's reason or a validation error) and the
    mean mask time in us."""
    rng = random.Random(k)
    mask_times: list[float] = []
    valid = invalid = unfinished = 0
    errors: list[str] = []
    for _ in range(opts["samples"]):
        fill, ids_of, advance = walker()
        text, why = random_walk(fill, ids_of, advance, eos, token_bytes, rng, opts["soft_len"], opts["max_len"],
                                mask_times, deadline)
        if text is None and why == "unfinished":
            unfinished += 1
            continue
        err = why if text is None else validate(row["schema"], text.decode("utf-8", errors="replace"))
        valid += err is None
        if err is not None:
            invalid += 1
            errors.append(err)
    return {"valid": valid, "invalid": invalid, "unfinished": unfinished, "errors": errors[:2],
            "mask_us": 1e6 * statistics.mean(mask_times) if mask_times else None}


def _ours_init(tokenizer_path: str) -> None:
    import tempfile

    os.environ["SGLANG_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-js-")  # cold: no compiled grammar on disk
    sys.path.insert(0, os.path.dirname(HERE))
    from sglang.runtime.constrained import vocab_from_tokenizer
    from sglang.runtime.tokenizer import get_tokenizer

    _G["vocab"] = vocab_from_tokenizer(get_tokenizer(tokenizer_path))
    _ = _G["vocab"].trie


def _ours_worker(row: dict, opts: dict, k: int) -> dict:
    import numpy as np
    import torch

    from sglang.runtime.constrained import ConstraintCache, build_constraint_from_sampling_params, new_state
    from sglang.runtime.constrained.cfg_state import CFGConstraintState, cfg_index

    vocab = _G["vocab"]
    out: dict[str, Any] = {"id": row["id"], "category": row["category"]}
    cache = ConstraintCache(disk=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t, cpu = time.perf_counter(), time.process_time()
            spec = build_constraint_from_sampling_params({"json_schema": json.dumps(row["schema"])})
            if spec.grammar is not None:
                state: Any = CFGConstraintState(cfg_index(spec.grammar, vocab))
                state.allowed_mask()  # the start position's mask: part of getting a usable constraint
            else:
                state = new_state(spec, vocab, cache=cache)
            out["compile_s"] = time.perf_counter() - t
            out["compile_cpu_s"] = time.process_time() - cpu  # this process's CPU only: the box's load aside
        out["engine"] = "cfg" if spec.grammar is not None else "regex"
        deadline = time.perf_counter() + opts["walk_s"]
        out["warnings"] = len(caught)
    except Exception as exc:  # noqa: BLE001 - not covered
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return out
    fresh = [state]  # the first walk uses the state the compile made (its start mask is computed)

    def walker() -> tuple:
        st = fresh.pop() if fresh else (CFGConstraintState(state.index) if spec.grammar is not None
                                        else new_state(spec, vocab, cache=cache))
        row = torch.empty(st.vocab.size, dtype=torch.bool)  # one row per walk, as xgrammar's bitmask

        def fill() -> Any:
            st.fill_mask(row)
            return row.numpy()

        return fill, (lambda m: np.flatnonzero(m).tolist()), st.advance

    out.update(_sample_walks(row, opts, k, deadline, walker, set(vocab.eos_token_ids), lambda i: vocab.token_bytes[i]))
    return out


def _xgr_init(tokenizer_path: str) -> None:
    import xgrammar as xg
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    _G["tok"] = tok
    _G["info"] = xg.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    _G["bytes"] = _token_bytes_table(tok)


def _token_bytes_table(tok: Any) -> list[bytes]:
    dec = {c: b for b, c in bytes_to_unicode().items()}
    out = []
    for i in range(len(tok)):
        s = tok.convert_ids_to_tokens(i) or ""
        out.append(bytes(dec[c] for c in s) if all(c in dec for c in s) else s.encode())
    return out


def _xgr_worker(row: dict, opts: dict, k: int) -> dict:
    import torch
    import xgrammar as xg

    out: dict[str, Any] = {"id": row["id"], "category": row["category"], "engine": "xgr"}
    try:
        t, cpu = time.perf_counter(), time.process_time()
        comp = xg.GrammarCompiler(_G["info"], cache_enabled=False)
        compiled = comp.compile_json_schema(json.dumps(row["schema"]), any_whitespace=False)
        out["compile_s"] = time.perf_counter() - t
        out["compile_cpu_s"] = time.process_time() - cpu  # all of its threads
        deadline = time.perf_counter() + opts["walk_s"]
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return out
    n = _G["info"].vocab_size
    bitmask = xg.allocate_token_bitmask(1, n)

    def ids_of(_: Any) -> list[int]:
        row = torch.zeros(n, dtype=torch.float32)
        xg.apply_token_bitmask_inplace(row[None], bitmask)
        return torch.nonzero(row == 0).flatten().tolist()

    def walker() -> tuple:
        m = xg.GrammarMatcher(compiled)
        return (lambda: m.fill_next_token_bitmask(bitmask)), ids_of, m.accept_token

    out.update(_sample_walks(row, opts, k, deadline, walker, {_G["tok"].eos_token_id}, lambda i: _G["bytes"][i]))
    return out


def _outlines_init(tokenizer_path: str) -> None:
    import outlines_core as oc
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    table = _token_bytes_table(tok)
    special = set(tok.all_special_ids)
    mapping: dict[bytes, list[int]] = {}
    for tid, b in enumerate(table):
        if tid not in special:
            mapping.setdefault(b, []).append(tid)
    _G["tok"], _G["bytes"] = tok, table
    _G["vocab"] = oc.Vocabulary(tok.eos_token_id, mapping)


def _outlines_worker(row: dict, opts: dict, k: int) -> dict:
    import numpy as np
    import outlines_core as oc

    out: dict[str, Any] = {"id": row["id"], "category": row["category"], "engine": "oc"}
    try:
        t = time.perf_counter()
        rx = oc.json_schema.build_regex_from_schema(json.dumps(row["schema"]))
        index = oc.Index(rx, _G["vocab"])
        out["compile_s"] = time.perf_counter() - t
        deadline = time.perf_counter() + opts["walk_s"]
    except BaseException as exc:  # noqa: BLE001 - pyo3 panics are BaseExceptions
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return out
    n = len(_G["bytes"])

    def walker() -> tuple:
        g = oc.Guide(index)
        mask = np.zeros((n + 31) // 32, dtype=np.int32)

        def ids_of(_: Any) -> list[int]:
            bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[:n]
            return np.flatnonzero(bits).tolist()

        return (lambda: g.write_mask_into(mask.ctypes.data, mask.size, 4)), ids_of, \
            (lambda t: g.advance(t, return_tokens=False))

    out.update(_sample_walks(row, opts, k, deadline, walker, {_G["tok"].eos_token_id}, lambda i: _G["bytes"][i]))
    return out


ARMS = {"ours": (_ours_init, _ours_worker), "xgrammar": (_xgr_init, _xgr_worker),
        "outlines": (_outlines_init, _outlines_worker)}


def run_arm(impl: str, tokenizer: str, schemas: list[dict], opts: dict) -> dict:
    init, worker = ARMS[impl]
    rows = _run_children(worker, init, (tokenizer,), schemas, opts["timeout"], opts)
    by_cat: dict[str, list[dict]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    return {"all": _summary(rows), "by_category": {c: _summary(v) for c, v in sorted(by_cat.items())},
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", default="all",
                    help="all, or a comma-separated list of ours / xgrammar / outlines (arms run one after another)")
    ap.add_argument("--tokenizer", default=None, help="HF tokenizer folder (default: the default model's)")
    ap.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--category", default=None)
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="seconds per schema: compile + samples (sampling stops after --walk-s)")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--walk-s", type=float, default=6.0, help="seconds of sampling per schema (the rest: unfinished)")
    ap.add_argument("--soft-len", type=int, default=48)
    ap.add_argument("--max-len", type=int, default=400)
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--child", action="store_true", help="(internal) print one arm's JSON result")
    args = ap.parse_args()
    if args.tokenizer is None:
        sys.path.insert(0, os.path.dirname(HERE))
        from sglang.runtime.model_loader import resolve_model_path

        args.tokenizer = resolve_model_path("default")
    opts = {"timeout": args.timeout, "samples": args.samples, "soft_len": args.soft_len, "max_len": args.max_len,
            "walk_s": args.walk_s}
    schemas = load_schemas(args.limit, args.category)
    if args.child:
        print(json.dumps(run_arm(args.impl, args.tokenizer, schemas, opts)))
        return
    results: dict[str, Any] = {}
    impls = ["ours", "xgrammar", "outlines"] if args.impl == "all" else args.impl.split(",")
    unknown = [i for i in impls if i not in ARMS]
    if unknown:
        ap.error(f"unknown --impl {unknown}; choose from {sorted(ARMS)}")
    for impl in impls:
        print(f"[{impl}]", file=sys.stderr)
        if impl == "ours":
            results[impl] = run_arm(impl, args.tokenizer, schemas, opts)
            continue
        if not os.path.exists(args.bench_python):
            results[impl] = {"error": f"{args.bench_python} not found (create the bench venv)"}
            continue
        cmd = [args.bench_python, os.path.abspath(__file__), "--child", "--impl", impl, "--tokenizer", args.tokenizer,
               "--timeout", str(args.timeout), "--samples", str(args.samples), "--soft-len", str(args.soft_len),
               "--max-len", str(args.max_len), "--walk-s", str(args.walk_s)] + \
            (["--limit", str(args.limit)] if args.limit else []) + \
            (["--category", args.category] if args.category else [])
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            results[impl] = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            results[impl] = {"error": p.stdout[-2000:]}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    print(f"\n{'impl':9s} {'category':12s} {'compiled':>10s} {'median ms':>10s} {'p95 ms':>9s} {'mask us':>9s} "
          f"{'valid':>9s} {'unfinished':>10s}")
    for impl, res in results.items():
        if "error" in res:
            print(f"{impl:9s} error: {res['error'][:200]}")
            continue
        for cat, s in [("all", res["all"])] + list(res["by_category"].items()):
            f = (lambda v, spec: "-" if v is None else format(v, spec))
            print(f"{impl:9s} {cat:12s} {s['compiled']:>4d}/{s['schemas']:<5d} {f(s['compile_median_ms'], '10.1f')} "
                  f"{f(s['compile_p95_ms'], '9.1f')} {f(s['mask_us_mean'], '9.1f')} "
                  f"{s['samples_valid']:>4d}/{s['samples']:<4d} {s['samples_unfinished']:>10d}"
                  + (f"  cpu median/p95 {s['compile_cpu_median_ms']:.1f}/{s['compile_cpu_p95_ms']:.1f} ms"
                     if s.get("compile_cpu_median_ms") is not None else ""))


if __name__ == "__main__":
    main()
