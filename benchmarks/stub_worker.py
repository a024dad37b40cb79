"""Stub SGLang workers for measuring the router on a CPU: enough of the server's HTTP surface for
`sglang router` and bench_serving (`/health`, `/get_model_info`, `/flush_cache`, streamed `/generate` with
`input_ids`), answering from a clock instead of a model.

    python benchmarks/stub_worker.py --ports 31100 31101 --step-ms 20

Every worker runs "decode steps" of `--step-ms`: each step sends one more token to each of its active
streams, in SGLang's native SSE shape (cumulative `text`, `meta_info` with prompt/cached/completion
tokens). `cached_tokens` comes from a prefix cache of the prompts the worker was sent (no eviction), so
routing decisions show up in the hit rate as they would on a real server. A stream whose socket is
still busy skips a step (the real server coalesces a slow reader's chunks the same way). With
`--step-ms 0` requests are answered at once: a measure of the router's own cost per request.

`--prefill-us-per-token` adds a prefill cost: a step that admits new requests lasts that much longer per
prompt token not in the cache, and the workers take turns on one "device" (a lock), like replicas sharing
one GPU; then routing for cache hits pays off in throughput as it would there. It is a toy model of a
GPU (no batch limits, no memory), for checking the router's behaviour, not for predicting GPU numbers.

All ports are served by one process and one event loop, so the stub stays cheap next to the router
it measures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sglang.runtime.router.tree import PrefixTree  # noqa: E402

WORD = " tok"
CACHE_OWNER = "self"


@dataclass
class Stream:
    writer: asyncio.StreamWriter
    rid: str
    prompt_tokens: int
    cached_tokens: int
    max_new_tokens: int
    sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def event(self) -> bytes:
        finish = {"type": "length", "length": self.max_new_tokens} if self.sent >= self.max_new_tokens else None
        body = json.dumps({"text": WORD * self.sent, "meta_info": {
            "id": self.rid, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.sent,
            "cached_tokens": self.cached_tokens, "finish_reason": finish}})
        return chunk(f"data: {body}\n\n".encode())


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of the chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class StubWorker:
    """One fake server on one port: a prefix cache, the active streams, a decode-step loop."""

    def __init__(self, port: int, step_s: float, prefill_s_per_token: float = 0.0,
                 device: Optional[asyncio.Lock] = None) -> None:
        self.port = port
        self.step_s = step_s
        self.prefill_s_per_token = prefill_s_per_token
        self.device = device or asyncio.Lock()  # shared by workers that share a "GPU"
        self.cache = PrefixTree()
        self.streams: list[Stream] = []
        self.served = 0
        self.events = 0    # SSE events written (a busy stream's skipped steps are not)
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._next_rid = 0
        self._wake = asyncio.Event()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, backlog=4096)
        async with server:
            await asyncio.gather(server.serve_forever(), self._step_loop())

    # ------------------------------------------------------------------ HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: the router pools its connections
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self._dispatch(method, path.split("?")[0], body, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        if path == "/generate" and method == "POST":
            await self._generate(json.loads(body), writer)
        elif path == "/flush_cache":
            self.cache = PrefixTree()
            self._reply(writer, 200, b"{}")
        elif path == "/get_model_info":
            self._reply(writer, 200, json.dumps({"model_path": f"stub:{self.port}"}).encode())
        elif path == "/metrics":  # the two counters of our server's /metrics that the benchmark reads
            text = (f"sglang_prompt_tokens_total {float(self.prompt_tokens)}\n"
                    f"sglang_cached_tokens_total {float(self.cached_tokens)}\n")
            self._reply(writer, 200, text.encode())
        elif path == "/stub_stats":
            self._reply(writer, 200, json.dumps({"served": self.served, "events": self.events}).encode())
        elif path in ("/health", "/health_generate"):
            self._reply(writer, 200, b"")
        else:
            self._reply(writer, 404, b'{"error": "not found"}')
        await writer.drain()

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        writer.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (status, len(body), body))

    async def _generate(self, req: dict, writer: asyncio.StreamWriter) -> None:
        ids = tuple(req["input_ids"])
        cached = self.cache.match(ids).get(CACHE_OWNER, 0)
        self.cache.insert(ids, CACHE_OWNER)
        self._next_rid += 1
        stream = Stream(writer, f"{self.port}-{self._next_rid}", len(ids), min(cached, len(ids) - 1),
                        int(req.get("sampling_params", {}).get("max_new_tokens", 16)))
        self.prompt_tokens += stream.prompt_tokens
        self.cached_tokens += stream.cached_tokens
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        if self.step_s <= 0:  # answer at once
            while stream.sent < stream.max_new_tokens:
                stream.sent += 1
                self._write(stream)
            self._finish(stream)
            return
        self.streams.append(stream)
        self._wake.set()
        await stream.done.wait()

    # ------------------------------------------------------------------ decode steps

    async def _step_loop(self) -> None:
        while True:
            if not self.streams:
                self._wake.clear()
                await self._wake.wait()
            batch, self.streams = self.streams, []  # requests arriving during the step join the next one
            uncached = sum(s.prompt_tokens - s.cached_tokens for s in batch if s.sent == 0)
            async with self.device:
                await asyncio.sleep(self.step_s + uncached * self.prefill_s_per_token)
            still = []
            for s in batch:
                if s.writer.is_closing():
                    s.done.set()
                    continue
                s.sent += 1
                if s.sent >= s.max_new_tokens:
                    self._write(s)
                    self._finish(s)
                    continue
                if s.writer.transport.get_write_buffer_size() == 0:  # a slow reader gets the latest later
                    self._write(s)
                still.append(s)
            self.streams = still + self.streams

    def _write(self, stream: Stream) -> None:
        stream.writer.write(stream.event())
        self.events += 1

    def _finish(self, stream: Stream) -> None:
        stream.writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.served += 1
        stream.done.set()


async def serve_all(ports: list[int], step_s: float, prefill_s_per_token: float = 0.0) -> None:
    device = asyncio.Lock()
    await asyncio.gather(*(StubWorker(p, step_s, prefill_s_per_token, device).serve() for p in ports))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ports", type=int, nargs="+", required=True)
    p.add_argument("--step-ms", type=float, default=20.0, help="one token per active stream every this many ms "
                                                                "(0: answer at once)")
    p.add_argument("--prefill-us-per-token", type=float, default=0.0,
                   help="extra step time per uncached prompt token admitted (0: prefill is free)")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    print(f"stub workers on {args.ports}", flush=True)
    try:
        asyncio.run(serve_all(args.ports, args.step_ms / 1000, args.prefill_us_per_token / 1e6))
    except KeyboardInterrupt:
        pass
