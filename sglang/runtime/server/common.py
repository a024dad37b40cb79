"""Plumbing shared by the native and OpenAI routes: error bodies, engine calls, SSE with abort-on-disconnect.

The engine's scheduler runs in its own thread; routes only await `engine.async_generate`, so the event
loop stays free for other connections. Every generation started here carries an explicit rid, so a
client that goes away (before the answer, or mid-stream) gets its requests aborted and their KV freed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Optional

from fastapi.responses import JSONResponse, Response

logger = logging.getLogger("sglang.server")

SSE_DONE = "data: [DONE]\n\n"


# --------------------------------------------------------------------------- errors

class HTTPError(Exception):
    """A request error with its HTTP status, rendered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: Optional[str] = None,
                 err_type: str = "invalid_request_error", code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.err_type, self.param, self.code or str(self.status))

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def error_body(message: str, err_type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> dict[str, Any]:
    # OpenAI's shape; SGLang 0.2.x clients only print the JSON of a non-200 answer, so one shape serves both.
    return {"object": "error", "error": {"message": message, "type": err_type, "param": param, "code": code}}


def as_http_error(exc: BaseException) -> HTTPError:
    """Map an engine exception: ValueError is the client's fault (400, per the engine contract), the rest 500."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, ValueError):
        named = re.search(r"\b(sampling_params\.\w+|input_ids|text|logprob_start_len|top_logprobs_num|rid)\b", str(exc))
        return HTTPError(400, str(exc), param=named.group(1) if named else None)
    logger.exception("internal error while serving a request", exc_info=exc)
    return HTTPError(500, f"internal server error: {type(exc).__name__}: {exc}", err_type="server_error")


def format_validation_errors(errors: list[dict[str, Any]]) -> HTTPError:
    """One 400 naming each bad field, from pydantic's error list (FastAPI's or our own)."""
    fields: dict[str, str] = {}
    for err in errors:
        if err.get("type") == "json_invalid":
            return HTTPError(400, f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}")
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if not loc:
            return HTTPError(400, "request body must be a JSON object")
        # Union members add loc entries ("str", "list[int]"); the named fields are the non-type parts.
        name = ".".join(p for p in loc if not _is_type_tag(p))
        if err.get("type") == "extra_forbidden":
            fields.setdefault(name, f"unknown field {name!r}")
        else:
            fields.setdefault(name, f"invalid field {name!r}: {err.get('msg')} (got {err.get('input')!r:.80})")
    return HTTPError(400, "; ".join(fields.values()) or "invalid request", param=next(iter(fields), None))


def _is_type_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "dict[str,any]") or "[" in part or part.startswith(
        ("function-", "constrained-"))


async def parse_body(request: Any, model: Any) -> Any:
    """Parse the body as JSON whatever the Content-Type (curl -d sends form-encoded), then validate."""
    from pydantic import ValidationError

    raw = await request.body()
    if not raw.strip():
        raise HTTPError(400, "request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise HTTPError(400, f"request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_errors(exc.errors()) from exc


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def new_rid() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- engine calls

def _finished(out: dict[str, Any]) -> bool:
    return (out.get("meta_info") or {}).get("finish_reason") is not None


# Above this many prompt characters, tokenization (done by async_generate's validation) moves to a worker
# thread so one long prompt does not stall every other stream on the event loop.
_OFFLOAD_CHARS = 8192


def _prompt_chars(kwargs: dict[str, Any]) -> int:
    text = kwargs.get("text")
    if isinstance(text, str):
        return len(text)
    return sum(len(t) for t in text) if isinstance(text, list) else 0


async def _start(engine: Any, kwargs: dict[str, Any]) -> Any:
    if _prompt_chars(kwargs) > _OFFLOAD_CHARS:
        return await asyncio.to_thread(engine.async_generate, **kwargs)
    return engine.async_generate(**kwargs)


async def engine_generate(engine: Any, kwargs: dict[str, Any]) -> Any:
    """One non-streaming generate call (dict for one prompt, list for a batch)."""
    return await (await _start(engine, {**kwargs, "stream": False}))


async def engine_stream(engine: Any, kwargs: dict[str, Any], coalesce: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Async iterator of cumulative outputs of one streamed prompt; coalesce: skip to the latest output
    when several are pending (see Engine.async_generate)."""
    result = await _start(engine, {**kwargs, "stream": True, **({"coalesce": True} if coalesce else {})})
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return result


def abort_all(engine: Any, rids: Iterable[str]) -> None:
    for rid in rids:
        try:
            engine.abort(rid)
        except Exception:  # an already-finished rid is fine to abort twice
            logger.debug("abort(%s) failed", rid, exc_info=True)


async def wait_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


async def run_or_abort(receive: Callable[[], Awaitable[dict[str, Any]]], awaitable: Awaitable[Any],
                       on_disconnect: Callable[[], None]) -> Any:
    """Await `awaitable`; if the client disconnects first, cancel it, call on_disconnect, raise ClientGone."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        on_disconnect()
        raise ClientGone()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


# --------------------------------------------------------------------------- SSE response

class EventStreamResponse(Response):
    """ASGI response streaming SSE strings from `events`.

    It watches the connection itself (the events may be idle for a long time, e.g. while queued) and,
    however the stream ends, closes the iterator and calls `on_close` exactly once; `on_close` aborts
    whatever did not finish, which frees the KV of a request whose client went away.
    """

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None],
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(status_code=200, media_type="text/event-stream")
        self.events = events
        self.on_close = on_close
        self.sse_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
        for k, v in (headers or {}).items():
            self.sse_headers.append((k.lower().encode(), v.encode()))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        async def pump() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.sse_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event.encode("utf-8"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        pump_task = asyncio.ensure_future(pump())
        watch_task = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait({pump_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (pump_task, watch_task):
                t.cancel()
            results = await asyncio.gather(pump_task, watch_task, return_exceptions=True)
            if isinstance(results[0], Exception):
                logger.debug("stream ended early: %r", results[0])
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.debug("closing the event iterator failed", exc_info=True)
            self.on_close()


@dataclass
class StreamTracker:
    """Which rids of one HTTP request are still running (to abort them when the client leaves)."""

    engine: Any
    rids: list[str]

    def __post_init__(self) -> None:
        self.pending = set(self.rids)

    def update(self, rid: str, out: dict[str, Any]) -> bool:
        """Record an output; True when it is the final one for that rid."""
        if _finished(out):
            self.pending.discard(rid)
            return True
        return False

    def close(self) -> None:
        if self.pending:
            abort_all(self.engine, list(self.pending))
            self.pending.clear()


async def merge_streams(streams: dict[int, AsyncIterator[dict[str, Any]]], first: dict[int, dict[str, Any]],
                        coalesce: bool = False) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Interleave several engine streams as (index, output), starting with each one's prefetched first output.

    coalesce: of the outputs of one stream that are pending when the consumer asks, yield only the latest
    (the outputs are cumulative; the consumer must be one for which that is the same as seeing each).
    """
    if len(streams) == 1:  # the common case: no drain task and queue hop per event
        ((idx, it),) = streams.items()
        try:
            yield idx, first[idx]
            if not _finished(first[idx]):
                async for out in it:
                    yield idx, out
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def drain(idx: int, it: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for out in it:
                await queue.put((idx, out))
        except BaseException as exc:  # forwarded to the consumer; cancellation ends quietly
            if not isinstance(exc, asyncio.CancelledError):
                await queue.put((idx, exc))
            else:
                raise
        finally:
            queue.put_nowait((idx, end))

    for idx, out in first.items():
        yield idx, out
    tasks = [asyncio.ensure_future(drain(i, it)) for i, it in streams.items() if not _finished(first[i])]
    remaining = len(tasks)
    try:
        while remaining:
            items = [await queue.get()]
            while coalesce and not queue.empty():
                items.append(queue.get_nowait())
            latest: dict[int, dict[str, Any]] = {}
            for idx, item in items:
                if item is end:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    for i, out in latest.items():
                        yield i, out
                    raise item
                elif coalesce:
                    latest[idx] = item
                else:
                    yield idx, item
            for i, out in latest.items():
                yield i, out
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def prefetch_first(streams: dict[int, AsyncIterator[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """First output of every stream (so a bad request is a 400 before the 200 of the stream is sent)."""
    keys = list(streams)
    results = await asyncio.gather(*(streams[k].__anext__() for k in keys), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return dict(zip(keys, results))


async def open_streams(
    engine: Any, request: Any, subs: list[dict[str, Any]], tracker: StreamTracker, coalesce: bool = False
) -> tuple[dict[int, AsyncIterator[dict[str, Any]]], dict[int, dict[str, Any]]]:
    """Start one engine stream per sub-request and wait for every stream's first output, watching the client.

    Returns (streams, first outputs). Raises ClientGone if the client left meanwhile (the streams are
    aborted through `tracker`); any other failure closes `tracker` and is raised as an HTTPError.
    """
    try:
        streams = {i: await engine_stream(engine, s, coalesce) for i, s in enumerate(subs)}
        first = await run_or_abort(request.receive, prefetch_first(streams), tracker.close)
    except ClientGone:
        raise  # the caller answers 499; tracker.close() already ran as on_disconnect
    except Exception as exc:
        tracker.close()
        if isinstance(exc, StopAsyncIteration):
            exc = RuntimeError("the engine produced no output")
        raise as_http_error(exc) from exc
    return streams, first
