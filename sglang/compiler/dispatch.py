"""The plan executor's transport: ready requests out as native `generate` calls, responses back, no waves.

`Dispatcher.submit(owners)` sends the requests that became ready at the same moment (each owner, a
blocked stream, with its requests) as ONE batched native call (per-request sampling params and logprob
options travel as lists; a prompt kind, text or token ids, is one call each, and a call holds at most
MAX_CALL_BATCH prompts) from a small thread pool, and returns at once. `wait()` blocks until a call in
flight completes and hands back every owner whose requests are all answered. So a stream whose response came back sends its next
request right away while other calls are still running: there is no global barrier where every
stream waits for the slowest request of a wave, and no chunk of MAX_CALL_BATCH waits for the previous
one. Requests marked `solo` go out one call each; a request with `on_chunk` (a gen whose client streams
tokens) goes out alone as a streamed call, `on_chunk` getting each cumulative output.

A batched call the engine refuses with a ValueError (one prompt too long for the context, say) is
retried one prompt per call, so the refusal fails only the stream that sent that prompt, not the
streams of other requests that shared the call (a batching executor mixes many clients' requests).

Counters (`ExecStats`) come from the responses' meta_info: prompt tokens, the part of them the
engine's prefix cache served, completion tokens; `engine_calls` counts native calls.
"""
from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from sglang.lang.backends.base import PER_PROMPT_MEDIA, merge_requests
from sglang.lang.sgl.errors import SglRuntimeError

MAX_CALL_BATCH = 512  # ServerArgs.max_batch_size_per_request's default
MAX_CALLS_IN_FLIGHT = 16  # worker threads: each holds one native call (an HTTP request or an engine call)


@dataclass
class Request:
    payload: dict[str, Any]  # one native request (single text)
    solo: bool = False
    on_chunk: Optional[Callable[[dict[str, Any]], None]] = None  # stream the call, each output to this


@dataclass
class ExecStats:
    engine_calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    waves: int = 0  # submissions: groups of requests that became ready together

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens the engine computed (not served from its prefix cache)."""
        return self.prompt_tokens - self.cached_tokens

    def as_dict(self) -> dict[str, int]:
        return {"engine_calls": self.engine_calls, "requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens, "prefill_tokens": self.prefill_tokens,
                "completion_tokens": self.completion_tokens, "waves": self.waves}


def split_calls(payloads: list[dict[str, Any]], cap: int) -> list[list[int]]:
    """Indices of `payloads` grouped into native calls: one prompt kind per call, at most `cap` prompts."""
    kinds: dict[str, list[int]] = {}
    for i, p in enumerate(payloads):
        kinds.setdefault("input_ids" if "input_ids" in p else "text", []).append(i)
    return [idx[lo:lo + cap] for idx in kinds.values() for lo in range(0, len(idx), cap)]


class Dispatcher:
    """Sends submissions without waiting; `wait()` returns the completed ones (see the module docstring)."""

    def __init__(self, backend: Any, stats: ExecStats,
                 observe: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.backend, self.stats = backend, stats
        self.observe = observe  # called with each output's meta_info (server metrics)
        self._lock = threading.Lock()  # stats are counted from worker threads
        self._pool = concurrent.futures.ThreadPoolExecutor(MAX_CALLS_IN_FLIGHT, thread_name_prefix="sgl-plan-call")
        self._inflight: dict[concurrent.futures.Future, list[tuple[int, int]]] = {}  # call -> (owner, slot)s
        self._owners: dict[int, list[Any]] = {}  # owner key -> [token, responses, requests unanswered]
        self._next = 0

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    def submit(self, owners: list[tuple[Any, list[Request]]]) -> None:
        """Send every owner's requests now (owners: (token, its requests)), batched into as few calls as
        the prompt kinds and MAX_CALL_BATCH allow; `wait()` returns an owner once all ITS requests are
        answered, whatever other calls of this submission still run."""
        self.stats.waves += 1
        flat: list[tuple[int, int, Request]] = []  # (owner key, position in its list, request)
        for token, reqs in owners:
            self._next += 1
            self._owners[self._next] = [token, [None] * len(reqs), len(reqs)]
            flat += [(self._next, j, r) for j, r in enumerate(reqs)]
        alone = [i for i, (_, _, r) in enumerate(flat) if r.solo or r.on_chunk is not None]
        batch = [i for i, (_, _, r) in enumerate(flat) if not (r.solo or r.on_chunk is not None)]
        groups = [[i] for i in alone]
        groups += [[batch[j] for j in part] for part in split_calls([flat[i][2].payload for i in batch], MAX_CALL_BATCH)]
        for idx in groups:
            req = flat[idx[0]][2]
            if req.on_chunk is not None:
                fut = self._pool.submit(self.stream_call, req.payload, req.on_chunk)
            else:
                fut = self._pool.submit(self.call, [flat[i][2].payload for i in idx])
            self._inflight[fut] = [flat[i][:2] for i in idx]

    def wait(self, timeout: Optional[float] = None, wake: Optional[concurrent.futures.Future] = None
             ) -> list[tuple[Any, list[dict[str, Any]] | BaseException]]:
        """Block until a call completes (or `timeout` passes, or `wake` is set); every owner whose requests
        are all answered, with its responses (or the error of a call that carried one of them)."""
        watched = list(self._inflight) + ([wake] if wake is not None else [])
        done, _ = concurrent.futures.wait(watched, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        finished = []
        for fut in sorted((f for f in done if f in self._inflight), key=lambda f: self._inflight[f]):  # in submission order: deterministic resumes
            slots = self._inflight.pop(fut)
            try:
                results: list[Any] = fut.result()
            except Exception as e:  # every owner with a request in the failed call fails with its error
                results = [e] * len(slots)
            for (key, j), r in zip(slots, results):
                entry = self._owners[key]
                if isinstance(r, BaseException):
                    entry[1] = r
                elif not isinstance(entry[1], BaseException):
                    entry[1][j] = r
                entry[2] -= 1
                if entry[2] == 0:
                    token, responses, _ = self._owners.pop(key)
                    finished.append((token, responses))
        return finished

    def call(self, payloads: list[dict[str, Any]]) -> list[Any]:
        """One native call for requests of one prompt kind; outputs in the order of `payloads` (an
        output is the ValueError of its own prompt when the engine refused it, see the module docstring)."""
        if any(p.get(m) is not None for p in payloads for m in PER_PROMPT_MEDIA):
            self.backend.check_images()
        # one request as the interpreter sends it; several as one batch (per-prompt fields as lists)
        try:
            res = self.backend._call(payloads[0] if len(payloads) == 1 else merge_requests(payloads))
        except ValueError:
            if len(payloads) == 1:
                raise
            return [self._call_alone(p) for p in payloads]
        res = res if isinstance(res, list) else [res]
        if len(res) != len(payloads):
            raise SglRuntimeError(f"backend returned {len(res)} outputs for {len(payloads)} prompts")
        self.count(res)
        return res

    def _call_alone(self, payload: dict[str, Any]) -> Any:
        try:
            return self.call([payload])[0]
        except ValueError as e:
            return e

    def stream_call(self, payload: dict[str, Any], on_chunk: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        """One streamed native call: `on_chunk` sees every cumulative output; returns [the final one]."""
        last: dict[str, Any] = {}
        for out in self.backend._call_stream(payload):
            last = out
            on_chunk(out)
        self.count([last])
        return [last]

    def count(self, outputs: list[dict[str, Any]]) -> None:
        if self.observe is not None:
            for r in outputs:
                self.observe(r.get("meta_info") or {})
        with self._lock:
            self.stats.engine_calls += 1
            self.stats.requests += len(outputs)
            for r in outputs:
                m = r.get("meta_info", {})
                self.stats.prompt_tokens += int(m.get("prompt_tokens", 0) or 0)
                self.stats.cached_tokens += int(m.get("cached_tokens", 0) or 0)
                self.stats.completion_tokens += int(m.get("completion_tokens", 0) or 0)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
