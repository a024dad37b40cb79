"""Errors of constrained decoding: every one is a ValueError subclass that names the bad input."""
from __future__ import annotations

from typing import Optional


class ConstraintError(ValueError):
    """Base class: a constraint (regex, JSON schema, choices, grammar) that cannot be used."""


class RegexSyntaxError(ConstraintError):
    """The regex does not parse, or uses a construct a finite automaton cannot express."""

    def __init__(self, pattern: str, msg: str, pos: Optional[int] = None) -> None:
        self.pattern = pattern
        self.msg = msg
        self.pos = pos
        where = f" at position {pos}" if pos is not None else ""
        shown = pattern if len(pattern) <= 200 else pattern[:200] + "..."
        super().__init__(f"invalid regex {shown!r}: {msg}{where}")


class CompileBudgetError(ConstraintError):
    """Compiling the constraint would exceed its memory or time budget (budget.py)."""

    def __init__(self, pattern: str, msg: str) -> None:
        self.pattern = pattern
        self.msg = msg
        shown = pattern if len(pattern) <= 200 else pattern[:200] + "..."
        super().__init__(f"constraint {shown!r} {msg}")


class SchemaError(ConstraintError):
    """The JSON schema is malformed or uses an unsupported keyword; `path` is a JSON pointer."""

    def __init__(self, msg: str, path: str = "#") -> None:
        self.msg = msg
        self.path = path
        super().__init__(f"invalid JSON schema at {path}: {msg}")


class SchemaWarning(UserWarning):
    """A JSON-schema keyword that constrained decoding cannot enforce was ignored (or a remote `$ref` was
    read as "any value"): outputs still parse, but may break that keyword."""


class GrammarError(ConstraintError):
    """The Lark/EBNF grammar does not parse or cannot be used."""


class EmptyLanguageError(ConstraintError):
    """No string (or no token sequence of this vocabulary) can ever satisfy the constraint."""


class ConstraintViolation(ValueError):
    """A token was fed that the constraint does not allow (a caller bug: the mask was not applied)."""
