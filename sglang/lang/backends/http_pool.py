"""The HTTP transport of `RuntimeEndpoint`: a thread-safe pool of keep-alive `http.client` connections.

Why not httpx or requests: a program batch runs 100+ interpreter threads, each making short blocking JSON
calls. httpx's pool (a lock held while it scans its connections, 100 connections at most by default) and
requests (a new connection per `requests.post`) cost 4-5x the client CPU of a plain keep-alive connection
per call (measured against a no-op server: 1024 calls from 256 threads, 0.8-1.0 s CPU vs 0.2 s), and the
interpreter is then slower than SGLang's own. Here an idle connection is popped from a deque (atomic, no
lock), used by one thread for one request, and pushed back once its response is read to the end.

`HttpxTransport` answers the same two calls over an injected `httpx.BaseTransport` (tests use
`httpx.MockTransport`), so `RuntimeEndpoint` has one code path whatever carries its requests.
"""
from __future__ import annotations

import collections
import http.client
import socket
import ssl
import urllib.parse
from typing import Any, Iterator, Optional, Union

# A kept-alive connection the server has closed since its last use fails on reuse with one of these before
# any response: the request never reached the server, so sending it again on a fresh connection is safe.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest)


class HttpStatusError(Exception):
    """A response whose status is not 200: its status and body text."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status, self.body = status, body


class ConnectionPool:
    """Keep-alive connections to one server; `request` and `stream_lines` may be called from any thread."""

    def __init__(self, base_url: str, headers: Optional[dict[str, str]] = None, timeout: float = 600.0,
                 verify: Union[bool, str] = True) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be http://host[:port] or https://..., got {base_url!r}")
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname, url.port or (443 if self.https else 80)
        self.prefix = url.path.rstrip("/")  # a server mounted under a path
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.timeout = timeout
        self.ssl_context = _ssl_context(verify) if self.https else None
        self.idle: collections.deque[http.client.HTTPConnection] = collections.deque()

    def _new(self) -> http.client.HTTPConnection:
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.connect()
        # small requests on a kept-alive connection: no Nagle delay waiting for the server's delayed ACK
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _send(self, method: str, path: str, body: Optional[bytes]) -> tuple[http.client.HTTPConnection,
                                                                            http.client.HTTPResponse]:
        """The response of one request, on an idle connection or, when that one turns out stale, a new one."""
        while True:
            try:
                conn, reused = self.idle.pop(), True
            except IndexError:
                conn, reused = self._new(), False
            try:
                conn.request(method, self.prefix + path, body=body, headers=self.headers)
                return conn, conn.getresponse()
            except _STALE:
                conn.close()
                if not reused:
                    raise
            except BaseException:
                conn.close()
                raise

    def _release(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        if resp.will_close:
            conn.close()
        else:
            self.idle.append(conn)

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, bytes]:
        conn, resp = self._send(method, path, body)
        try:
            data = resp.read()
        except BaseException:
            conn.close()
            raise
        self._release(conn, resp)
        return resp.status, data

    def stream_lines(self, path: str, body: bytes) -> Iterator[str]:
        """The lines of a streamed POST response (SSE); HttpStatusError when the status is not 200."""
        conn, resp = self._send("POST", path, body)
        done = False
        try:
            if resp.status != 200:
                raise HttpStatusError(resp.status, resp.read().decode(errors="replace"))
            while True:
                line = resp.readline()
                if not line:
                    break
                yield line.decode().rstrip("\r\n")
            resp.read()  # marks the response closed (readline does not), so the connection can be reused
            done = True
        finally:
            if done:
                self._release(conn, resp)
            else:  # the reader stopped early or failed: the rest of the stream must not reach the next user
                conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class HttpxTransport:
    """The pool's two calls over an httpx transport (e.g. `httpx.MockTransport` in tests)."""

    def __init__(self, base_url: str, transport: Any, headers: Optional[dict[str, str]] = None,
                 timeout: float = 600.0, verify: Union[bool, str] = True) -> None:
        import httpx

        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, verify=verify,
                                   transport=transport)

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, bytes]:
        resp = self.client.request(method, path, content=body,
                                   headers={"Content-Type": "application/json"} if body is not None else None)
        return resp.status_code, resp.content

    def stream_lines(self, path: str, body: bytes) -> Iterator[str]:
        with self.client.stream("POST", path, content=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status_code != 200:
                raise HttpStatusError(resp.status_code, resp.read().decode(errors="replace"))
            yield from resp.iter_lines()

    def close(self) -> None:
        self.client.close()


def _ssl_context(verify: Union[bool, str]) -> ssl.SSLContext:
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
