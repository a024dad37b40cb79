"""`Router`: route each request to a worker by a policy, retry it on another worker while nothing of
its answer has reached the client, and keep the in-flight counts the policy balances on.

A library object (the HTTP front in `app.py` is one user; `--dp-size` replicas in one server will be
another): give it `Worker`s and a policy, call `start()` inside the event loop, then `forward`,
`forward_stream` or `broadcast`.
"""
from __future__ import annotations

import asyncio
import collections
import json
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from sglang.runtime.router.policy import Decision, Policy, make_policy
from sglang.runtime.router.tree import Key
from sglang.runtime.router.workers import (HttpWorker, Reply, Worker, WorkerDied, WorkerRegistry,
                                           WorkerUnavailable)

SSE_DONE = b"data: [DONE]\n\n"


class NoWorkerAvailable(Exception):
    """Every worker is down (or was tried and failed) for this request."""


def routing_key(path: str, body: Any) -> Key:
    """What the request's cache reuse depends on: the prompt text (characters) or its token ids. For a
    batch, the first prompt (the whole batch goes to one worker). Empty when there is no prompt."""
    if not isinstance(body, dict):
        return ()
    if path.endswith("/chat/completions"):
        return _chat_key(body.get("messages"))
    prompt = body.get("prompt") if path.endswith("/completions") else (
        body.get("text") if body.get("text") is not None else body.get("input_ids"))
    return _prompt_key(prompt)


def _prompt_key(prompt: Any) -> Key:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if set(map(type, prompt)) == {int}:  # token ids (checked in C: prompts run to thousands of ids)
            return tuple(prompt)
        return _prompt_key(prompt[0])
    return ()


def _chat_key(messages: Any) -> Key:
    # the chat template is the worker's business; role + content in order shares prefixes the same way
    if not isinstance(messages, list):
        return ()
    parts = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<{m.get('role', '')}>{content or ''}")
    return "\n".join(parts)


def error_json(message: str, code: int, err_type: str = "server_error") -> bytes:
    """The error shape of our server (OpenAI's), so clients of either see the same thing."""
    return json.dumps({"object": "error", "error": {"message": message, "type": err_type, "param": None,
                                                    "code": str(code)}}).encode()


class Router:
    """Policy + registry + retries. Not thread-safe: use it from one event loop."""

    def __init__(self, workers: list[Worker], policy: Policy, *, fail_threshold: int = 2,
                 check_interval: float = 5.0, max_attempts: Optional[int] = None,
                 decision_log: int = 10000) -> None:
        self.policy = policy
        self.registry = WorkerRegistry(workers, fail_threshold, check_interval, on_down=policy.remove_worker)
        self.max_attempts = max_attempts
        self.decisions: collections.deque[Decision] = collections.deque(maxlen=decision_log)
        self.counters: collections.Counter[str] = collections.Counter()
        # worker -> requests, key elements routed and of those matched in its routed history (the policy's
        # view of the cache hits it aimed for), for /workers and the benchmarks
        self.routed: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._health_task: Optional[asyncio.Task[None]] = None

    @classmethod
    def from_urls(cls, urls: list[str], policy: str = "cache_aware", policy_args: Optional[dict[str, Any]] = None,
                  **kwargs: Any) -> "Router":
        if not urls:
            raise ValueError("the router needs at least one worker URL")
        return cls([HttpWorker(u) for u in urls], make_policy(policy, **(policy_args or {})), **kwargs)

    # ------------------------------------------------------------------ life cycle

    async def start(self, health_loop: bool = True) -> None:
        """Probe the workers once (so dead ones are not routed to), then keep probing in the background."""
        await self.registry.check_all()
        if health_loop and self._health_task is None:
            self._health_task = asyncio.create_task(self.registry.run_health_loop())

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        for name in self.registry.names():
            await self.registry.get(name).aclose()

    # ------------------------------------------------------------------ routing

    def route(self, key: Key, exclude: frozenset[str] = frozenset()) -> Decision:
        """Choose a healthy worker not in `exclude` and count the request on it (release it after)."""
        loads = self.registry.loads(exclude)
        if not loads:
            raise NoWorkerAvailable("no healthy worker" + (" left to retry on" if exclude else ""))
        decision = self.policy.select(key, loads)
        self.registry.acquire(decision.worker)
        self.decisions.append(decision)
        self.counters[f"decision_{decision.reason}"] += 1
        per = self.routed[decision.worker]
        per["requests"] += 1
        per["key_elements"] += decision.key_len
        per["matched_elements"] += decision.matched
        return decision

    def _attempts(self) -> int:
        return self.max_attempts or max(1, len(self.registry.names()))

    def _failed(self, decision: Decision, exc: WorkerUnavailable) -> None:
        self.registry.release(decision.worker)
        if not exc.busy:  # refused or reset: out of rotation until a probe passes
            self.registry.mark_down(decision.worker, str(exc))
        self.counters["retries"] += 1

    async def _try_workers(self, key: Key,
                           attempt: Callable[[Decision], Awaitable[Reply]]) -> tuple[Decision, Reply]:
        """Run `attempt` on the policy's pick; while it raises WorkerUnavailable, drop that worker and try
        the next pick (each worker once). The returned reply still holds its worker's slot."""
        tried: set[str] = set()
        last: Optional[Exception] = None
        for _ in range(self._attempts()):
            if tried and not self.registry.loads(frozenset(tried)):
                break
            decision = self.route(key, frozenset(tried))
            tried.add(decision.worker)
            try:
                reply = await attempt(decision)
            except WorkerUnavailable as exc:
                self._failed(decision, exc)
                last = exc
                continue
            except BaseException:  # cancelled, or a bug: do not leak the slot
                self.registry.release(decision.worker)
                raise
            reply.headers["x-sglang-worker"] = decision.worker
            return decision, reply
        raise NoWorkerAvailable(f"no worker answered ({len(tried)} tried; last error: {last})")

    async def forward(self, method: str, path: str, body: bytes, headers: dict[str, str], key: Key) -> Reply:
        """One whole request, retried on another worker while none answered."""
        async def attempt(decision: Decision) -> Reply:
            return await self.registry.get(decision.worker).request(method, path, body, headers)

        decision, reply = await self._try_workers(key, attempt)
        self.registry.release(decision.worker)
        return reply

    async def forward_stream(self, path: str, body: bytes, headers: dict[str, str], key: Key) -> Reply:
        """A streaming request. Retried on another worker until its first whole SSE event arrives; after
        that a broken stream ends with an error event and `[DONE]`. The reply's chunks are whole events;
        the caller must `await reply.aclose()` when done with it (also when it never read the chunks)."""
        async def attempt(decision: Decision) -> Reply:
            reply = await self.registry.get(decision.worker).open_stream(path, body, headers)
            assert reply.chunks is not None
            if reply.status != 200:  # an error answer (e.g. 400): pass it on whole
                try:
                    reply.body = b"".join([c async for c in reply.chunks])
                except WorkerDied as exc:
                    raise WorkerUnavailable(str(exc)) from exc
                reply.chunks = None
                return reply
            events = sse_events(reply.chunks)
            try:
                first = await events.__anext__()
            except (WorkerDied, StopAsyncIteration) as exc:  # nothing reached the client yet
                await reply.aclose()
                raise WorkerUnavailable(f"{decision.worker}: stream ended before its first event") from exc
            reply.close = self._finisher(decision, reply)
            reply.chunks = self._relay(decision, first, events, reply)
            return reply

        decision, reply = await self._try_workers(key, attempt)
        if reply.chunks is None:  # answered whole; a relay releases its slot when it ends
            self.registry.release(decision.worker)
        return reply

    def _finisher(self, decision: Decision, reply: Reply) -> Callable[[], Awaitable[None]]:
        """Release the worker's slot and the upstream stream, once: from the relay's end, or from the
        front when the relay never started (the client left before the first byte)."""
        upstream_close, done = reply.close, False

        async def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            self.registry.release(decision.worker)
            if upstream_close is not None:
                await upstream_close()
        return finish

    async def _relay(self, decision: Decision, first: bytes, events: AsyncIterator[bytes],
                     reply: Reply) -> AsyncIterator[bytes]:
        try:
            yield first
            async for event in events:
                yield event
        except WorkerDied as exc:
            self.registry.mark_down(decision.worker, str(exc))
            self.counters["broken_streams"] += 1
            msg = (f"worker {decision.worker} failed after the response started streaming; the request was "
                   f"not retried (its output so far was already sent): {exc}")
            yield b"data: " + error_json(msg, 502) + b"\n\n" + SSE_DONE
        finally:
            await reply.aclose()

    async def broadcast(self, method: str, path: str, body: bytes = b"",
                        headers: Optional[dict[str, str]] = None) -> dict[str, Reply | Exception]:
        """Send one request to every healthy worker (e.g. /flush_cache); name -> reply or the failure."""
        names = self.registry.healthy()
        results = await asyncio.gather(
            *(self.registry.get(n).request(method, path, body, headers or {}) for n in names),
            return_exceptions=True)
        return dict(zip(names, results))


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-cut a byte stream into whole SSE events (each ending in a blank line), so that a stream cut in
    the middle of an event never leaves half an event at the client. Each piece is every whole event that
    had arrived (one relay step per read, however many events it brought). A trailing partial event is
    dropped."""
    buf = b""
    async for chunk in chunks:
        buf = (buf + chunk).replace(b"\r\n", b"\n")  # on buf: a CR LF may straddle two chunks
        end = buf.rfind(b"\n\n")
        if end >= 0:
            yield buf[: end + 2]
            buf = buf[end + 2:]
