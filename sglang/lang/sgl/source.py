"""Reading `.sgl` source and bounding how deep it may nest, so odd files get an SglError, not a traceback.

- `read_source(path)`: UTF-8 (a leading BOM is dropped, as editors on Windows write one); a file that is
  not UTF-8 is an SglSyntaxError naming the file, line and column of the first bad byte.
- `check_nesting(text, file)`: blocks and brackets nested deeper than MAX_NESTING are refused at the
  opener that goes too deep (the parser and the compiler walk the tree recursively).
- `deep_stack(fn, ...)`: run fn in a thread with a large stack and a high recursion limit, for the
  command-line tools (a process of their own), so deep but legitimate programs (1000 nested ifs, long
  `+` chains) compile; library callers keep Python's limits and get an SglError past them.
"""
from __future__ import annotations

import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from sglang.lang.sgl.errors import SglSyntaxError, SourcePos

MAX_NESTING = 2000
BOM = "\ufeff"
_OPENERS, _CLOSERS = "{[(", "}])"
DEEP_STACK_BYTES = 1024 * 1024 * 1024  # virtual: only the pages a deep recursion touches are committed
DEEP_RECURSION_LIMIT = 400_000
T = TypeVar("T")


def strip_bom(text: str) -> str:
    return text[1:] if text.startswith(BOM) else text


def read_source(path: str | Path) -> str:
    """The text of a `.sgl` file; SglSyntaxError for a missing, unreadable or non-UTF-8 file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise SglSyntaxError(f"no such file: {p}") from None
    except OSError as e:
        raise SglSyntaxError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        return strip_bom(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        good = data[:e.start].decode("utf-8").splitlines()
        shown = good[-1] if good and not data[:e.start].endswith(b"\n") else ""
        raise SglSyntaxError(f"the file is not valid UTF-8: byte 0x{data[e.start]:02x} at line {line}, column {col} "
                             f"(byte offset {e.start})", SourcePos(str(path), line, col, shown),
                             "save the file as UTF-8") from None


# What can hold a bracket that is not one: strings (as in sgl.lark, triple-quoted included) and comments.
_SKIP_OR_BRACKET = re.compile(r'''[rR]?("""(?:[^"\\]|\\.|"(?!""))*"""|\'\'\'(?:[^'\\]|\\.|'(?!''))*\'\'\''''
                              r'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|#[^\n]*|[{}\[\]()]''', re.S)


def check_nesting(text: str, file: str, limit: int = MAX_NESTING) -> None:
    """SglSyntaxError at the first opener nested deeper than `limit` (strings and comments are skipped)."""
    depth = 0
    for m in _SKIP_OR_BRACKET.finditer(text):
        ch = m.group()
        if ch in _OPENERS:
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, m.start()) + 1
                col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
                raise SglSyntaxError(f"blocks and brackets nest deeper than {limit} levels",
                                     SourcePos.of(text, file, line, col), "move the inner part into a function of its own")
        elif ch in _CLOSERS:
            depth = max(depth - 1, 0)


def deep_stack(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a thread with a big stack and a raised recursion limit (process-wide: meant
    for the CLIs, which own their process); exceptions propagate to the caller."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    old_limit = sys.getrecursionlimit()
    old_size = threading.stack_size(DEEP_STACK_BYTES)
    try:
        sys.setrecursionlimit(max(old_limit, DEEP_RECURSION_LIMIT))
        thread = threading.Thread(target=run, name="sglang-deep-stack")
        thread.start()
    finally:
        threading.stack_size(old_size)
    try:
        thread.join()
    finally:
        sys.setrecursionlimit(old_limit)
    if "error" in box:
        raise box["error"]
    return box["value"]
