"""Ahead-of-time tables: compiled TokenFSMs cached in memory, on disk and in portable blobs.

Key = sha256(format version, regex, tokenizer fingerprint). Disk: `<cache dir>/constrained/<key>.fsm`
where the cache dir is $SGLANG_CACHE_DIR or ~/.cache/sglang-aot, under a disk quota shared with the
grammar cache (disk_quota.py: $SGLANG_CACHE_QUOTA_MB, least recently used out). A blob (`to_blob` / `load_blob`)
bundles several tables so the compiler can store every literal regex/schema of a program inside its
artifact and the runtime loads them without recompiling. A table whose fingerprint does not match the
tokenizer in use is never returned (the key includes the fingerprint).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from sglang.runtime.constrained.budget import active_budget
from sglang.runtime.constrained.disk_quota import enforce_quota, quota_bytes, touch
from sglang.runtime.constrained.regex_fsm import regex_to_dfa
from sglang.runtime.constrained.token_fsm import TokenFSM
from sglang.runtime.constrained.vocab import TokenVocab

FORMAT_VERSION = 1
_MAGIC = b"SGLCFSM\x01"


def default_cache_dir() -> Path:
    root = os.environ.get("SGLANG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sglang-aot")
    return Path(root) / "constrained"


def table_key(regex: str, fingerprint: str) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}\0{fingerprint}\0".encode() + regex.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:40]


_TABLE_MAGIC = b"SGLCTAB\x01"


def fsm_to_bytes(fsm: TokenFSM) -> bytes:
    """One table as bytes: magic, u32 header length, JSON header (pattern, fingerprint, array specs), then
    the raw arrays. Loading is a single read plus zero-copy views (no zip, no CRC), i.e. ~1 ms."""
    arrays = fsm.to_arrays()
    specs, chunks, off = [], [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        pad = (-off) % 16  # keep every array aligned
        chunks.append(b"\0" * pad)
        off += pad
        specs.append([name, arr.dtype.str, list(arr.shape), off])
        chunks.append(arr.tobytes())
        off += arr.nbytes
    head = json.dumps({"pattern": fsm.pattern, "fingerprint": fsm.fingerprint, "arrays": specs}).encode()
    return _TABLE_MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks)


def fsm_from_bytes(data: bytes | Path) -> TokenFSM:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = Path(data).read_bytes()
    data = bytes(data)
    if data[:8] != _TABLE_MAGIC:
        raise ValueError("not a constraint table (bad magic header)")
    (hlen,) = struct.unpack("<I", data[8:12])
    head = json.loads(data[12:12 + hlen])
    base = 12 + hlen
    arrays = {}
    for name, dtype, shape, off in head["arrays"]:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(data, dtype=dt, count=count, offset=base + off).reshape(shape)
    return TokenFSM.from_arrays(head["pattern"], head["fingerprint"], arrays)


class ConstraintCache:
    """Thread-safe cache of TokenFSMs: memory (LRU) → disk → compile."""

    def __init__(self, cache_dir: Optional[str | os.PathLike] = None, memory_items: int = 128,
                 disk: bool = True, memory_bytes: int = 1 << 30, disk_quota_bytes: Optional[int] = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.disk_quota_bytes = disk_quota_bytes  # None: $SGLANG_CACHE_QUOTA_MB (read at each write)
        self.memory_items = memory_items
        self.memory_bytes = memory_bytes  # budget incl. the unpacked mask rows each table may hold
        self.disk = disk
        self._mem: "OrderedDict[str, TokenFSM]" = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"memory_hits": 0, "disk_hits": 0, "compiles": 0, "blob_loads": 0}

    # ----- lookup -----
    def get(self, regex: str, vocab: TokenVocab) -> TokenFSM:
        """The TokenFSM of `regex` for `vocab`, compiling (and storing) it only when no cache has it."""
        key = table_key(regex, vocab.fingerprint)
        with self._lock:
            fsm = self._mem.get(key)
            if fsm is not None:
                self._mem.move_to_end(key)
                self.stats["memory_hits"] += 1
                return fsm
        fsm = self._load_disk(key, regex, vocab.fingerprint)
        if fsm is not None:
            self.stats["disk_hits"] += 1
        else:
            dfa = regex_to_dfa(regex)
            # the packed table holds one bit per (state, token): refuse it before allocating, not after
            active_budget().charge(dfa.num_states * ((vocab.size + 7) // 8), regex)
            fsm = TokenFSM.build(regex, dfa, vocab)
            self.stats["compiles"] += 1
            self._store_disk(key, fsm)
        self.remember(key, fsm)
        return fsm

    def contains(self, regex: str, fingerprint: str) -> bool:
        key = table_key(regex, fingerprint)
        return key in self._mem or (self.disk and (self.cache_dir / f"{key}.fsm").exists())

    def remember(self, key: str, fsm: TokenFSM) -> None:
        with self._lock:
            self._mem[key] = fsm
            self._mem.move_to_end(key)
            def footprint(f: TokenFSM) -> int:
                return f.nbytes + f.bits.size * 8  # + its dense row cache when fully unpacked
            total = sum(footprint(f) for f in self._mem.values())
            while len(self._mem) > 1 and (len(self._mem) > self.memory_items or total > self.memory_bytes):
                _, old = self._mem.popitem(last=False)  # requests holding it keep their reference
                total -= footprint(old)

    def _load_disk(self, key: str, regex: str, fingerprint: str) -> Optional[TokenFSM]:
        if not self.disk:
            return None
        path = self.cache_dir / f"{key}.fsm"
        if not path.exists():
            return None
        try:
            fsm = fsm_from_bytes(path)
        except (OSError, ValueError, KeyError, TypeError, struct.error):  # a torn or stale file: rebuild it
            return None
        if fsm.pattern != regex or fsm.fingerprint != fingerprint:
            return None
        touch(path)
        return fsm

    def _store_disk(self, key: str, fsm: TokenFSM) -> None:
        if not self.disk:
            return
        limit = quota_bytes() if self.disk_quota_bytes is None else self.disk_quota_bytes
        data = fsm_to_bytes(fsm)
        if len(data) > limit:
            return  # it would evict everything else and still not fit
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_bytes(data)
            path = self.cache_dir / f"{key}.fsm"
            os.replace(tmp, path)  # atomic: readers never see half a file
            enforce_quota(self.cache_dir, limit, keep=path)
        except OSError:
            pass  # a read-only cache dir only costs recompiles

    # ----- blobs (artifact embedding) -----
    def to_blob(self, regexes: Optional[Iterable[str]] = None, vocab: Optional[TokenVocab] = None) -> bytes:
        """Serialize tables: the given regexes (compiled for `vocab` if needed), else every table in memory."""
        if regexes is not None:
            if vocab is None:
                raise ValueError("to_blob(regexes=...) needs the vocab the tables are built for")
            fsms = [self.get(r, vocab) for r in regexes]
        else:
            with self._lock:
                fsms = list(self._mem.values())
        header, payloads, offset = [], [], 0
        for fsm in fsms:
            data = fsm_to_bytes(fsm)
            header.append({"key": table_key(fsm.pattern, fsm.fingerprint), "offset": offset, "length": len(data)})
            payloads.append(data)
            offset += len(data)
        head = json.dumps({"version": FORMAT_VERSION, "tables": header}).encode()
        return _MAGIC + struct.pack("<I", len(head)) + head + b"".join(payloads)

    def load_blob(self, data: bytes) -> int:
        """Load the tables of a blob into memory (no recompilation); returns how many were loaded."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:8]) != _MAGIC:
            raise ValueError("not a constraint-table blob (bad magic header)")
        (hlen,) = struct.unpack("<I", bytes(data[8:12]))
        try:
            head = json.loads(bytes(data[12:12 + hlen]))
        except ValueError as exc:
            raise ValueError(f"corrupt constraint-table blob header: {exc}") from None
        if head.get("version") != FORMAT_VERSION:
            raise ValueError(f"constraint-table blob version {head.get('version')} != {FORMAT_VERSION}")
        base = 12 + hlen
        n = 0
        for entry in head["tables"]:
            start = base + entry["offset"]
            fsm = fsm_from_bytes(bytes(data[start:start + entry["length"]]))
            self.remember(table_key(fsm.pattern, fsm.fingerprint), fsm)
            n += 1
        self.stats["blob_loads"] += n
        return n


_default: Optional[ConstraintCache] = None
_default_lock = threading.Lock()


def get_default_cache() -> ConstraintCache:
    """Process-wide cache (disk under $SGLANG_CACHE_DIR, read at first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ConstraintCache()
        return _default
