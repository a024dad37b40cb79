"""A deterministic native-protocol backend for compiler tests (no model): one char = one token.

It keeps every prompt of earlier calls and reports `cached_tokens` as the longest common prefix with
any of them (a radix cache at character granularity), so tests can count prefill work.
"""
from __future__ import annotations

import re
from typing import Any

from sglang.runtime.chat_template import NAMED


class FakeBackend:
    name = "fake"

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.aborted: list[str] = []

    def chat_template(self):
        return NAMED["default"]

    def check_images(self) -> None:
        raise RuntimeError("fake backend is text-only")

    def _cached(self, text: str) -> int:
        best = 0
        for s in self.seen:
            n = 0
            for a, b in zip(s, text):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return min(best, max(len(text) - 1, 0))

    def _one(self, text: str, sp: dict[str, Any], logprob: bool, start: int) -> dict[str, Any]:
        cached = self._cached(text)
        n = int(sp.get("max_new_tokens", 16))
        regex = sp.get("regex")
        if n == 0:
            out = ""
        elif regex is not None and re.fullmatch(regex, "42"):
            out = "42"
        else:
            out = ("g%d" % (sum(map(ord, text)) % 1000))[:n]
        for s in sp.get("stop", []) or []:
            out = out.split(s)[0]
        meta: dict[str, Any] = {"prompt_tokens": len(text), "cached_tokens": cached, "completion_tokens": len(out),
                                "finish_reason": {"type": "length"}}
        if logprob:
            s0 = max(start, 0)
            meta["input_token_logprobs"] = [[None if i == 0 else -((ord(c) * 7) % 11) / 11.0, ord(c), None]
                                            for i, c in enumerate(text)][s0:]
        return {"text": out, "meta_info": meta}

    def _call(self, payload: dict[str, Any]) -> Any:
        self.calls.append(payload)
        texts = payload["text"]
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        sps = payload.get("sampling_params", {})
        sps = sps if isinstance(sps, list) else [sps] * len(texts)
        lp = payload.get("return_logprob", False)
        lp = lp if isinstance(lp, list) else [lp] * len(texts)
        st = payload.get("logprob_start_len", -1)
        st = st if isinstance(st, list) else [st] * len(texts)
        outs = [self._one(t, s, l, b) for t, s, l, b in zip(texts, sps, lp, st)]
        self.seen.extend(texts)  # prompts of one call do not share work with each other, only with later calls
        return outs[0] if single else outs

    def _call_stream(self, payload: dict[str, Any]) -> Any:
        """The same output, one cumulative chunk per character (one char = one token)."""
        final = self._call(payload)
        for i in range(1, len(final["text"])):
            yield {"text": final["text"][:i], "meta_info": dict(final["meta_info"], finish_reason=None)}
        yield final

    def abort(self, rid: str) -> None:
        self.aborted.append(rid)
