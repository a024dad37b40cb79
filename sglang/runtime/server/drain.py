"""Graceful drain on SIGTERM for the HTTP fronts (`sglang launch-server`, `sglang router`).

A replica behind a load balancer is stopped with SIGTERM (systemd, docker, Kubernetes, SkyServe). Exiting
at once would cut every running request; waiting for all of them may take minutes (a 3000-token stream).
So the first SIGTERM starts a drain:
  1. `DrainGate` (pure ASGI, wraps the app) answers every NEW request 503 + Retry-After — `/health`
     included, so balancers and the router stop sending here — while the ones in flight go on;
  2. `DrainingServer` waits until the gate counts no request in flight, at most `grace_s` seconds;
  3. what is still running then is ended by `abort_rest` (the server shuts its engine down, which gives
     each such request its final output with finish reason `abort`), and the server exits.
A second SIGTERM (or a SIGINT) during the drain cuts the grace period short. SIGINT alone keeps
uvicorn's own behaviour (Ctrl-C: stop now).
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, Optional

import uvicorn

logger = logging.getLogger("sglang.server")

RETRY_AFTER_S = 5  # what a refused client is told to wait before trying again (elsewhere, behind a balancer)
FLUSH_S = 10.0  # after the abort: how long the aborted requests get to send their last bytes


class DrainGate:
    """ASGI middleware: counts HTTP requests in flight (until their response ends, streams included) and,
    once `draining`, refuses new ones with 503 + Retry-After before they reach the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.draining = False
        self._in_flight = 0
        self._lock = threading.Lock()  # the count is read from the drain thread

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan (and websockets) pass through
            await self.app(scope, receive, send)
            return
        if self.draining:
            await refuse(send)
            return
        with self._lock:
            self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self._in_flight -= 1


async def refuse(send: Any) -> None:
    """A 503 with Retry-After and the OpenAI-style error body of the servers here."""
    body = json.dumps({"object": "error", "error": {
        "message": "the server is shutting down and accepts no new requests; retry on another replica",
        "type": "server_error", "param": None, "code": "503"}}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_S).encode()),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM drains (see the module docstring) instead of exiting at once.

    `config.app` must be `gate` (or wrap nothing in front of it that answers requests by itself)."""

    def __init__(self, config: uvicorn.Config, gate: DrainGate, grace_s: float,
                 abort_rest: Optional[Callable[[], None]] = None) -> None:
        super().__init__(config)
        self.gate = gate
        self.grace_s = grace_s
        self.abort_rest = abort_rest
        self.drain_thread: Optional[threading.Thread] = None
        self.aborted = 0  # requests still in flight when the grace period ended
        self._cut_short = threading.Event()

    def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
        if self.drain_thread is not None:  # a second signal while draining: stop waiting
            self._cut_short.set()
        elif sig == signal.SIGTERM:
            # not recorded as captured: uvicorn would re-raise it after shutdown and kill this process
            # before the engine (and its child processes) is shut down
            self.start_drain()
        else:
            super().handle_exit(sig, frame)

    def start_drain(self) -> None:
        """Refuse new requests from now on and exit once the running ones end (or the grace runs out)."""
        if self.drain_thread is not None:
            return
        self.gate.draining = True
        logger.warning("draining: new requests get 503; %d in flight get up to %.0f s to finish",
                       self.gate.in_flight, self.grace_s)
        self.drain_thread = threading.Thread(target=self._drain, name="sglang-drain", daemon=True)
        self.drain_thread.start()

    def _wait_idle(self, timeout: float, interruptible: bool) -> bool:
        deadline = time.monotonic() + timeout
        while self.gate.in_flight and time.monotonic() < deadline:
            if interruptible and self._cut_short.is_set():
                break
            time.sleep(0.05)
        return self.gate.in_flight == 0

    def _drain(self) -> None:
        try:
            if not self._wait_idle(self.grace_s, interruptible=True):
                self.aborted = self.gate.in_flight
                logger.warning("drain: %d request(s) still running after the grace period; aborting them",
                               self.aborted)
                if self.abort_rest is not None:
                    self.abort_rest()
                self._wait_idle(FLUSH_S, interruptible=False)  # their final (abort) outputs reach the clients
        except Exception:  # the server must still exit
            logger.exception("drain failed")
        finally:
            logger.warning("drained; shutting down")
            self.should_exit = True
