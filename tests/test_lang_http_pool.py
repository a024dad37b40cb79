"""RuntimeEndpoint's connection pool (lang/backends/http_pool.py) against a small local HTTP/1.1 server:
keep-alive reuse, a connection the server closed is replaced without failing the request, SSE lines, error
statuses, and answers that never cross between threads."""
from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sglang as sgl
from sglang.lang.backends.http_pool import ConnectionPool, HttpStatusError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _reply(self, status: int, body: bytes, close: bool = False, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(200, json.dumps({"model_path": "x"}).encode())

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if req.get("status"):
            return self._reply(req["status"], b"nope")
        if req.get("stream"):
            body = "".join(f"data: {json.dumps({'text': req['text'][:i], 'meta_info': {}})}\n\n"
                           for i in range(1, len(req["text"]) + 1)) + "data: [DONE]\n\n"
            return self._reply(200, body.encode(), ctype="text/event-stream")
        # echo the prompt back, so a reply that reached the wrong thread is caught
        self._reply(200, json.dumps({"text": req["text"], "meta_info": {}}).encode(), close=req.get("close", False))


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog (5) resets connections when 64 threads connect at once


@pytest.fixture()
def http_server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock, srv.connections = threading.Lock(), 0
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def _post(pool: ConnectionPool, obj: dict) -> tuple[int, dict]:
    status, data = pool.request("POST", "/generate", json.dumps(obj).encode())
    return status, (json.loads(data) if status == 200 else data)


def test_sequential_requests_reuse_one_connection(http_server):
    pool = ConnectionPool(_url(http_server))
    for i in range(5):
        assert _post(pool, {"text": f"t{i}"}) == (200, {"text": f"t{i}", "meta_info": {}})
    assert http_server.connections == 1
    sock = pool.idle[0].sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_connection_the_server_closed_is_replaced(http_server):
    pool = ConnectionPool(_url(http_server))
    assert _post(pool, {"text": "a", "close": True})[0] == 200  # the server says Connection: close
    assert not pool.idle  # not kept
    assert _post(pool, {"text": "b"})[0] == 200
    # a kept connection that the server closes behind the pool's back (idle timeout): the request is resent
    pool.idle[0].sock.shutdown(socket.SHUT_RDWR)
    assert _post(pool, {"text": "c"}) == (200, {"text": "c", "meta_info": {}})


def test_many_threads_each_get_their_own_answer(http_server):
    pool = ConnectionPool(_url(http_server))

    def worker(i: int) -> list[str]:
        return [_post(pool, {"text": f"{i}-{k}"})[1]["text"] for k in range(4)]

    with ThreadPoolExecutor(64) as ex:
        got = list(ex.map(worker, range(128)))
    assert got == [[f"{i}-{k}" for k in range(4)] for i in range(128)]
    assert http_server.connections <= 64


def test_stream_lines_and_error_statuses(http_server):
    pool = ConnectionPool(_url(http_server))
    lines = [ln for ln in pool.stream_lines("/generate", json.dumps({"text": "abc", "stream": True}).encode()) if ln]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][5:])["text"] == "a"
    with pytest.raises(HttpStatusError) as info:
        list(pool.stream_lines("/generate", json.dumps({"text": "x", "status": 503}).encode()))
    assert info.value.status == 503 and info.value.body == "nope"
    it = pool.stream_lines("/generate", json.dumps({"text": "abcdef", "stream": True}).encode())
    next(it)
    it.close()  # stopped early: that connection holds the rest of the stream and must not be reused
    assert _post(pool, {"text": "after"}) == (200, {"text": "after", "meta_info": {}})
    with pytest.raises(ValueError, match="base_url"):
        ConnectionPool("127.0.0.1:30000")


def test_runtime_endpoint_over_the_pool(http_server):
    be = sgl.RuntimeEndpoint(_url(http_server))

    @sgl.function
    def prog(s):
        s += "hello" + sgl.gen("a", max_tokens=4)

    assert prog.run(backend=be)["a"] == "hello"
    assert "".join(prog.run(backend=be, stream=True).text_iter("a")) == "hello"
    assert be.get_model_info() == {"model_path": "x"}
