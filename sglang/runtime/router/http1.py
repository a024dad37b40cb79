"""A lean HTTP/1.1 client for the router's relay: keep-alive connections to one worker, bodies read as
raw bytes, one yield per socket read.

Why not httpx: relaying SSE streams is the router's whole job, and httpx spends its CPU per chunk in
layers the relay does not need (httpcore's pool scans every connection on each request and response,
h11 builds an event object per chunk, anyio wraps each read). With hundreds of streams in flight that
made the Python router the bottleneck of a whole deployment (docs/benchmarks.md, issue 16). This
client does what a reverse proxy to our own servers needs and no more: `Content-Length`, chunked and
read-until-close bodies, keep-alive reuse, a connect timeout, http and https.

Failures are `ConnectionLost`; `answered` on it says whether any byte of the response had arrived
(callers decide retry safety from that).
"""
from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import AsyncIterator, Optional

READ_SIZE = 1 << 16
MAX_HEAD = 1 << 16  # bytes of status line + headers accepted from a worker
NO_BODY_STATUS = frozenset({204, 304})


class ConnectionLost(Exception):
    """The connection failed; `answered` tells whether part of the response had already arrived,
    `timed_out` whether connecting took too long (rather than being refused)."""

    def __init__(self, message: str, answered: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.answered = answered
        self.timed_out = timed_out


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class Response:
    """Status and headers of an answer whose body is still on the wire: read it with `aiter_raw()`
    or `aread()`, and `aclose()` it when done (a fully read body returns its connection to the pool)."""

    def __init__(self, pool: "Http1Pool", conn: _Conn, status: int, headers: list[tuple[str, str]],
                 method: str) -> None:
        self.status = status
        self.headers = headers
        self._pool, self._conn = pool, conn
        names = {k: v.lower() for k, v in headers}
        self._keep_alive = names.get("connection") != "close"
        if method == "HEAD" or status in NO_BODY_STATUS or 100 <= status < 200:
            self._framing, self._length = "length", 0
        elif "chunked" in names.get("transfer-encoding", ""):
            self._framing, self._length = "chunked", 0
        elif "content-length" in names:
            self._framing, self._length = "length", int(names["content-length"])
        else:  # the body ends when the worker closes the connection
            self._framing, self._length, self._keep_alive = "close", 0, False
        self._done = False
        self._closed = False

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes (chunk framing removed), as they arrive; raises ConnectionLost(answered=True)
        when the connection breaks before the body's end."""
        try:
            if self._framing == "chunked":
                async for data in self._chunked():
                    yield data
            elif self._framing == "length":
                async for data in self._sized():
                    yield data
            else:
                while data := await self._conn.reader.read(READ_SIZE):
                    yield data
            self._done = True
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise ConnectionLost(f"the response body broke off: {exc!r}", answered=True) from exc
        finally:
            await self.aclose()

    async def aread(self) -> bytes:
        return b"".join([data async for data in self.aiter_raw()])

    async def _sized(self) -> AsyncIterator[bytes]:
        left = self._length
        while left > 0:
            data = await self._conn.reader.read(min(left, READ_SIZE))
            if not data:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(data)
            yield data

    async def _chunked(self) -> AsyncIterator[bytes]:
        """Decode the chunked framing from a buffer: every whole chunk that one read brought in comes out
        as one piece (a slow reader's backlog costs one relay step, not one per chunk)."""
        buf, reader = b"", self._conn.reader
        while True:
            out, pos = [], 0
            while (eol := buf.find(b"\r\n", pos)) >= 0:
                size = int(buf[pos:eol].split(b";", 1)[0], 16)  # ValueError: not HTTP
                if size == 0:  # last chunk, then optional trailers and a blank line
                    end = buf.find(b"\r\n\r\n", eol)
                    if end < 0:
                        break
                    if out:
                        yield b"".join(out)
                    return
                start, end = eol + 2, eol + 2 + size
                if len(buf) < end + 2:
                    break
                out.append(buf[start:end])
                pos = end + 2
            buf = buf[pos:]
            if out:
                yield b"".join(out)
            data = await reader.read(READ_SIZE)
            if not data:
                raise asyncio.IncompleteReadError(buf, None)
            buf += data

    async def aclose(self) -> None:
        """Give the connection back when the body was read to its end, else close it (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._done and self._keep_alive:
            self._pool.release(self._conn)
        else:
            self._conn.close()


class Http1Pool:
    """Keep-alive HTTP/1.1 connections to one origin (`scheme://host:port`); no limit on open ones."""

    def __init__(self, url: str, connect_timeout: float = 5.0, max_idle: int = 256) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"worker URL must be http(s)://HOST[:PORT], got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: Optional[ssl.SSLContext] = ssl.create_default_context() if parts.scheme == "https" else None
        self.host_header = parts.netloc.rsplit("@", 1)[-1].encode("latin-1")
        self.prefix = parts.path.rstrip("/")  # a worker mounted under a path: every request goes below it
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: list[_Conn] = []

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Optional[dict[str, str]] = None) -> Response:
        """Send the request and read the status line and headers. A reused connection that turns out to
        have been closed by the worker (no byte of answer) is replaced by a fresh one once."""
        head = self._head(method, path, body, headers or {})
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._exchange(conn, head, body, method)
            except ConnectionLost as exc:
                if exc.answered:
                    raise
                break  # stale keep-alive connection: one fresh try below
        return await self._exchange(await self._connect(), head, body, method)

    def release(self, conn: _Conn) -> None:
        if conn.usable() and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ------------------------------------------------------------------ internals

    def _head(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1".encode("latin-1"), b"Host: " + self.host_header]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in headers.items()
                  if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=MAX_HEAD),
                timeout=self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc!r}", answered=False,
                                 timed_out=isinstance(exc, asyncio.TimeoutError)) from exc
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes, method: str) -> Response:
        try:
            conn.writer.write(head + body)
            await conn.writer.drain()
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:  # closed: answered if part of a head had come
            conn.close()
            raise ConnectionLost(f"{self.host}:{self.port}: closed", answered=bool(exc.partial)) from exc
        except (OSError, asyncio.LimitOverrunError) as exc:
            conn.close()
            raise ConnectionLost(f"{self.host}:{self.port}: {exc!r}",
                                 answered=isinstance(exc, asyncio.LimitOverrunError)) from exc
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            conn.close()
            raise
        status_line, _, rest = raw.decode("latin-1").partition("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            conn.close()
            raise ConnectionLost(f"not an HTTP response: {status_line[:80]!r}", answered=True) from exc
        headers = []
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name.strip().lower(), value.strip()))
        return Response(self, conn, status, headers, method)
