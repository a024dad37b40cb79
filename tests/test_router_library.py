"""`Router` as a library over in-process workers (no HTTP): retries while nothing was sent, a clear error
event when a stream breaks after it began, load accounting, and the registry's health transitions."""
from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import pytest

from sglang.runtime.router.policy import CacheAwarePolicy, RoundRobinPolicy
from sglang.runtime.router.router import NoWorkerAvailable, Router, routing_key, sse_events
from sglang.runtime.router.workers import Reply, Worker, WorkerDied, WorkerRegistry, WorkerUnavailable


class FakeWorker(Worker):
    """Answers with its name; `mode` scripts a failure: down (unreachable), busy (slow to accept),
    die_before_event (the stream breaks before its first whole event), die_after_event (after one event)."""

    def __init__(self, name: str, mode: str = "ok") -> None:
        self.name, self.mode, self.up, self.calls = name, mode, True, 0
        self.answering = False  # answered_since(): whether it sends answers while a probe runs

    def answered_since(self, t: float) -> bool:
        return self.answering

    async def health(self) -> bool:
        return self.up

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        self.calls += 1
        if self.mode == "down":
            raise WorkerUnavailable(f"{self.name}: connection refused")
        if self.mode == "busy":
            raise WorkerUnavailable(f"{self.name}: connect timed out", busy=True)
        return Reply(200, {"content-type": "application/json"}, json.dumps({"text": self.name}).encode())

    async def open_stream(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        self.calls += 1
        if self.mode == "down":
            raise WorkerUnavailable(f"{self.name}: connection refused")
        if self.mode == "bad_request":
            return Reply(400, {"content-type": "application/json"}, chunks=self._error_body())
        return Reply(200, {"content-type": "text/event-stream"}, chunks=self._chunks())

    async def _error_body(self) -> AsyncIterator[bytes]:
        yield b'{"error": '
        yield b'"bad"}'


    async def _chunks(self) -> AsyncIterator[bytes]:
        first = f'data: {{"text": "{self.name}-1"}}\n\n'.encode()
        if self.mode == "die_before_event":
            yield first[:7]
            raise WorkerDied(f"{self.name}: reset")
        yield first[:5]  # events arrive cut anywhere: the router re-frames them
        yield first[5:]
        if self.mode == "die_after_event":
            raise WorkerDied(f"{self.name}: reset")
        yield f'data: {{"text": "{self.name}-2"}}\n\ndata: [DONE]\n\n'.encode()


def _run(coro):
    return asyncio.run(coro)


async def _collect(reply: Reply) -> list[bytes]:
    assert reply.chunks is not None
    return [e async for e in reply.chunks]


def test_forward_retries_an_unreachable_worker_and_drops_it():
    async def go():
        a, b = FakeWorker("a", "down"), FakeWorker("b")
        router = Router([a, b], RoundRobinPolicy())
        replies = [await router.forward("POST", "/generate", b"{}", {}, "k") for _ in range(3)]
        assert [json.loads(r.body)["text"] for r in replies] == ["b", "b", "b"]
        assert a.calls == 1 and router.registry.healthy() == ["b"] and router.counters["retries"] == 1
        assert router.registry.loads() == {"b": 0}  # every request released its slot
        a.mode, a.up = "ok", True
        await router.registry.check_all()           # one good probe re-adds it
        assert router.registry.healthy() == ["a", "b"]
    _run(go())


def test_forward_with_every_worker_down_raises():
    async def go():
        router = Router([FakeWorker("a", "down"), FakeWorker("b", "down")], RoundRobinPolicy())
        with pytest.raises(NoWorkerAvailable):
            await router.forward("POST", "/generate", b"{}", {}, "k")
        assert router.registry.healthy() == []
        with pytest.raises(NoWorkerAvailable, match="no healthy worker"):
            await router.forward("POST", "/generate", b"{}", {}, "k")
    _run(go())


def test_stream_that_breaks_before_its_first_event_is_retried():
    async def go():
        a, b = FakeWorker("a", "die_before_event"), FakeWorker("b")
        router = Router([a, b], RoundRobinPolicy())
        events = await _collect(await router.forward_stream("/generate", b"{}", {}, "k"))
        # whole events only; those that arrived in one read are relayed together
        assert events == [b'data: {"text": "b-1"}\n\n', b'data: {"text": "b-2"}\n\ndata: [DONE]\n\n']
        assert router.registry.healthy() == ["b"] and router.registry.loads() == {"b": 0}
    _run(go())


def test_stream_that_breaks_after_it_began_ends_with_an_error_event():
    async def go():
        a, b = FakeWorker("a", "die_after_event"), FakeWorker("b")
        router = Router([a, b], RoundRobinPolicy())
        events = await _collect(await router.forward_stream("/generate", b"{}", {}, "k"))
        assert events[0] == b'data: {"text": "a-1"}\n\n'
        err = json.loads(events[1].split(b"\n\n")[0][len(b"data: "):])
        assert err["error"]["code"] == "502" and "after the response started streaming" in err["error"]["message"]
        assert events[1].endswith(b"data: [DONE]\n\n")
        assert b.calls == 0  # not replayed: the client already has part of a's answer
        assert router.registry.healthy() == ["b"] and router.counters["broken_streams"] == 1
        assert router.registry.loads() == {"b": 0}
    _run(go())


def test_registry_drops_after_threshold_failures_and_readds_on_success():
    async def go():
        downs = []
        w = FakeWorker("a")
        reg = WorkerRegistry([w, FakeWorker("never")], fail_threshold=2, on_down=downs.append)
        reg.get("never").up = False
        await reg.check_all()
        assert reg.healthy() == ["a"] and downs == ["never"]  # never seen up: down at its first probe
        await reg.remove("never")
        downs.clear()
        w.up = False
        await reg.check_all()
        assert reg.healthy() == ["a"]          # one failed probe is tolerated
        await reg.check_all()
        assert reg.healthy() == [] and downs == ["a"]
        w.up = True
        await reg.check_all()
        assert reg.healthy() == ["a"] and reg.snapshot()[0]["consecutive_failures"] == 0
        assert await reg.remove("a") and reg.names() == [] and downs == ["a", "a"]
        with pytest.raises(ValueError):
            WorkerRegistry([FakeWorker("x"), FakeWorker("x")])
    _run(go())


def test_routing_history_is_kept_on_a_request_failure_and_forgotten_when_probes_drop_the_worker():
    async def go():
        a, b = FakeWorker("a"), FakeWorker("b")
        policy = CacheAwarePolicy()
        router = Router([a, b], policy, fail_threshold=2)
        await router.forward("POST", "/generate", b"{}", {}, "shared prefix q1")
        assert router.decisions[-1].worker == "a" and policy.tree.size("a") > 0
        router.registry.mark_down("a", "reset under load")
        assert router.registry.healthy() == ["b"] and policy.tree.size("a") > 0  # out of rotation, cache kept
        await router.registry.check_all()
        assert router.registry.healthy() == ["a", "b"] and policy.tree.size("a") > 0
        a.up = False
        await router.registry.check_all()
        assert policy.tree.size("a") > 0     # one failed probe is tolerated
        await router.registry.check_all()
        assert router.registry.healthy() == ["b"] and policy.tree.size("a") == 0  # confirmed down: forgotten
        assert router.registry.events["worker_down"] == 2 and router.registry.events["probe_failures"] == 2
    _run(go())


def test_a_busy_worker_is_retried_elsewhere_but_stays_in_rotation():
    async def go():
        a, b = FakeWorker("a", "busy"), FakeWorker("b")
        router = Router([a, b], RoundRobinPolicy())
        reply = await router.forward("POST", "/generate", b"{}", {}, "k")
        assert json.loads(reply.body)["text"] == "b" and router.counters["retries"] == 1
        assert router.registry.healthy() == ["a", "b"] and router.registry.loads() == {"a": 0, "b": 0}
    _run(go())


def test_a_slow_probe_is_excused_when_the_worker_answered_meanwhile():
    async def go():
        a = FakeWorker("a")
        reg = WorkerRegistry([a], fail_threshold=1)
        await reg.check_all()
        a.up, a.answering = False, True  # the probe fails (say, timed out) while streams keep flowing
        await reg.check_all()
        assert reg.healthy() == ["a"] and reg.events["probes_excused"] == 1
        a.answering = False
        await reg.check_all()
        assert reg.healthy() == []
    _run(go())


def test_routing_key_of_each_route():
    assert routing_key("/generate", {"text": "hi"}) == "hi"
    assert routing_key("/generate", {"text": ["first", "second"]}) == "first"
    assert routing_key("/generate", {"input_ids": [1, 2, 3]}) == (1, 2, 3)
    assert routing_key("/generate", {"input_ids": [[4, 5], [6]]}) == (4, 5)
    assert routing_key("/v1/completions", {"prompt": "p"}) == "p"
    assert routing_key("/v1/completions", {"prompt": [7, 8]}) == (7, 8)
    chat = {"messages": [{"role": "system", "content": "S"},
                         {"role": "user", "content": [{"type": "text", "text": "U"}]}]}
    assert routing_key("/v1/chat/completions", chat) == "<system>S\n<user>U"
    assert routing_key("/generate", None) == () and routing_key("/generate", {}) == ()


def test_sse_events_reframes_and_drops_a_trailing_partial_event():
    async def chunks():
        for c in (b"data: 1\r", b"\n\r\ndata: 2\n", b"\ndata: 3"):
            yield c

    async def go():
        return [e async for e in sse_events(chunks())]
    assert _run(go()) == [b"data: 1\n\n", b"data: 2\n\n"]


def test_sse_events_relays_the_whole_events_of_one_read_together():
    async def chunks():
        yield b"data: 1\n\ndata: 2\n\ndata: 3"
        yield b"\n\n"

    async def go():
        return [e async for e in sse_events(chunks())]
    assert _run(go()) == [b"data: 1\n\ndata: 2\n\n", b"data: 3\n\n"]


def test_a_stream_never_read_is_released_by_aclose_once():
    async def go():
        router = Router([FakeWorker("a")], RoundRobinPolicy())
        reply = await router.forward_stream("/generate", b"{}", {}, "k")
        assert router.registry.loads() == {"a": 1}
        await reply.aclose()
        await reply.aclose()  # idempotent: the relay's own cleanup may run too
        assert router.registry.loads() == {"a": 0}
    _run(go())


def test_a_stream_request_answered_with_an_error_passes_it_on_whole():
    async def go():
        router = Router([FakeWorker("a", "bad_request"), FakeWorker("b")], RoundRobinPolicy())
        reply = await router.forward_stream("/generate", b"{}", {}, "k")
        assert (reply.status, reply.body, reply.chunks) == (400, b'{"error": "bad"}', None)
        assert router.registry.loads() == {"a": 0, "b": 0} and router.counters["retries"] == 0
    _run(go())
