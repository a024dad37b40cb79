"""Errors for `.sgl` programs: every user mistake becomes an `SglError` with file:line:col, the source
line, a caret under the column and a hint, never a Python traceback.

`SglSyntaxError` comes from the parser, `SglSemanticError` from the compiler's checks (undefined names,
duplicates, wrong argument types, unknown gen parameters). Both format the same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_LOC = re.compile(r"^(.+?):(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class SourcePos:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    col: int
    source_line: str = ""

    @staticmethod
    def of(text: str, file: str, line: int, col: int) -> "SourcePos":
        lines = text.splitlines()
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        return SourcePos(file, line, col, src)


def pos_of_loc(loc: str | None) -> SourcePos | None:
    """The position a plan step's `loc` ("file:line:col") names, with its source line when the file is readable
    (read only when an error is reported: a served artifact's source may be gone, then the caret is left out)."""
    if not loc:
        return None
    m = _LOC.match(loc)  # "file:line:col", or "file:line" (a traced Python op has no column)
    if m is None:
        return None
    file, line, col = m.group(1), int(m.group(2)), int(m.group(3) or 1)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        text = ""
    return SourcePos.of(text, file, line, col)


class SglError(Exception):
    """A user-facing error in a `.sgl` program. `str(err)` is the full, formatted report."""

    kind = "error"

    def __init__(self, message: str, pos: SourcePos | None = None, hint: str | None = None):
        self.message = message
        self.pos = pos
        self.hint = hint
        super().__init__(self.format())

    def at(self, pos: SourcePos | None) -> "SglError":
        """This error (same type and attributes) placed at `pos`: a step re-raising what its body raised."""
        self.pos = pos
        self.args = (self.format(),)
        return self

    @property
    def line(self) -> int | None:
        return self.pos.line if self.pos else None

    @property
    def col(self) -> int | None:
        return self.pos.col if self.pos else None

    def format(self) -> str:
        if self.pos is None:
            head = f"{self.kind}: {self.message}"
            return head + (f"\n  hint: {self.hint}" if self.hint else "")
        p = self.pos
        out = [f"{p.file}:{p.line}:{p.col}: {self.kind}: {self.message}"]
        if p.source_line:
            shown = p.source_line.expandtabs(1)
            out.append(f"    {shown}")
            out.append("    " + " " * max(p.col - 1, 0) + "^")
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


class SglSyntaxError(SglError):
    kind = "syntax error"


class SglSemanticError(SglError):
    kind = "error"


class SglRuntimeError(SglError):
    """A failure while running a program (bad argument value, a failing backend call)."""

    kind = "runtime error"
