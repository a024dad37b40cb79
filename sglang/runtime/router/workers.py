"""Workers behind the router and the health-checked registry of them.

A `Worker` is anything that answers SGLang's HTTP routes: `HttpWorker` is a server at a URL (the
replica pattern); an in-process engine can implement the same four methods (the `--dp-size` case).
Failures are split by whether the client may have seen anything: `WorkerUnavailable` (no answer yet:
refused, reset before a response, or 503 while draining) lets the router retry elsewhere;
`WorkerDied` (the stream broke after it began) does not.

`WorkerRegistry` keeps the healthy set and the in-flight counts the policy balances on. A request-time
failure (refused, reset) takes a worker out of rotation at once, until its next good probe; the health
check drops it after `fail_threshold` failed probes in a row (at its first probe if it never answered
one) and re-adds it at its first good probe. Only a drop by the health check (or a removal) makes the
router forget what it had routed there (`on_down`): a request that failed under load says nothing about
the worker's cache. A probe that times out while the worker kept sending answers does not count as
failed: under a burst the router's own event loop, not the worker, can be what is slow.
"""
from __future__ import annotations

import abc
import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Iterable, Optional

from sglang.runtime.router.http1 import ConnectionLost, Http1Pool, Response

logger = logging.getLogger("sglang.router")

# Headers a proxy must not copy from one hop to the next (RFC 9110 §7.6.1) plus the framing ones the
# ASGI server recomputes. Content-Encoding passes: bodies are relayed as the worker encoded them.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailer", "transfer-encoding", "upgrade", "content-length", "host"})


class WorkerUnavailable(Exception):
    """The worker gave no answer the client could have seen; the request may be sent elsewhere.
    `busy`: it did not refuse, it was only slow to accept (the worker stays in rotation)."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


class WorkerDied(Exception):
    """The worker's stream broke after it started; the request must not be replayed."""


@dataclass
class Reply:
    """A worker's answer: status, headers worth forwarding, and the body (whole, or as chunks)."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: Optional[AsyncIterator[bytes]] = None
    close: Optional[Callable[[], Awaitable[None]]] = None

    async def aclose(self) -> None:
        if self.close is not None:
            await self.close()


def forwardable(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k: v for k, v in headers if k.lower() not in HOP_HEADERS}


class Worker(abc.ABC):
    """One replica. `name` is unique in a registry (a URL for HTTP workers)."""

    name: str

    @abc.abstractmethod
    async def health(self) -> bool:
        """True when the worker is up (a cheap probe: `/health`)."""

    @abc.abstractmethod
    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """One whole request/response; raises WorkerUnavailable when no answer came."""

    @abc.abstractmethod
    async def open_stream(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """POST and return once the status is known, body as `chunks` (which raise WorkerDied when the
        stream breaks); raises WorkerUnavailable when no answer came."""

    async def aclose(self) -> None:
        """Release the worker's connections."""

    def answered_since(self, t: float) -> bool:
        """Whether any answer of the worker's (`time.monotonic()` clock) arrived at or after `t`."""
        return False


class HttpWorker(Worker):
    """A server of ours (or SGLang's) at `url`, over a pool of keep-alive HTTP/1.1 connections (http1.py:
    the relay's per-chunk cost is what bounds a Python router's throughput)."""

    def __init__(self, url: str, connect_timeout: float = 30.0, health_timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"worker URL must start with http:// or https://, got {url!r}")
        self.name = url.rstrip("/")
        self.health_timeout = health_timeout
        # no read timeout: a long generation is not a dead worker (the health check finds those); a long
        # connect timeout: a burst of new requests can stall the router's own loop for seconds
        self._pool = Http1Pool(self.name, connect_timeout=connect_timeout)
        self.last_answer = float("-inf")  # time.monotonic() of the latest response bytes

    async def health(self) -> bool:
        async def probe() -> int:
            r = await self._pool.request("GET", "/health")
            await r.aread()
            return r.status
        try:
            return await asyncio.wait_for(probe(), self.health_timeout) == 200
        except (ConnectionLost, asyncio.TimeoutError):
            return False

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        try:
            r = await self._pool.request(method, path, body, headers)
            content = await r.aread()
        except ConnectionLost as exc:  # refused, reset or cut before the whole answer: the client saw none
            raise WorkerUnavailable(f"{self.name}: {exc}", busy=exc.timed_out) from exc
        self.last_answer = time.monotonic()
        if r.status == 503:  # draining or not ready
            raise WorkerUnavailable(f"{self.name}: 503 {content[:200]!r}")
        return Reply(r.status, forwardable(r.headers), content)

    async def open_stream(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        try:
            r = await self._pool.request("POST", path, body, headers)
        except ConnectionLost as exc:
            raise WorkerUnavailable(f"{self.name}: {exc}", busy=exc.timed_out) from exc
        self.last_answer = time.monotonic()
        if r.status == 503:
            await r.aclose()
            raise WorkerUnavailable(f"{self.name}: 503")
        return Reply(r.status, forwardable(r.headers), chunks=self._chunks(r), close=r.aclose)

    async def _chunks(self, r: Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in r.aiter_raw():
                self.last_answer = time.monotonic()
                yield chunk
        except ConnectionLost as exc:
            raise WorkerDied(f"{self.name}: {exc}") from exc
        finally:
            await r.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()

    def answered_since(self, t: float) -> bool:
        return self.last_answer >= t


@dataclass
class WorkerState:
    worker: Worker
    healthy: bool = True
    in_flight: int = 0
    served: int = 0             # requests answered (any status)
    failures: int = 0           # consecutive failed probes
    probed: bool = False        # a worker failing its first probe was never seen up: down at once
    forgotten: bool = False     # its routing history was dropped since it was last seen up
    last_error: str = ""
    changed_at: float = field(default_factory=time.time)


class WorkerRegistry:
    """Workers by name: healthy set, in-flight counts, health checks. All calls run on one event loop."""

    def __init__(self, workers: list[Worker], fail_threshold: int = 2, check_interval: float = 5.0,
                 on_down: Optional[Callable[[str], None]] = None) -> None:
        """`on_down(name)`: the worker left or the health check dropped it (forget its routing history)."""
        if fail_threshold < 1:
            raise ValueError(f"fail_threshold must be >= 1, got {fail_threshold}")
        self.fail_threshold = fail_threshold
        self.check_interval = check_interval
        self.on_down = on_down
        self._states: dict[str, WorkerState] = {}
        self.events: collections.Counter[str] = collections.Counter()  # health transitions, for /metrics
        for w in workers:
            self.add(w)

    # ------------------------------------------------------------------ membership

    def add(self, worker: Worker) -> None:
        if worker.name in self._states:
            raise ValueError(f"worker {worker.name} is already registered")
        self._states[worker.name] = WorkerState(worker)

    async def remove(self, name: str) -> bool:
        state = self._states.pop(name, None)
        if state is None:
            return False
        self._notify_down(name)
        await state.worker.aclose()
        return True

    def get(self, name: str) -> Worker:
        return self._states[name].worker

    def names(self) -> list[str]:
        return list(self._states)

    def healthy(self) -> list[str]:
        return [n for n, s in self._states.items() if s.healthy]

    def loads(self, exclude: frozenset[str] = frozenset()) -> dict[str, int]:
        """In-flight requests of each healthy worker not in `exclude`, in registration order."""
        return {n: s.in_flight for n, s in self._states.items() if s.healthy and n not in exclude}

    # ------------------------------------------------------------------ load accounting

    def acquire(self, name: str) -> None:
        self._states[name].in_flight += 1

    def release(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None:  # it may have been removed meanwhile
            state.in_flight -= 1
            state.served += 1

    # ------------------------------------------------------------------ health

    def mark_down(self, name: str, reason: str) -> None:
        """A request found the worker unreachable: stop routing to it until a probe succeeds. Its routing
        history stays (a reset under load is not a restart); the health check decides whether it is gone."""
        state = self._states.get(name)
        if state is None:
            return
        state.last_error = reason
        self.events["request_failures"] += 1
        self._set_healthy(name, state, False, forget=False)

    async def check_all(self) -> dict[str, bool]:
        """Probe every worker once (concurrently) and apply the results; returns name -> probe result."""
        names = list(self._states)
        started = time.monotonic()
        results = await asyncio.gather(*(self._states[n].worker.health() for n in names))
        for name, ok in zip(names, results):
            state = self._states.get(name)
            if state is None:
                continue
            first, state.probed = not state.probed, True
            if not ok and state.worker.answered_since(started):
                ok = True  # the probe was slow, yet the worker answered requests meanwhile: it is up
                self.events["probes_excused"] += 1
            if ok:
                state.failures = 0
                self._set_healthy(name, state, True)
            else:
                state.failures += 1
                state.last_error = "health check failed"
                self.events["probe_failures"] += 1
                if state.failures >= self.fail_threshold or first:
                    self._set_healthy(name, state, False, forget=True)
        return dict(zip(names, results))

    async def run_health_loop(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a probe bug must not stop the checks
                logger.exception("health check round failed")
            await asyncio.sleep(self.check_interval)

    def _set_healthy(self, name: str, state: WorkerState, healthy: bool, forget: bool = False) -> None:
        if forget and not state.forgotten:  # confirmed down (maybe also out of rotation already)
            state.forgotten = True
            self._notify_down(name)
        if healthy:
            state.forgotten = False
        if state.healthy == healthy:
            return
        state.healthy = healthy
        state.changed_at = time.time()
        self.events["worker_back" if healthy else "worker_down"] += 1
        logger.warning("worker %s is %s%s", name, "back" if healthy else "down",
                       "" if healthy else f" ({state.last_error})")

    def _notify_down(self, name: str) -> None:
        # a worker that comes back may have restarted with an empty cache: forget what it had seen
        if self.on_down is not None:
            self.on_down(name)

    def snapshot(self) -> list[dict[str, object]]:
        """One dict per worker for `/workers`."""
        return [{"url": n, "healthy": s.healthy, "in_flight": s.in_flight, "served": s.served,
                 "consecutive_failures": s.failures, "last_error": s.last_error or None}
                for n, s in self._states.items()]
