"""Disk quota of the constraint caches, least recently used first out.

Every distinct regex or schema writes a table (`<cache dir>/constrained/<key>.fsm`, up to tens of MB for a
large vocabulary) and every grammar a `cfg/<key>.npz`; without a quota, distinct requests fill the disk.
After each write the files of both caches are summed and the least recently used are removed until the
total fits. "Used" is the file's mtime, refreshed on every disk hit (`touch`), so no index file has to be
kept consistent between processes sharing the directory; a file removed under a reader only costs a
recompile (loaders treat a missing or torn file as absent).

Quota: `SGLANG_CACHE_QUOTA_MB` (default 2048 MB; 0 disables the disk caches' writes).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

DEFAULT_QUOTA_MB = 2048
CACHE_PATTERNS = ("*.fsm", "cfg/*.npz")  # the token tables (cache.py) and compiled grammars (cfg_cache.py)


def quota_bytes() -> int:
    """The configured quota in bytes ($SGLANG_CACHE_QUOTA_MB, else DEFAULT_QUOTA_MB)."""
    raw = os.environ.get("SGLANG_CACHE_QUOTA_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_QUOTA_MB
    except ValueError:
        mb = DEFAULT_QUOTA_MB  # a typo must not turn the quota off
    return max(0, int(mb * (1 << 20)))


def touch(path: Path) -> None:
    """Mark `path` as just used (a disk hit), so eviction takes other files first."""
    try:
        os.utime(path)
    except OSError:
        pass  # read-only or already evicted: the order is only a hint


def _entries(root: Path) -> list[tuple[float, int, Path]]:
    out = []
    for pattern in CACHE_PATTERNS:
        for p in root.glob(pattern):
            if p.name.startswith("."):
                continue  # another writer's temporary file, about to be renamed
            try:
                st = p.stat()
            except OSError:
                continue  # removed meanwhile by another process
            out.append((st.st_mtime, st.st_size, p))
    return out


def enforce_quota(root: Path, limit: Optional[int] = None, keep: Optional[Path] = None) -> int:
    """Remove the least recently used cache files under `root` until they total at most `limit` bytes
    (default: `quota_bytes()`); `keep` (the file just written) goes last. Returns the bytes removed."""
    limit = quota_bytes() if limit is None else limit
    entries = _entries(root)
    total = sum(size for _, size, _ in entries)
    removed = 0
    # oldest first; the kept file sorts after every other one whatever its mtime
    for _, size, p in sorted(entries, key=lambda e: (keep is not None and e[2] == keep, e[0])):
        if total <= limit:
            break
        try:
            p.unlink()
        except FileNotFoundError:
            pass  # another process evicted it: it no longer counts either
        except OSError:
            continue
        total -= size
        removed += size
    return removed
