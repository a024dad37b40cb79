"""Compiled context-free grammars on disk, keyed by the grammar text's hash (JSON-schema grammar keys
included), so a schema compiled once is loaded in about a millisecond by any later process.

File: `<cache dir>/cfg/<sha256 prefix>.npz` (numpy's zip, no pickle): the BNF rules and names as one JSON
header, the terminal DFAs' tables concatenated beside it (ids, sizes, starts and count blocks to split
them; a JSON schema's grammar stores the terminals compiled so far, the others compile from their regexes
on use). A file that does not load (torn, another version) is ignored and rewritten. The files count against the constraint caches' disk quota (disk_quota.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from sglang.runtime.constrained.cache import default_cache_dir
from sglang.runtime.constrained.cfg import CompiledCFG, LazyDFAs, build_cfg
from sglang.runtime.constrained.disk_quota import enforce_quota, quota_bytes, touch
from sglang.runtime.constrained.regex_fsm import ByteDFA
from sglang.runtime.constrained.schema_ir import terminal_dfa

FORMAT_VERSION = 2  # 2: all tables in one array; counted automata keep their count blocks


def cfg_path(src: str, cache_dir: Optional[Path] = None) -> Path:
    digest = hashlib.sha256(f"{FORMAT_VERSION}\0".encode() + src.encode("utf-8", "surrogatepass")).hexdigest()
    return (cache_dir or default_cache_dir()) / "cfg" / f"{digest[:40]}.npz"


def save_cfg(g: CompiledCFG, path: Path) -> None:
    """Write `g` atomically (readers never see half a file); a read-only cache dir is skipped."""
    nt_count = len(g.nt_names) - 1  # build_cfg appends __START itself
    start_rule = g.rhs[g.start_rule]
    head = {"version": FORMAT_VERSION, "nt_names": list(g.nt_names[:-1]), "term_names": list(g.term_names),
            "term_regexes": list(g.term_regexes) if g.term_regexes is not None else None,
            "rules": [[l, list(b)] for i, (l, b) in enumerate(zip(g.lhs, g.rhs)) if i != g.start_rule and l < nt_count],
            "start_body": list(start_rule)}
    # every terminal's table in one array (one zip member, not three per terminal: hundreds of small
    # members made saving cost as much as compiling)
    # a JSON schema's terminals compiled so far only (the others compile from their regexes on use)
    if isinstance(g.dfas, LazyDFAs):
        ids = sorted(g.dfas.known)
        dfas = [g.dfas.known[i] for i in ids]
    else:
        ids, dfas = list(range(len(g.dfas))), list(g.dfas)
    arrays = {"head": np.frombuffer(json.dumps(head).encode(), dtype=np.uint8),
              "ids": np.asarray(ids, dtype=np.int64),
              "sizes": np.asarray([d.num_states for d in dfas], dtype=np.int64),
              "starts": np.asarray([d.start for d in dfas], dtype=np.int64),
              "blocks": np.asarray([d.count_blocks or (-1, -1, -1, -1) for d in dfas], dtype=np.int64).reshape(-1, 4),
              "trans": np.concatenate([d.trans for d in dfas]) if dfas else np.zeros((0, 256), np.int32),
              "accepting": np.concatenate([d.accepting for d in dfas]) if dfas else np.zeros(0, bool)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        np.savez(tmp, **arrays)
        if tmp.stat().st_size > quota_bytes():
            tmp.unlink()  # would evict everything else and still not fit
            return
        os.replace(tmp, path)
        enforce_quota(path.parent.parent, keep=path)  # the quota covers <cache dir>/constrained as a whole
    except OSError:
        pass


def load_cfg(path: Path) -> Optional[CompiledCFG]:
    """The grammar stored at `path`, or None (missing, torn or of another format)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(bytes(z["head"]).decode())
            if head.get("version") != FORMAT_VERSION:
                return None
            ids, sizes, starts, blocks = z["ids"].tolist(), z["sizes"], z["starts"], z["blocks"]
            trans, accepting = z["trans"], z["accepting"]
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            known = {t: ByteDFA(trans=trans[offsets[i]:offsets[i + 1]], accepting=accepting[offsets[i]:offsets[i + 1]],
                                start=int(starts[i]),
                                count_blocks=tuple(int(v) for v in blocks[i]) if blocks[i][0] >= 0 else None)
                     for i, t in enumerate(ids)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # torn or foreign: rebuild
        return None
    n_terms = len(head["term_names"])
    if head["term_regexes"] is not None:
        dfas: Any = LazyDFAs(head["term_regexes"], terminal_dfa, known)
    elif len(known) == n_terms:
        dfas = [known[t] for t in range(n_terms)]
    else:
        return None
    return build_cfg([(l, b) for l, b in head["rules"]], head["nt_names"], head["term_names"], dfas,
                     head["start_body"], term_regexes=head["term_regexes"])


def cached_cfg(src: str, compile_fn: Callable[[str], CompiledCFG], disk: bool = True) -> CompiledCFG:
    """`compile_fn(src)`, through the disk cache when `disk`."""
    if not disk:
        return compile_fn(src)
    path = cfg_path(src)
    g = load_cfg(path) if path.exists() else None
    if g is not None:
        touch(path)
    if g is None:
        g = compile_fn(src)
        save_cfg(g, path)
    return g
