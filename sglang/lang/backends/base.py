"""Backend interface of the frontend interpreter, and `NativeBackend`: gen/select over native requests.

A backend receives the program state's prompt (`GenInput`) and returns generated text plus
meta_info. `NativeBackend` implements everything over two transport hooks, `_call(payload)` and
`_call_stream(payload)`, whose payloads are the native request dicts of docs/ARCHITECTURE.md, so
the in-process Engine and HTTP backends send the same dicts.

select: the prompt is prefilled once (`max_new_tokens=0`, which leaves its KV in the radix cache),
then all choices are scored in ONE batch of `prompt + choice` (plus the prompt itself, to align
tokens at the boundary) with `return_logprob` and `logprob_start_len` two tokens before the
prompt's end, so every choice reuses the cached prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from sglang.runtime.chat_template import ChatTemplate
from sglang.lang.backends.choices import METHODS, decide


class BackendError(RuntimeError):
    """A backend could not serve an op (transport failure, server error, unsupported feature)."""


@dataclass
class GenInput:
    text: str  # the whole prompt so far
    messages: list[dict[str, str]] = field(default_factory=list)  # finished role messages
    images: list[str] = field(default_factory=list)  # image sources appended so far
    role: Optional[str] = None  # the open role, if any
    role_text: str = ""  # content of the open role so far


LOGPROB_KEYS = ("return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs")


class BaseBackend:
    name = "backend"

    def chat_template(self) -> ChatTemplate:
        from sglang.runtime.chat_template import NAMED

        return NAMED["default"]

    def check_images(self) -> None:
        """Raise BackendError when images/videos cannot be used (called when a program appends one)."""

    def generate(self, inp: GenInput, sampling_params: dict[str, Any], options: dict[str, Any]) -> tuple[str, dict]:
        raise NotImplementedError

    def generate_stream(self, inp: GenInput, sampling_params: dict[str, Any],
                        options: dict[str, Any]) -> Iterator[tuple[str, Optional[dict]]]:
        """Yields (new text, None) pieces, then ("", meta_info) once at the end."""
        text, meta = self.generate(inp, sampling_params, options)
        yield text, None
        yield "", meta

    def select(self, inp: GenInput, choices: list[str], method: str, temperature: float) -> tuple[int, dict]:
        raise BackendError(f"{self.name} backend cannot score choices (select)")

    def cache_prefix(self, text: str) -> None:
        """Prefill `text` so later requests sharing it hit the cache (best effort)."""

    def flush_cache(self) -> bool:
        return False

    def get_server_args(self) -> dict[str, Any]:
        return {}

    def shutdown(self) -> None:
        pass


class NativeBackend(BaseBackend):
    name = "native"

    def _call(self, payload: dict[str, Any]) -> Any:  # dict, or list of dicts for a batch
        raise NotImplementedError

    def _call_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:  # cumulative outputs
        raise NotImplementedError

    def _payload(self, inp: GenInput, sampling_params: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {"text": inp.text, "sampling_params": dict(sampling_params)}
        payload.update({k: v for k, v in options.items() if k in LOGPROB_KEYS and v is not None})
        if inp.images:
            self.check_images()
            payload["image_data"] = inp.images if len(inp.images) > 1 else inp.images[0]
        return payload

    def generate(self, inp: GenInput, sampling_params: dict[str, Any], options: dict[str, Any]) -> tuple[str, dict]:
        out = self._call(self._payload(inp, sampling_params, options))
        return out["text"], out.get("meta_info", {})

    def generate_stream(self, inp: GenInput, sampling_params: dict[str, Any],
                        options: dict[str, Any]) -> Iterator[tuple[str, Optional[dict]]]:
        sent, meta = "", {}
        for out in self._call_stream(self._payload(inp, sampling_params, options)):
            text = out.get("text", "")
            if text.startswith(sent) and len(text) > len(sent):
                yield text[len(sent):], None
                sent = text
            meta = out.get("meta_info", meta)
        yield "", meta

    def cache_prefix(self, text: str) -> None:
        self._call({"text": text, "sampling_params": {"max_new_tokens": 0, "temperature": 0.0}})

    def select(self, inp: GenInput, choices: list[str], method: str, temperature: float) -> tuple[int, dict]:
        if method not in METHODS:
            raise ValueError(f"choices_method must be one of {', '.join(METHODS)}, got {method!r}")
        if inp.images:
            self.check_images()
        zero = {"max_new_tokens": 0, "temperature": 0.0}
        prefix = self._call({"text": inp.text, "sampling_params": zero})  # caches the prefix KV once
        prefix_len = int(prefix["meta_info"]["prompt_tokens"])
        # Score from 2 tokens before the boundary, and send the prefix itself in the same batch: comparing
        # token ids against it finds where each choice's tokens start even when the boundary token merges.
        start = max(prefix_len - 2, 0)
        outs = self._call({
            "text": [inp.text] + [inp.text + c for c in choices], "sampling_params": zero,
            "return_logprob": True, "logprob_start_len": start,
        })
        base = [e[1] for e in outs[0]["meta_info"]["input_token_logprobs"]]
        windows = [o["meta_info"]["input_token_logprobs"] for o in outs[1:]]
        cond_entries = [_after_common(w, base) for w in windows]
        cond = [[e[0] for e in es if e[0] is not None] for es in cond_entries]
        uncond_entries = None
        if method == "unconditional_likelihood_normalized":
            # the choice's tokens after only the (<= 2) prompt tokens of the scoring window, as SGLang
            # does: a minimal context, so even a one-token choice gets an unconditional logprob
            nonempty = [i for i, es in enumerate(cond_entries) if es]
            uouts = self._call({
                "input_ids": [[int(e[1]) for e in windows[i]] for i in nonempty], "sampling_params": zero,
                "return_logprob": True, "logprob_start_len": 0,
            }) if nonempty else []
            uncond_entries = [[] for _ in choices]
            for i, o in zip(nonempty, uouts):
                entries = o["meta_info"]["input_token_logprobs"]
                uncond_entries[i] = [list(e) for e in entries[len(entries) - len(cond_entries[i]):]]
        uncond = None if uncond_entries is None else [[e[0] for e in es if e[0] is not None] for es in uncond_entries]
        decision = decide(method, cond, uncond)
        meta = {
            "choices": list(choices), "choices_method": method, "scores": decision.scores,
            "normalized_prompt_logprobs": decision.normalized_logprobs,
            "input_token_logprobs": cond_entries, "unconditional_token_logprobs": uncond_entries,
            "prefix_tokens": prefix_len,
        }
        return decision.index, meta


def _after_common(entries: list, base_ids: list[int]) -> list[list[Any]]:
    """The entries after the longest run of token ids shared with the prefix's own entries."""
    k = 0
    while k < len(entries) and k < len(base_ids) and entries[k][1] == base_ids[k]:
        k += 1
    return [list(e) for e in entries[k:]]
