"""SIGTERM drains `sglang launch-server` (here with `--dp 2`, tiny dummy-weight Llama, CPU, loopback): no
request is lost — each one either finishes or is refused with 503 + Retry-After before it started — and
when the drain is cut short (a second SIGTERM; the grace period running out takes the same path) what
still runs ends in-band with finish reason `abort`. The signal goes to the whole process group, as
systemd sends it: the scheduler children must leave the shutdown to the server."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import httpx
from server_helpers import child_pids, read_until_ready, wait_gone, wait_until

from sglang.runtime.server.launch import free_port

STREAMS = 3


def _launch(model: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--load-format", "dummy",
           "--device", "cpu", "--dtype", "float32", "--port", str(port), "--max-total-tokens", "16384",
           "--dp", "2", "--log-level", "warning", *extra]
    # its own session: the test can signal the server's whole process group and nothing else
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    read_until_ready(proc, 300)
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe from filling up
    return proc, f"http://127.0.0.1:{port}"


@dataclass
class Stream:
    """One streamed /generate in a thread: its events, and whether the first one arrived."""

    url: str
    max_new_tokens: int
    events: list = field(default_factory=list)
    done_marker: bool = False
    error: str = ""
    started: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {"text": f"Stream {id(self)} tells a long story:", "stream": True,
                "sampling_params": {"max_new_tokens": self.max_new_tokens, "temperature": 0.0, "ignore_eos": True}}
        try:
            with httpx.stream("POST", f"{self.url}/generate", json=body, timeout=300) as r:
                assert r.status_code == 200, r.status_code
                for line in r.iter_lines():
                    if line == "data: [DONE]":
                        self.done_marker = True
                    elif line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
                        self.started.set()
        except Exception as exc:  # recorded: the test asserts there is none
            self.error = repr(exc)
        finally:
            self.started.set()

    def finish_reason(self) -> dict:
        return self.events[-1]["meta_info"]["finish_reason"]


def _start_streams(url: str, max_new_tokens: int) -> tuple[list[Stream], list[threading.Thread]]:
    streams = [Stream(url, max_new_tokens) for _ in range(STREAMS)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in streams]
    for t in threads:
        t.start()
    for s in streams:
        assert s.started.wait(120), "a stream never started"
    return streams, threads


def _wait_draining(url: str) -> httpx.Response:
    """After SIGTERM: /health turns 503 (the signal is handled between event-loop ticks)."""
    def draining() -> httpx.Response | None:
        r = httpx.get(f"{url}/health", timeout=10)
        return r if r.status_code == 503 else None

    return wait_until(draining, 30, "/health never answered 503 after SIGTERM")


def _assert_refused(url: str, n: int = 5) -> None:
    """While draining, new requests (native and OpenAI) are refused with 503 + Retry-After, before they start."""
    for i in range(n):
        path, body = (("/generate", {"text": "late", "sampling_params": {"max_new_tokens": 2}}) if i % 2 else
                      ("/v1/completions", {"model": "m", "prompt": "late", "max_tokens": 2}))
        r = httpx.post(f"{url}{path}", json=body, timeout=60)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", (r.status_code, r.text)
        assert r.json()["error"]["code"] == "503"


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_sigterm_drains_then_a_second_sigterm_aborts_the_rest(tiny_llama_path):
    proc, url = _launch(tiny_llama_path, "--drain-grace-period", "300")
    try:
        children = child_pids(proc.pid)
        assert len(children) >= 2  # a scheduler process per replica
        short, short_threads = _start_streams(url, max_new_tokens=40)
        # far longer than the short ones: still running when they are done
        long, long_threads = _start_streams(url, max_new_tokens=1900)
        os.killpg(proc.pid, signal.SIGTERM)
        _wait_draining(url)
        _assert_refused(url)
        for t in short_threads:
            t.join(timeout=240)
        for s in short:  # in flight at SIGTERM: finished normally
            assert not s.error and s.done_marker, s.error
            assert s.finish_reason()["type"] == "length"
            assert s.events[-1]["meta_info"]["completion_tokens"] == 40
        assert all(t.is_alive() for t in long_threads)
        _assert_refused(url, n=1)  # still draining
        os.killpg(proc.pid, signal.SIGTERM)  # a second SIGTERM cuts the grace period short
        for t in long_threads:
            t.join(timeout=120)
        for s in long:  # ended in-band with a clear reason, not cut
            assert not s.error and s.done_marker, s.error
            reason = s.finish_reason()
            assert reason["type"] == "abort" and "shut down" in reason["message"], reason
            assert s.events[-1]["meta_info"]["completion_tokens"] < 1900
        assert proc.wait(timeout=60) == 0
        assert not wait_gone(children, timeout=15)
    finally:
        _stop_group(proc)


# ----------------------------------------------------------------------------- the drain itself, in-process

def _serve_gated(grace_s: float, abort_rest=None):
    """A DrainingServer (in a thread: no signals, `start_drain` instead) over an app with a /slow route
    that answers once `release` is set, or right away once `aborted` is."""
    import asyncio

    import uvicorn
    from fastapi import FastAPI

    from sglang.runtime.server.drain import DrainGate, DrainingServer

    release, aborted = threading.Event(), threading.Event()
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict:
        while not (release.is_set() or aborted.is_set()):
            await asyncio.sleep(0.01)
        return {"aborted": aborted.is_set()}

    gate = DrainGate(app)
    port = free_port()
    server = DrainingServer(uvicorn.Config(gate, port=port, log_level="warning"), gate, grace_s,
                            abort_rest=lambda: (aborted.set(), abort_rest and abort_rest()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 60, "the server never started")
    assert thread.is_alive()
    return server, thread, f"http://127.0.0.1:{port}", release


def _get_in_thread(url: str) -> tuple[list, threading.Thread]:
    box: list = []
    t = threading.Thread(target=lambda: box.append(httpx.get(url, timeout=60)), daemon=True)
    t.start()
    return box, t


def _wait_in_flight(server, n: int) -> None:
    wait_until(lambda: server.gate.in_flight == n, 30, f"in flight: {server.gate.in_flight}, not {n}")


def test_drain_lets_the_running_request_finish_then_exits():
    server, thread, url, release = _serve_gated(grace_s=300)
    box, t = _get_in_thread(url + "/slow")
    _wait_in_flight(server, 1)
    server.start_drain()
    r = httpx.get(url + "/slow", timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert thread.is_alive() and server.gate.in_flight == 1  # waiting for the running one
    release.set()
    t.join(30)
    assert box[0].status_code == 200 and box[0].json() == {"aborted": False}
    thread.join(30)
    assert not thread.is_alive() and server.aborted == 0


def test_drain_past_its_grace_period_aborts_the_rest():
    server, thread, url, _ = _serve_gated(grace_s=0.2)
    box, t = _get_in_thread(url + "/slow")
    _wait_in_flight(server, 1)
    server.start_drain()
    t.join(30)
    assert box[0].status_code == 200 and box[0].json() == {"aborted": True}
    thread.join(30)
    assert not thread.is_alive() and server.aborted == 1
