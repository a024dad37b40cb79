"""API speculative execution (`@sgl.function(num_api_spec_tokens=N)`), as SGLang does it: fewer API
calls for programs that interleave constant text with gens.

* Completion-style backends: a gen with no buffered text asks for max(N, max_tokens) without stop
  strings; it takes its value up to its stop (or max_tokens characters) and keeps the rest; the
  constant text that follows consumes the buffer when the model already wrote it, else clears it.
* Chat models: a whole `sgl.assistant(...)` block of text and gens is ONE call; the reply is split
  on the block's constant text (and each gen's stop). A reply that does not follow the pattern is
  retried, then reported as an error naming the gen.
Gens with constraints (regex/json_schema/dtype) are never speculated.
"""
from __future__ import annotations

from typing import Any, Optional

from sglang.lang.ir import Gen, Text

_RETRIES = 3


def _constrained(op: Gen) -> bool:
    return op.regex is not None or op.json_schema is not None or op.dtype is not None


def _first_stop(text: str, stops: list[str]) -> int:
    found = [p for p in (text.find(s) for s in stops if s) if p != -1]
    return min(found) if found else -1


class CompletionSpec:
    def __init__(self, num_tokens: int) -> None:
        self.num_tokens = num_tokens
        self.buffer = ""

    def fill(self, text: str) -> None:
        self.buffer = self.buffer[len(text):] if self.buffer.startswith(text) else ""

    def gen(self, ex: Any, op: Gen, sampling: dict[str, Any], options: dict[str, Any]) -> Optional[tuple[str, dict]]:
        """The gen's value from the buffer (regenerating it when needed); None = not speculated."""
        if _constrained(op) or options.get("return_logprob"):
            self.buffer = ""
            return None
        stops = [s for s in (sampling.get("stop") or []) if s]
        max_new = int(sampling.get("max_new_tokens") or 128)
        meta: dict[str, Any] = {}
        if (not stops and len(self.buffer) < max_new) or (stops and not self.buffer):
            sp = {k: v for k, v in sampling.items() if k != "stop"}
            sp["max_new_tokens"] = max(max_new, self.num_tokens)
            self.buffer, meta = ex.backend.generate(ex.gen_input(), sp, options)
        pos = _first_stop(self.buffer, stops) if stops else -1
        if pos == -1:
            pos = min(max_new, len(self.buffer))
        value, self.buffer = self.buffer[:pos], self.buffer[pos:]
        return value, meta


def match_block(pattern: list[Any], reply: str) -> Optional[list[str]]:
    """Split `reply` by the block's pattern (Text and Gen ops): the gens' values, or None."""
    values: list[str] = []
    rest = reply
    for i, op in enumerate(pattern):
        if isinstance(op, Text):
            if not rest.startswith(op.value):
                return None
            rest = rest[len(op.value):]
            continue
        nxt = pattern[i + 1] if i + 1 < len(pattern) else None
        ends = list(op.stop or ()) + ([nxt.value] if isinstance(nxt, Text) and nxt.value else [])
        pos = _first_stop(rest, ends)
        if pos == -1:
            if nxt is not None:
                return None
            pos = len(rest)
        values.append(rest[:pos])
        rest = rest[pos:]
        if op.stop and isinstance(nxt, Text) and not rest.startswith(nxt.value):
            # the gen stopped at its stop string: the stop text itself is not part of the program
            hit = next((s for s in op.stop if rest.startswith(s)), "")
            rest = rest[len(hit):]
    return values


def chat_block_eligible(ops: list[Any]) -> bool:
    gens = [op for op in ops if isinstance(op, Gen)]
    return bool(gens) and all(isinstance(op, (Text, Gen)) for op in ops) and not any(_constrained(g) for g in gens)


def run_chat_block(ex: Any, ops: list[Any], sampling: dict[str, Any], num_tokens: int) -> list[tuple[Any, str]]:
    """One call for the block; returns (op, text) pairs to append, gens' values included."""
    sp = {k: v for k, v in sampling.items() if k != "stop"}
    sp["max_new_tokens"] = num_tokens
    reply = ""
    for _ in range(_RETRIES):
        reply, _meta = ex.backend.generate(ex.gen_input(), sp, {})
        values = match_block(ops, reply)
        if values is not None:
            it = iter(values)
            return [(op, op.value if isinstance(op, Text) else next(it)) for op in ops]
    first_gen = next(op for op in ops if isinstance(op, Gen))
    raise ValueError(f"speculative execution: after {_RETRIES} tries the reply did not follow the assistant "
                     f"block's text around gen {first_gen.name!r} (last reply: {reply[:200]!r}); "
                     f"remove num_api_spec_tokens or give the gens stop strings")
