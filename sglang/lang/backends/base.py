"""Backend interface of the frontend interpreter, and `NativeBackend`: gen/select over native requests.

A backend receives the program state's prompt (`GenInput`) and returns generated text plus
meta_info. `NativeBackend` implements everything over two transport hooks, `_call(payload)` and
`_call_stream(payload)`, whose payloads are the native request dicts of docs/ARCHITECTURE.md, so
the in-process Engine and HTTP backends send the same dicts.

select runs the one select protocol of `choices.score_choices` (shared with the plan executor), sending
each of its request lists as one native call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from sglang.runtime.chat_template import ChatTemplate
from sglang.lang.backends.choices import PREFILL, run_scoring, score_choices
from sglang.lang.gen_rules import LOGPROB_OPTIONS

PER_PROMPT_MEDIA = ("image_data", "video_data")
VIDEO_TOKEN = "<video>"  # LLaVA-NeXT-Video's placeholder (its tokenizer's video token)


class BackendError(RuntimeError):
    """A backend could not serve an op (transport failure, server error, unsupported feature)."""


@dataclass
class GenInput:
    text: str  # the whole prompt so far
    messages: list[dict[str, str]] = field(default_factory=list)  # finished role messages
    images: list[str] = field(default_factory=list)  # image sources appended so far
    role: Optional[str] = None  # the open role, if any
    role_text: str = ""  # content of the open role so far
    videos: list[tuple[str, int]] = field(default_factory=list)  # (path, num_frames) appended so far


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
        payload.update({k: v for k, v in options.items() if k in LOGPROB_OPTIONS and v is not None})
        payload.update(self._media(inp))
        return payload

    def _media(self, inp: GenInput) -> dict[str, Any]:
        """The native request's image_data / video_data for the images and videos of the prompt so far."""
        media: dict[str, Any] = {}
        if inp.images or inp.videos:
            self.check_images()
        if inp.images:
            media["image_data"] = inp.images if len(inp.images) > 1 else inp.images[0]
        if inp.videos:
            media["video_data"] = [list(v) for v in inp.videos]
        return media

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
        self._call({"text": text, "sampling_params": dict(PREFILL)})

    def select(self, inp: GenInput, choices: list[str], method: str, temperature: float) -> tuple[int, dict]:
        media = self._media(inp)  # every scoring request carries the prompt's images
        call = self._call_many if not media else (lambda ps: self._call_many([{**p, **media} for p in ps]))
        return run_scoring(score_choices(inp.text, choices, method, temperature), call)

    def _call_many(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Single-prompt requests as ONE native call (a batch when there are several)."""
        if len(payloads) == 1:
            return [self._call(payloads[0])]
        out = self._call(merge_requests(payloads))
        return out if isinstance(out, list) else [out]


def merge_requests(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Single-prompt native requests (all `text` or all `input_ids`) -> one batched request; a field that
    differs between them travels as a per-prompt list, as the native protocol allows."""
    key = "input_ids" if "input_ids" in payloads[0] else "text"
    merged: dict[str, Any] = {key: [p[key] for p in payloads]}
    for field_ in sorted({k for p in payloads for k in p} - {key}):
        vals = [p.get(field_) for p in payloads]
        # one prompt's image list looks like a per-prompt list: media always travel per prompt
        same = field_ not in PER_PROMPT_MEDIA and all(v == vals[0] for v in vals)
        merged[field_] = vals[0] if same else vals
    return merged
