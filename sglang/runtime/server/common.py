"""Plumbing shared by the native and OpenAI routes: error bodies, engine calls, SSE with abort-on-disconnect.

The engine's scheduler runs in its own thread; routes only await `engine.async_generate`, so the event
loop stays free for other connections. Every generation started here carries an explicit rid, so a
client that goes away (before the answer, or mid-stream) gets its requests aborted and their KV freed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import threading
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


# Request bodies: bigger ones get a 413 before they are read whole; deeper JSON a 400 before any checker
# walks it (Python's recursion would turn it into a 500).
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 64


async def read_body(request: Any, limit: Optional[int] = None) -> bytes:
    """The request body, at most `limit` (default MAX_BODY_BYTES) bytes: 413 beyond; ClientGone if the
    client leaves while sending."""
    from starlette.requests import ClientDisconnect

    limit = MAX_BODY_BYTES if limit is None else limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"request body of {int(declared)} bytes is larger than the limit of {limit} bytes",
                        code="request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body is larger than the limit of {limit} bytes",
                                code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity; JSON does not, and downstream int() / range checks choke on them
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


_SCALARS = frozenset({int, float, bool, type(None)})


def check_json_tree(data: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """400 for nesting deeper than max_depth or a string holding a lone UTF-16 surrogate (which no
    tokenizer or UTF-8 encoder accepts); iterative, so any depth is checked without recursion.

    A list of numbers (input_ids: thousands per request) is passed over at C speed, and a node's path
    (for the error) is spelled out only when it is reported: building it per element cost 1.2 ms per
    2176-id body, which serialized a 1024-request burst on the event loop for 2.6 s (H200 timeline, run 8)."""
    stack: list[tuple[Any, int, Any, Any]] = [(data, 1, None, None)]  # (node, depth, parent entry, key)
    while stack:
        entry = stack.pop()
        node, depth = entry[0], entry[1]
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                where = _json_path(entry)
                raise HTTPError(400, f"{where}: the string holds a lone surrogate (\\u{ord(node[exc.start]):04x}) "
                                     f"at position {exc.start}; send valid Unicode", param=where) from None
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > max_depth:
            where = _json_path(entry)
            raise HTTPError(400, f"the JSON body is nested deeper than {max_depth} levels (at {where})", param=where)
        if isinstance(node, list):
            if _SCALARS.issuperset(map(type, node)):
                continue
            for i, value in enumerate(node):
                if type(value) not in _SCALARS:
                    stack.append((value, depth + 1, entry, i))
            continue
        for key, value in node.items():
            stack.append((key, depth, entry, (key, "key")))
            if type(value) not in _SCALARS:
                stack.append((value, depth + 1, entry, key))


def _json_path(entry: tuple[Any, int, Any, Any]) -> str:
    """`body.a[3].b` (or `body.a key`) of a check_json_tree stack entry, from its chain of parents."""
    parts: list[str] = []
    while entry[2] is not None:
        key, parent = entry[3], entry[2]
        if isinstance(key, tuple):  # a dict key itself: named after the dict that holds it
            parts.append(" key")
        elif isinstance(parent[0], dict):
            parts.append(f".{key}")
        else:
            parts.append(f"[{key}]")
        entry = parent
    return "body" + "".join(reversed(parts))


def decode_json(raw: bytes) -> Any:
    """JSON bytes -> a checked tree (400 on malformed, too deep, non-finite constants, lone surrogates)."""
    if not raw.strip():
        raise HTTPError(400, "request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON body: {exc}") from exc
    except ValueError as exc:  # a rejected constant
        raise HTTPError(400, f"malformed JSON body: {exc}") from exc
    except RecursionError:
        raise HTTPError(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_json_tree(data)
    return data


def check_schema_depth(sampling_params: Any, param: str) -> None:
    """A json_schema sent as text is JSON too: refuse one nested deeper than the body may be (400), before
    the schema compiler walks it; malformed text is left for the compiler to name."""
    for sp in sampling_params if isinstance(sampling_params, list) else [sampling_params]:
        text = sp.get("json_schema") if isinstance(sp, dict) else None
        if not isinstance(text, str):
            continue
        try:
            tree = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise HTTPError(400, f"{param} is nested deeper than {MAX_JSON_DEPTH} levels", param=param) from None
        except ValueError:
            continue
        try:
            check_json_tree(tree)
        except HTTPError as exc:
            raise HTTPError(400, f"{param}: {exc.message.replace('the JSON body', 'the schema')}", param=param) from None


async def parse_body(request: Any, model: Any) -> Any:
    """Parse the body as JSON whatever the Content-Type (curl -d sends form-encoded), then validate."""
    from pydantic import ValidationError

    data = decode_json(await read_body(request))
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


# Admission (tokenizing, compiling a constraint) runs in the caller's thread inside async_generate. A long
# prompt or any constraint moves it to this small pool, so a slow compile stalls neither the event loop
# (/health, open streams) nor the scheduler's step. Jobs beyond the workers wait in a queue: hundreds of
# clients sending the same (cached) regex, or SGLang's select sending 4 long texts at once, are ordinary load
# and must be served, not refused. The queue is bounded in length (503 past it) and in waiting time; each job
# has a time budget counted from when it *starts*, so a job is never blamed for the queue ahead of it; after
# the budget the client gets its answer (the thread finishes on its own: Python cannot stop it, hence the
# bounds).
OFFLOAD_CHARS = 8192
# a burst of long prompts is tokenized here (the fast tokenizer's Rust encoder releases the GIL): with 2
# workers, 1024 prompts of 2176 tokens reached the H200's scheduler over 2.6 s (forward timeline, run 8), half
# of them after the first 4 s of the benchmark; half the cores, within [2, 8], keep the event loop responsive
PREPARE_WORKERS = max(2, min(8, (os.cpu_count() or 2) // 2))
PREPARE_MAX_PENDING = 4096
PREPARE_TIMEOUT_S = 30.0
PREPARE_QUEUE_WAIT_S = 120.0
_CONSTRAINT_KEYS = ("regex", "json_schema", "ebnf", "stop_regex")


class PreparePool:
    """A bounded thread pool for request admission work: a bounded queue, a per-job time budget."""

    def __init__(self, workers: int = PREPARE_WORKERS, max_pending: int = PREPARE_MAX_PENDING,
                 timeout_s: float = PREPARE_TIMEOUT_S, queue_wait_s: float = PREPARE_QUEUE_WAIT_S) -> None:
        self.workers, self.max_pending, self.timeout_s = workers, max_pending, timeout_s
        self.queue_wait_s = queue_wait_s
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._pending = 0
        self._lock = threading.Lock()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="sglang-prepare")
            return self._pool

    async def run(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """fn(**kwargs) in the pool: 503 when the queue is full or waited on too long, 400 past the job's own
        time budget (the request's own input is what took too long), a RecursionError (nested input) is a 400."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise HTTPError(503, f"the server is busy preparing {self._pending} requests (constraint compiles "
                                     "or long prompts); retry later", err_type="server_busy", code="503")
            self._pending += 1
        loop = asyncio.get_running_loop()
        started: asyncio.Future = loop.create_future()
        future = self._executor().submit(_guarded, fn, kwargs, lambda: _signal(loop, started))
        future.add_done_callback(self._release)
        try:
            await asyncio.wait_for(started, self.queue_wait_s)
        except asyncio.TimeoutError:
            future.cancel()  # still queued: it never runs
            future.add_done_callback(_discard_result)
            raise HTTPError(503, f"the server is busy: the request waited {self.queue_wait_s:.0f} s to be prepared; "
                                 "retry later", err_type="server_busy", code="503") from None
        except asyncio.CancelledError:  # the client left while queued
            future.cancel()
            future.add_done_callback(_discard_result)
            raise
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            future.add_done_callback(_discard_result)  # nobody will await what it returns
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise HTTPError(400, f"preparing the request took longer than {self.timeout_s:.0f} s (its constraint "
                                 "or prompt is too large); simplify it", code="prepare_timeout") from None

    def _release(self, _: Any) -> None:
        with self._lock:
            self._pending -= 1


def _signal(loop: asyncio.AbstractEventLoop, started: "asyncio.Future[None]") -> None:
    """From the worker thread: the job has started (its time budget runs from here)."""
    try:
        loop.call_soon_threadsafe(_set_once, started)
    except RuntimeError:  # the loop closed meanwhile: nobody is waiting
        pass


def _set_once(started: "asyncio.Future[None]") -> None:
    if not started.done():
        started.set_result(None)


def _guarded(fn: Callable[..., Any], kwargs: dict[str, Any], on_start: Callable[[], Any]) -> Any:
    on_start()
    try:
        return fn(**kwargs)
    except RecursionError:
        raise ValueError("the request's constraint or input is nested too deeply to compile") from None


def _discard_result(future: "concurrent.futures.Future[Any]") -> None:
    if not future.cancelled() and future.exception() is None:
        close = getattr(future.result(), "aclose", None) or getattr(future.result(), "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                result.close()


PREPARE_POOL = PreparePool()


async def run_admission(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """fn(**kwargs) in the admission pool (PREPARE_POOL, looked up per call so tests can swap it)."""
    return await PREPARE_POOL.run(fn, **kwargs)


def _prompt_chars(kwargs: dict[str, Any]) -> int:
    text = kwargs.get("text")
    if isinstance(text, str):
        return len(text)
    return sum(len(t) for t in text if isinstance(t, str)) if isinstance(text, list) else 0


def _has_constraint(kwargs: dict[str, Any]) -> bool:
    sps = kwargs.get("sampling_params")
    for sp in sps if isinstance(sps, list) else [sps]:
        if isinstance(sp, dict) and any(sp.get(k) for k in _CONSTRAINT_KEYS):
            return True
        if isinstance(sp, dict) and sp.get("dtype") is not None:
            return True
    return False


def needs_offload(kwargs: dict[str, Any]) -> bool:
    """Whether admitting this request may take long: a long prompt to tokenize or a constraint to compile."""
    return _prompt_chars(kwargs) > OFFLOAD_CHARS or _has_constraint(kwargs)


async def _start(engine: Any, kwargs: dict[str, Any]) -> Any:
    if needs_offload(kwargs):
        return await run_admission(engine.async_generate, **kwargs)
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
