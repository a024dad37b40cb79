"""The requests in flight and how they end.

`RequestTable` owns rid → Req for every request between arrival and its final output, the output
callback and the finished/aborted counters. `create` builds a new request's per-request state
(generator, detokenizer, constraint). Ending a request is one rule for every cause (stop, length,
abort, retraction failure, shutdown): set the reason, give its KV back (CacheManager.release), forget
it, send its final response. Streaming responses go out every `stream_interval` new tokens. Which
queue a request sits in (waiting, running) is the PrefillManager's / DecodeManager's business.
With `detokenize=False` (the engine's schedulers), a request whose text does not decide when it stops
(`client_text`) goes out with its new text ids instead of text (detokenizer.TEXT_IDS_KEY); the engine
makes the text where the output is consumed (detokenizer.ClientText).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from sglang.runtime.detokenizer import TEXT_IDS_KEY, DecodeStream
from sglang.runtime.sampling.sampling_batch_info import make_generator
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.output import make_output
from sglang.runtime.scheduler.req import FinishKind, FinishReason, Req, TokenizedRequest

OutputCallback = Callable[[str, dict, bool], None]  # (rid, response dict, finished)


class RequestTable:
    def __init__(self, cache: CacheManager, tokenizer: Any, on_output: OutputCallback, stream_interval: int,
                 detokenize: bool = True) -> None:
        self.cache = cache
        self.tokenizer = tokenizer
        self.on_output = on_output
        self.stream_interval = stream_interval
        self.detokenize = detokenize  # False: client_text requests' outputs carry ids, not text
        self.reqs: dict[str, Req] = {}
        self.counters = {"finished": 0, "aborted": 0}

    def __len__(self) -> int:
        return len(self.reqs)

    def __contains__(self, rid: str) -> bool:
        return rid in self.reqs

    def get(self, rid: str) -> Optional[Req]:
        return self.reqs.get(rid)

    def add(self, req: Req) -> None:
        self.reqs[req.rid] = req

    def create(self, t: TokenizedRequest, device: torch.device,
               constraint_factory: Optional[Callable[[Req], Any]] = None) -> Optional[Req]:
        """The Req of a new request with its per-request state (seeded generator, detokenizer, constraint),
        registered; None (and an abort output) for a duplicate rid. Raises if the constraint factory
        does, before anything is registered."""
        if t.rid in self.reqs:
            self.reject(t, f"duplicate request id {t.rid!r}")
            return None
        req = Req.from_tokenized(t)
        req.generator = make_generator(req.sampling_params.seed, device)
        req.text_tracker = DecodeStream(self.tokenizer, req.sampling_params, req.origin_input_ids)
        if constraint_factory is not None:
            req.constraint = constraint_factory(req)
        req.client_text = self.client_text(req)  # fixed for its life: looked up per output
        self.add(req)
        return req

    def reject(self, t: TokenizedRequest, message: str) -> None:
        """A request that never got in (duplicate id, failed setup): its final output is an abort."""
        req = Req.from_tokenized(t)
        req.finished_reason = FinishReason(FinishKind.ABORT, message=message)
        self.on_output(req.rid, make_output(req, self.tokenizer), True)

    @staticmethod
    def sync_text(req: Req, final: bool = False) -> None:
        """Bring req.text up to its output_ids (detokenization is lazy for requests whose text does not
        decide when they stop: it runs here, in bulk, only when an output goes out); `final` releases
        the held-back tail."""
        tracker = req.text_tracker
        if tracker is None:
            return
        tracker.catch_up(req.output_ids)
        if final:
            tracker.finish()
        req.text = tracker.text

    def client_text(self, req: Req) -> bool:
        """Whether req's text is made by the engine from handed-off ids (no stop string needs it here, no
        constraint rewrites its output)."""
        tracker = req.text_tracker
        return (not self.detokenize and tracker is not None and not tracker.needs_every_token
                and req.constraint is None)

    def _output(self, req: Req, final: bool) -> dict:
        """The response dict; `final` releases held-back text (a finished, not aborted, request)."""
        if not req.client_text:
            self.sync_text(req, final=final)
            return make_output(req, self.tokenizer)
        end = len(req.output_ids)
        reason = req.finished_reason
        if (reason is not None and reason.kind == FinishKind.STOP and isinstance(reason.matched, int)
                and not req.sampling_params.no_stop_trim):
            end -= 1  # a stop token / EOS that ended it is not part of the text (as _finish_reason trims it)
        out = make_output(req, self.tokenizer)
        out[TEXT_IDS_KEY] = req.text_tracker.hand_off(req.output_ids, end)
        return out

    def finish(self, req: Req, reason: FinishReason) -> None:
        req.finished_reason = reason
        out = self._output(req, final=reason.kind != FinishKind.ABORT)  # an abort keeps back a partial stop string
        self.cache.release(req)
        self.reqs.pop(req.rid, None)
        self.counters["aborted" if reason.kind == FinishKind.ABORT else "finished"] += 1
        self.on_output(req.rid, out, True)

    def emit(self, req: Req) -> None:
        """Send a streaming (partial) response once enough new tokens have accumulated."""
        if req.finished or not req.stream:
            return
        if len(req.output_ids) - req.sent_tokens >= self.stream_interval:
            req.sent_tokens = len(req.output_ids)
            self.on_output(req.rid, self._output(req, final=False), False)

    def fail_all(self, message: str) -> None:
        """Abort everything in flight (shutdown, or a step that raised)."""
        for req in list(self.reqs.values()):
            try:
                self.finish(req, FinishReason(FinishKind.ABORT, message=message))
            except Exception:  # pool state may be what broke; still tell the caller
                self.on_output(req.rid, make_output(req, self.tokenizer), True)
        self.reqs = {}
