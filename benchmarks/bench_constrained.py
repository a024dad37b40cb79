"""Constrained decoding benchmark: compile time, warm (cached) load time and per-token mask time of
ours vs outlines-core and xgrammar, on the same regexes, tokenizer (SmolLM2's by default) and token
trajectories.

    python benchmarks/bench_constrained.py                   # ours + the others through the bench venv
    python benchmarks/bench_constrained.py --impl ours

outlines-core and xgrammar are never project dependencies: they run in a separate venv
(`python -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install outlines-core xgrammar`) which this
script calls as a subprocess with `--impl outlines|xgrammar --trajectories FILE` (that mode imports no
sglang code). Times are wall-clock medians/means on whatever machine runs it; compare within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CHARACTER_REGEX = (
    r"""\{\n"""
    r"""    "name": "[\w\d\s]{1,16}",\n"""
    r"""    "house": "(Gryffindor|Slytherin|Ravenclaw|Hufflepuff)",\n"""
    r"""    "blood status": "(Pure-blood|Half-blood|Muggle-born)",\n"""
    r"""    "occupation": "(student|teacher|auror|ministry of magic|death eater|order of the phoenix)",\n"""
    r"""    "wand": \{\n"""
    r"""        "wood": "[\w\d\s]{1,16}",\n"""
    r"""        "core": "[\w\d\s]{1,16}",\n"""
    r"""        "length": [0-9]{1,2}\.[0-9]{0,2}\n"""
    r"""    \},\n"""
    r"""    "alive": "(Alive|Deceased)",\n"""
    r"""    "patronus": "[\w\d\s]{1,16}",\n"""
    r"""    "bogart": "[\w\d\s]{1,16}"\n"""
    r"""\}"""
)
_OCT = r"(25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
IPV4 = f"{_OCT}.{_OCT}.{_OCT}.{_OCT}"
JSON_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "integer"}, "name": {"type": "string", "maxLength": 24},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 4},
    "active": {"type": "boolean"}}, "required": ["id", "name", "tags", "active"]}


def _timeit(fn, repeat: int, cpu: list | None = None) -> list[float]:
    """Wall times; when `cpu` is given, this process' CPU times are appended to it too (on a shared,
    loaded machine CPU time is the fairer number: wall time includes waiting for a core)."""
    out = []
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
    return out


# ---------------------------------------------------------------- ours (project env)
def run_ours(tokenizer_path: str, n_traj: int, repeat: int) -> tuple[dict, dict]:
    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sglang.runtime.constrained import ConstraintCache, ConstraintState, json_schema_to_regex, vocab_from_tokenizer
    from sglang.runtime.tokenizer import get_tokenizer

    tok = get_tokenizer(tokenizer_path)
    t = time.perf_counter()
    vocab = vocab_from_tokenizer(tok)
    _ = vocab.trie
    prep = time.perf_counter() - t
    patterns = {"character": CHARACTER_REGEX, "ipv4": IPV4, "json_schema": json_schema_to_regex(JSON_SCHEMA)}
    results: dict[str, Any] = {"tokenizer_prep_s": prep}
    trajectories: dict[str, list[list[int]]] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, rx in patterns.items():
            cold_cpu: list[float] = []
            cold = _timeit(lambda: ConstraintCache(cache_dir=d, disk=False).get(rx, vocab), repeat, cold_cpu)
            ConstraintCache(cache_dir=d).get(rx, vocab)  # write the disk entry
            warm = _timeit(lambda: ConstraintCache(cache_dir=d).get(rx, vocab), repeat)
            loaded = ConstraintCache(cache_dir=d).get(rx, vocab)  # from disk: rows unpack on first visit
            fsm = ConstraintCache(cache_dir=d, disk=False).get(rx, vocab)  # compiled here: rows kept dense
            rng = np.random.default_rng(0)
            trajs, mask_t, adv_t, mask_cpu = [], [], [], []
            row = torch.empty(vocab.size, dtype=torch.bool)
            for _ in range(n_traj):  # pass 1: rows unpacked on first visit (a fresh table)
                st = ConstraintState(fsm, vocab)
                ids: list[int] = []
                while not st.must_stop() and len(ids) < 256:
                    c0, t0 = time.process_time(), time.perf_counter()
                    st.fill_mask(row)
                    mask_t.append(time.perf_counter() - t0)
                    mask_cpu.append(time.process_time() - c0)
                    allowed = np.flatnonzero(row.numpy())
                    if st.is_accepting():
                        break
                    allowed = allowed[~np.isin(allowed, vocab.eos_token_ids)]
                    tid = int(rng.choice(allowed))
                    t0 = time.perf_counter()
                    st.advance(tid)
                    adv_t.append(time.perf_counter() - t0)
                    ids.append(tid)
                trajs.append(ids)
            trajectories[name] = trajs
            loaded_mask, warm_mask = [], []  # a disk-loaded table: first visits, then rows cached
            for out in (loaded_mask, warm_mask):
                for ids in trajs:
                    st = ConstraintState(loaded, vocab)
                    for tid in ids:
                        c0 = time.process_time()
                        st.fill_mask(row)
                        out.append(time.process_time() - c0)
                        st.advance(tid)
            results[name] = {"mask_cpu_us_mean_loaded_first_visit": 1e6 * statistics.mean(loaded_mask),
                             "mask_cpu_us_mean_loaded_rows_cached": 1e6 * statistics.mean(warm_mask),"compile_s": statistics.median(cold), "compile_cpu_s": statistics.median(cold_cpu),
                             "warm_load_s": statistics.median(warm),
                             "mask_us_mean": 1e6 * statistics.mean(mask_t), "mask_cpu_us_mean": 1e6 * statistics.mean(mask_cpu),
                             "advance_us_mean": 1e6 * statistics.mean(adv_t),
                             "steps": len(mask_t), "dfa_states": fsm.num_states, "mask_rows": int(fsm.bits.shape[0])}
    return results, {"patterns": patterns, "trajectories": trajectories}


# ---------------------------------------------------------------- others (bench venv, no sglang import)
def run_outlines(tokenizer_path: str, data: dict, repeat: int) -> dict:
    import numpy as np
    import outlines_core as oc
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    t = time.perf_counter()  # Vocabulary.from_pretrained needs a hub name: build it from the tokenizer
    byte_dec = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tok.all_special_ids) | {i for i, a in tok.added_tokens_decoder.items() if a.special}
    mapping: dict[bytes, list[int]] = {}
    for tid in range(len(tok)):
        if tid in special:
            continue
        s = tok.convert_ids_to_tokens(tid)
        mapping.setdefault(bytes(byte_dec[c] for c in s), []).append(tid)
    v = oc.Vocabulary(tok.eos_token_id, mapping)
    out: dict[str, Any] = {"tokenizer_prep_s": time.perf_counter() - t}
    for name, rx in data["patterns"].items():
        cold_cpu: list[float] = []
        cold = _timeit(lambda: oc.Index(rx, v), max(1, repeat // 3), cold_cpu)
        index = oc.Index(rx, v)
        blob = None
        if hasattr(index, "__reduce__"):
            try:
                import pickle

                blob = pickle.dumps(index)
            except Exception:  # noqa: BLE001
                blob = None
        warm = _timeit(lambda: __import__("pickle").loads(blob), repeat) if blob else []
        mask = np.zeros((len(tok) + 31) // 32, dtype=np.int32)
        mask_t, mask_cpu = [], []
        for ids in data["trajectories"][name]:
            g = oc.Guide(index)
            for tid in ids:
                c0, t0 = time.process_time(), time.perf_counter()
                g.write_mask_into(mask.ctypes.data, mask.size, 4)
                mask_t.append(time.perf_counter() - t0)
                mask_cpu.append(time.process_time() - c0)
                g.advance(tid, return_tokens=False)
        out[name] = {"compile_s": statistics.median(cold), "compile_cpu_s": statistics.median(cold_cpu),
                     "warm_load_s": statistics.median(warm) if warm else None,
                     "mask_us_mean": 1e6 * statistics.mean(mask_t), "mask_cpu_us_mean": 1e6 * statistics.mean(mask_cpu),
                     "steps": len(mask_t)}
    return out


def run_xgrammar(tokenizer_path: str, data: dict, repeat: int) -> dict:
    import xgrammar as xg
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    t = time.perf_counter()
    info = xg.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    out: dict[str, Any] = {"tokenizer_prep_s": time.perf_counter() - t}
    for name, rx in data["patterns"].items():
        cold_cpu: list[float] = []
        cold = _timeit(lambda: xg.GrammarCompiler(info, cache_enabled=False).compile_regex(rx), repeat, cold_cpu)
        comp = xg.GrammarCompiler(info)
        comp.compile_regex(rx)
        warm = _timeit(lambda: comp.compile_regex(rx), repeat)  # its in-memory cache (no disk cache)
        compiled = comp.compile_regex(rx)
        bitmask = xg.allocate_token_bitmask(1, info.vocab_size)
        mask_t, mask_cpu = [], []
        for ids in data["trajectories"][name]:
            m = xg.GrammarMatcher(compiled)
            for tid in ids:
                c0, t0 = time.process_time(), time.perf_counter()
                m.fill_next_token_bitmask(bitmask)
                mask_t.append(time.perf_counter() - t0)
                mask_cpu.append(time.process_time() - c0)
                if not m.accept_token(tid):
                    raise RuntimeError(f"xgrammar rejected token {tid} of pattern {name}")
        out[name] = {"compile_s": statistics.median(cold), "compile_cpu_s": statistics.median(cold_cpu),
                     "warm_load_s_in_memory": statistics.median(warm),
                     "mask_us_mean": 1e6 * statistics.mean(mask_t), "mask_cpu_us_mean": 1e6 * statistics.mean(mask_cpu),
                     "steps": len(mask_t)}
    return out


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode table (byte-level BPE token strings), for the arms that run without sglang."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + n)
            n += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--impl", default="all", choices=["all", "ours", "outlines", "xgrammar"])
    ap.add_argument("--tokenizer", default=None, help="HF tokenizer folder (default: the default model's)")
    ap.add_argument("--bench-python", default="/tmp/bench-venv/bin/python")
    ap.add_argument("--trajectories", default=None, help="(internal) JSON file of patterns + token ids")
    ap.add_argument("--trajectories-n", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None, help="write all results here")
    args = ap.parse_args()
    if args.impl in ("outlines", "xgrammar"):
        data = json.load(open(args.trajectories))
        fn = run_outlines if args.impl == "outlines" else run_xgrammar
        print(json.dumps(fn(args.tokenizer, data, args.repeat)))
        return
    if args.tokenizer is None:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from sglang.runtime.model_loader import resolve_model_path

        args.tokenizer = resolve_model_path("default")
    ours, data = run_ours(args.tokenizer, args.trajectories_n, args.repeat)
    results = {"ours": ours}
    if args.impl == "all":
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(data, f)
        for impl in ("xgrammar", "outlines"):
            if not os.path.exists(args.bench_python):
                results[impl] = {"error": f"{args.bench_python} not found (create the bench venv)"}
                continue
            p = subprocess.run([args.bench_python, os.path.abspath(__file__), "--impl", impl, "--tokenizer",
                                args.tokenizer, "--trajectories", f.name, "--repeat", str(args.repeat)],
                               capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            try:
                results[impl] = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                results[impl] = {"error": (p.stderr or p.stdout)[-2000:]}
        os.unlink(f.name)
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    print("\nimpl       pattern       compile_s  compile_cpu_s  warm_load_s  mask_us  mask_cpu_us")
    for impl, res in results.items():
        for name in data["patterns"]:
            r = res.get(name, {})
            warm = r.get("warm_load_s", r.get("warm_load_s_in_memory"))
            print(f"{impl:10s} {name:12s} {r.get('compile_s', float('nan')):10.4f} "
                  f"{r.get('compile_cpu_s', float('nan')):14.4f} "
                  f"{(warm if warm is not None else float('nan')):11.4f} {r.get('mask_us_mean', float('nan')):8.1f} "
                  f"{r.get('mask_cpu_us_mean', float('nan')):12.1f}")


if __name__ == "__main__":
    main()
