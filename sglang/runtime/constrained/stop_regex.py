"""Stop regexes in linear time: a streaming search automaton instead of a backtracking `re.search`.

Python's `re` backtracks, so a pattern like `(.*.*)*\\u0000` takes exponential time on every search and
stalls the scheduler step for every request. Here a pattern becomes the byte DFA of `(?s:.)*(?:pattern)`
(regex_fsm, under the compile budget), walked once per generated character: its state after a character
says whether some match of the pattern ends there. Only then is the match's start searched (leftmost start
of a non-empty match ending there, over a bounded window of recent text), once per request.

Semantics are regex_fsm's (those of `re` with ASCII classes, no look-arounds, back references or `\\b`);
a match ends as early as possible (the stop fires the moment the generated text contains a match).
"""
from __future__ import annotations

import functools
from typing import Optional


from sglang.runtime.constrained.regex_fsm import ByteDFA, regex_to_dfa


@functools.lru_cache(maxsize=256)
def _automata(pattern: str) -> tuple[ByteDFA, ByteDFA]:
    """(search DFA: some match ends here, anchored DFA: the text is one match), compiled once per pattern."""
    anchored = regex_to_dfa(pattern)  # first: its errors name positions in the caller's pattern
    return regex_to_dfa(f"(?s:.)*(?:{pattern})", minimize=False), anchored


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # a lone surrogate is no part of any match


class StopRegex:
    """One stop pattern over a text stream. `advance(ch)` per character; True when a match ends there."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._search, self._anchored = _automata(pattern)
        self._state = self._search.start

    def advance(self, ch: str) -> bool:
        state = self._search.walk(self._state, _utf8(ch))
        # the search DFA never dies on valid UTF-8 (its `.*` prefix); restart defensively if it does
        self._state = state or self._search.start
        return bool(self._search.accepting[state]) if state else False

    def match_start(self, text: str, end: int) -> Optional[int]:
        """Leftmost s < end with text[s:end] one match (None: only the empty string matches there)."""
        trans, accepting = self._anchored.trans, self._anchored.accepting
        for s in range(end):
            state = self._anchored.start
            for b in _utf8(text[s:end]):
                state = int(trans[state, b])
                if state == 0:
                    break
            if state and accepting[state]:
                return s
        return None


def compile_stop_regex(pattern: str) -> StopRegex:
    """A fresh matcher for `pattern`; raises a ConstraintError (ValueError) naming it if it cannot be used."""
    return StopRegex(pattern)
