"""A scripted native backend for frontend unit tests: records every native request dict and answers
with deterministic text and, when asked, logprobs from a per-token table (so select scores can be
computed by hand). Tokens are characters: token id = ord(char)."""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Optional

from sglang.lang.backends.base import NativeBackend


_PER_PROMPT = ("sampling_params", "return_logprob", "logprob_start_len", "top_logprobs_num", "rid")


class ScriptedBackend(NativeBackend):
    name = "scripted"

    def __init__(self, reply: Optional[Callable[[str, dict], str]] = None,
                 logprob: Optional[Callable[[str, int], Optional[float]]] = None) -> None:
        # reply(prompt, sampling_params) -> completion; logprob(text_before, token_id) -> logprob
        self.reply = reply or (lambda prompt, sp: f"<{len(prompt)}>")
        self.logprob = logprob or (lambda before, tok: -1.0)
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def _one(self, text: Any, payload: dict[str, Any]) -> dict[str, Any]:
        ids = list(text) if isinstance(text, list) else [ord(c) for c in text]
        prompt = "".join(chr(i) for i in ids)
        sp = payload.get("sampling_params") or {}
        out = "" if sp.get("max_new_tokens") == 0 else self.reply(prompt, sp)
        if sp.get("max_new_tokens") is not None:
            out = out[: sp["max_new_tokens"]] if sp["max_new_tokens"] else ""
        meta: dict[str, Any] = {"prompt_tokens": len(ids), "completion_tokens": len(out),
                                "finish_reason": {"type": "length"}}
        if payload.get("return_logprob"):
            start = max(payload.get("logprob_start_len") or 0, 0)
            meta["input_token_logprobs"] = [
                [None if i == 0 else self.logprob(prompt[:i], ids[i]), ids[i], None] for i in range(start, len(ids))]
        return {"text": out, "meta_info": meta}

    def _call(self, payload: dict[str, Any]) -> Any:
        with self.lock:
            self.requests.append(payload)
        prompts = payload.get("text") if payload.get("text") is not None else payload.get("input_ids")
        if isinstance(prompts, list) and prompts and isinstance(prompts[0], (str, list)):
            # a batch: per-prompt fields may be lists (the native protocol allows both forms)
            per = [{k: (v[i] if isinstance(v, list) and k in _PER_PROMPT else v) for k, v in payload.items()}
                   for i in range(len(prompts))]
            return [self._one(p, one) for p, one in zip(prompts, per)]
        return self._one(prompts, payload)

    def _call_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with self.lock:
            self.requests.append({**payload, "stream": True})
        full = self._one(payload["text"], payload)
        for i in range(1, len(full["text"]) + 1):
            yield {"text": full["text"][:i], "meta_info": full["meta_info"]}
