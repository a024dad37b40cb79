"""The router's HTTP/1.1 client (router/http1.py) against a scripted loopback server: chunked bodies cut
anywhere, Content-Length and read-until-close bodies, keep-alive reuse, a stale pooled connection
replaced, and which failures count as "answered"."""
from __future__ import annotations

import asyncio

import pytest

from sglang.runtime.router.http1 import ConnectionLost, Http1Pool
from sglang.runtime.server.launch import free_port


class ScriptedServer:
    """Reads one request head (+ Content-Length body) per turn and writes `replies[path]`: a list of
    byte pieces written with a pause between them (so they arrive as separate reads), or "close"."""

    def __init__(self, replies: dict[str, object]) -> None:
        self.replies = replies
        self.connections = 0
        self.bodies: list[bytes] = []

    async def __aenter__(self) -> "ScriptedServer":
        self.port = free_port()
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                path = head.split(" ")[1]
                length = next((int(line.split(":")[1]) for line in head.split("\r\n")
                               if line.lower().startswith("content-length")), 0)
                self.bodies.append(await reader.readexactly(length))
                reply = self.replies[path]
                if reply == "close":
                    break
                for piece in reply:  # type: ignore[union-attr]
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                if path.endswith("once"):  # answer, then drop the keep-alive connection
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


CHUNKED = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhel", b"lo\r\n6\r\n wor",
           b"ld\r\n", b"0\r\n\r\n"]
SIZED = [b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\nhello", b" world"]


def _run(coro):
    return asyncio.run(coro)


def test_chunked_and_sized_bodies_and_keep_alive_reuse():
    async def go():
        async with ScriptedServer({"/c": CHUNKED, "/s": SIZED}) as srv:
            pool = Http1Pool(f"http://127.0.0.1:{srv.port}")
            r = await pool.request("POST", "/c", b'{"x": 1}', {"Content-Type": "application/json"})
            assert (r.status, r.header("x-a")) == (200, "1")
            pieces = [p async for p in r.aiter_raw()]
            assert b"".join(pieces) == b"hello world" and all(pieces)
            r = await pool.request("GET", "/s")
            assert r.status == 201 and await r.aread() == b"hello world"
            assert srv.connections == 1 and srv.bodies == [b'{"x": 1}', b""]  # one kept-alive connection
            await pool.aclose()
    _run(go())


def test_whole_chunks_that_arrive_together_come_out_as_one_piece():
    async def go():
        together = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n1\r\ne", b"\r\n0\r\n\r\n"]
        async with ScriptedServer({"/t": together}) as srv:
            pool = Http1Pool(f"http://127.0.0.1:{srv.port}")
            r = await pool.request("GET", "/t")
            assert [p async for p in r.aiter_raw()] == [b"abcd", b"e"]
    _run(go())


def test_a_stale_pooled_connection_is_replaced_without_an_error():
    async def go():
        async with ScriptedServer({"/once": SIZED}) as srv:
            pool = Http1Pool(f"http://127.0.0.1:{srv.port}")
            for _ in range(3):  # the server closes each connection after answering once
                r = await pool.request("GET", "/once")
                assert await r.aread() == b"hello world"
                await asyncio.sleep(0.05)
            assert srv.connections == 3
    _run(go())


def test_failures_say_whether_the_worker_answered():
    async def go():
        cut = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"]
        async with ScriptedServer({"/close": "close", "/cut_once": cut}) as srv:
            pool = Http1Pool(f"http://127.0.0.1:{srv.port}")
            with pytest.raises(ConnectionLost) as info:  # closed before any byte of an answer
                await pool.request("POST", "/close", b"{}")
            assert not info.value.answered and not info.value.timed_out
            r = await pool.request("GET", "/cut_once")  # the body breaks off after 7 of 100 bytes
            with pytest.raises(ConnectionLost) as info:
                await asyncio.wait_for(r.aread(), 10)
            assert info.value.answered
        refused = Http1Pool(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(ConnectionLost) as info:
            await refused.request("GET", "/health")
        assert not info.value.answered and not info.value.timed_out
    _run(go())


def test_a_path_in_the_url_prefixes_every_request():
    async def go():
        async with ScriptedServer({"/api/s": SIZED}) as srv:
            pool = Http1Pool(f"http://127.0.0.1:{srv.port}/api/")
            assert await (await pool.request("GET", "/s")).aread() == b"hello world"
    _run(go())


def test_bad_urls_are_refused():
    with pytest.raises(ValueError):
        Http1Pool("ftp://x")
    pool = Http1Pool("https://example.com")
    assert (pool.host, pool.port, pool.ssl is not None) == ("example.com", 443, True)
