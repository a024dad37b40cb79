"""The FastAPI app: SGLang 0.2.x's native API, the OpenAI API (openai_api.py), API-key auth, /metrics.

`create_app(engine, server_args)` only wires routes around an already-loaded Engine; other layers
(the compiler's `/programs/*`) add their routes to the returned app. Requests are checked by pydantic
(types, naming the field) and by the engine (meanings); either way a bad request is a 400 and the
server keeps serving everyone else.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sglang.runtime.server.common import (
    SSE_DONE,
    ClientGone,
    EventStreamResponse,
    HTTPError,
    StreamTracker,
    abort_all,
    as_http_error,
    check_schema_depth,
    engine_generate,
    error_body,
    format_validation_errors,
    merge_streams,
    new_rid,
    open_streams,
    parse_body,
    run_or_abort,
    sse,
)
from sglang.runtime.server.docs import DOCS_PATH, OPENAPI_PATH, install_openapi
from sglang.runtime.server.metrics import ServerMetrics, StreamTimer
from sglang.runtime.server.protocol import (AbortRequest, ChatCompletionRequest, CompletionRequest,
                                            GenerateRequest)

HEALTH_GENERATE_TIMEOUT_S = 60.0
_PER_PROMPT_FIELDS = ("sampling_params", "rid", "return_logprob", "logprob_start_len", "top_logprobs_num",
                      "image_data", "video_data")


@dataclass
class ServerContext:
    """What every route needs; stored as `app.state.sglang`."""

    engine: Any
    server_args: Any
    metrics: ServerMetrics
    model_name: str  # the name /v1 clients must use

    def model_path(self) -> str:
        return str(getattr(self.engine_args(), "model_path", self.server_args.model_path))

    def engine_args(self) -> Any:
        getter = getattr(self.engine, "get_server_args", None)
        return getter() if getter is not None else self.server_args


def _served_name(server_args: Any, engine: Any) -> str:
    if getattr(server_args, "served_model_name", None):
        return server_args.served_model_name
    args = engine.get_server_args() if hasattr(engine, "get_server_args") else server_args
    return str(getattr(args, "model_path", server_args.model_path))


# --------------------------------------------------------------------------- middleware

class AuthAndCountMiddleware:
    """Pure ASGI (so streaming and disconnect detection are untouched): API-key check and per-route counts."""

    def __init__(self, app: Any, api_key: Optional[str], metrics: ServerMetrics, open_paths: tuple[str, ...]) -> None:
        self.app = app
        self.api_key = api_key
        self.metrics = metrics
        self.open_paths = open_paths

    @staticmethod
    def _route_label(scope: dict) -> str:
        # The router records the matched route in the (shared) scope: label by its path template, so
        # path parameters do not explode the label set.
        route = scope.get("route")
        return getattr(route, "path", None) or "unmatched"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box = [500]

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            if self.api_key and scope.get("path") not in self.open_paths and not self._authorized(scope):
                resp = JSONResponse(error_body("invalid or missing API key (send 'Authorization: Bearer <key>')",
                                               "authentication_error", None, "401"), status_code=401)
                await resp(scope, receive, counting_send)
                return
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.http_requests.labels(route=self._route_label(scope), status=str(status_box[0])).inc()

    def _authorized(self, scope: dict) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.api_key or ""):
                    return True
        return False


# --------------------------------------------------------------------------- request normalization

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _n_of(sp: Any) -> int:
    v = sp.get("n", 1) if isinstance(sp, dict) else 1
    return v if isinstance(v, int) and v > 0 else 1  # a bad n is the engine's 400 to give


def native_kwargs(req: GenerateRequest, max_batch: int) -> dict[str, Any]:
    """Engine.generate kwargs from a /generate body, with rids assigned (needed to abort on disconnect)."""
    if (req.text is None) == (req.input_ids is None):
        raise HTTPError(400, "exactly one of 'text' or 'input_ids' must be given", param="text")
    if req.is_batch():
        size = req.batch_size()
        if size == 0:
            raise HTTPError(400, "the batch is empty", param="text" if req.text is not None else "input_ids")
    elif req.input_ids is not None and len(req.input_ids) == 0:
        raise HTTPError(400, "input_ids is empty", param="input_ids")
    size = req.batch_size()
    check_schema_depth(req.sampling_params, "sampling_params.json_schema")
    sps = req.sampling_params if isinstance(req.sampling_params, list) else [req.sampling_params or {}]
    n = max((_n_of(sp) for sp in sps), default=1)
    if size * n > max_batch:
        raise HTTPError(400, f"the request asks for {size} prompt(s) x n={n} = {size * n} outputs, more than "
                             f"max_batch_size_per_request={max_batch}", param="text")
    rid: Any = req.rid
    if rid is None:
        rid = [new_rid() for _ in range(size)] if req.is_batch() else new_rid()
    return {
        "text": req.text, "input_ids": req.input_ids, "sampling_params": req.sampling_params, "rid": rid,
        "return_logprob": req.return_logprob or False, "logprob_start_len": req.logprob_start_len,
        "top_logprobs_num": req.top_logprobs_num, "return_text_in_logprobs": req.return_text_in_logprobs,
        # checked by the engine (a text-only model, a bad image: a 400 naming the field)
        "image_data": req.image_data, "video_data": req.video_data,
    }


def split_per_output(kwargs: dict[str, Any], batch: bool, size: int) -> list[dict[str, Any]]:
    """One single-prompt, n=1 kwargs dict per output (prompt-major, then sample), for streaming."""
    out = []
    for i in range(size):
        one = dict(kwargs)
        if batch:
            for key in ("text", "input_ids"):
                if one[key] is not None:
                    one[key] = one[key][i]
            for key in _PER_PROMPT_FIELDS:
                if isinstance(one.get(key), list):
                    if len(one[key]) != size:
                        raise HTTPError(400, f"{key} has {len(one[key])} entries for {size} prompts", param=key)
                    one[key] = one[key][i]
        sp = dict(one.get("sampling_params") or {})
        n = sp.pop("n", 1)
        n = 1 if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise HTTPError(400, f"sampling_params.n must be a positive integer, got {n!r}", param="sampling_params.n")
        for j in range(n):
            sub = dict(one, sampling_params=dict(sp))
            if n > 1:
                sub["rid"] = f"{one['rid']}-{j}"
                if _is_int(sp.get("seed")):  # a bad seed is left for the engine's 400
                    sub["sampling_params"]["seed"] = sp["seed"] + j  # distinct but reproducible samples
            out.append(sub)
    return out


# --------------------------------------------------------------------------- app

def create_app(engine: Any, server_args: Any) -> FastAPI:
    from sglang.runtime.server.openai_api import register_openai_routes

    metrics = ServerMetrics(_served_name(server_args, engine))
    ctx = ServerContext(engine, server_args, metrics, _served_name(server_args, engine))
    app = FastAPI(title="sglang", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sglang = ctx
    app.add_middleware(AuthAndCountMiddleware, api_key=server_args.api_key, metrics=metrics,
                       open_paths=("/health", "/health_generate", DOCS_PATH, OPENAPI_PATH))  # probes carry no API key

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return format_validation_errors(exc.errors()).response()

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, exc: HTTPError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return HTTPError(exc.status_code, str(exc.detail), code=str(exc.status_code)).response()

    @app.exception_handler(ClientGone)  # left while sending its body: nobody to answer, nothing to log
    async def _client_gone(_: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)

    @app.exception_handler(ValueError)  # a bad request found by a checker below the route (e.g. constraints)
    async def _value_error(_: Request, exc: ValueError) -> JSONResponse:
        return as_http_error(exc).response()

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return as_http_error(exc).response()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/health_generate")
    async def health_generate() -> Response:
        """One token through the model (of every data parallel replica): 200, or 503 naming the failure."""
        replicas = getattr(engine, "replicas", None) or [engine]
        failures = await asyncio.gather(*(_generate_one_token(r) for r in replicas))
        failed = {i: f for i, f in enumerate(failures) if f is not None}
        if failed:
            where = "" if len(replicas) == 1 else f"replica(s) {sorted(failed)}: "
            return JSONResponse(error_body(f"generation failed: {where}{'; '.join(failed.values())}", "server_error"),
                                status_code=503)
        return Response(status_code=200)

    @app.get("/get_model_info")
    async def get_model_info() -> dict[str, Any]:
        # chat_template: the template /v1/chat/completions renders with, so that a frontend's roles match it
        return {"model_path": ctx.model_path(), "tokenizer_path": getattr(ctx.engine_args(), "tokenizer_path", None),
                "is_generation": True, "served_model_name": ctx.model_name,
                "chat_template": ctx.chat_template.to_dict()}

    @app.get("/get_server_args")
    async def get_server_args() -> dict[str, Any]:
        args = ctx.server_args
        d = args.to_dict() if hasattr(args, "to_dict") else dataclasses.asdict(args)
        if d.get("api_key"):
            d["api_key"] = "<hidden>"  # never echo the secret
        return d

    async def flush_cache() -> Response:
        ok = await asyncio.to_thread(engine.flush_cache)
        if ok is False:
            return JSONResponse(error_body("cache not flushed: requests are running or waiting; retry when idle",
                                           "invalid_request_error", None, "400"), status_code=400)
        return PlainTextResponse("Cache flushed.\n")

    for method in ("GET", "POST"):  # one operation id each (the OpenAPI schema needs them distinct)
        app.add_api_route("/flush_cache", flush_cache, methods=[method], operation_id=f"flush_cache_{method.lower()}")

    @app.post("/abort_request")
    async def abort_request(request: Request) -> dict[str, Any]:
        req = await parse_body(request, AbortRequest)
        engine.abort(req.rid)
        return {"success": True, "rid": req.rid}

    @app.get("/metrics")
    async def get_metrics() -> Response:
        # stats() is answered by the scheduler thread between steps: wait for it off the event loop
        stats = await asyncio.to_thread(engine.stats) if hasattr(engine, "stats") else None
        body, ctype = metrics.render(stats)
        return Response(body, media_type=ctype)

    @app.post("/generate")
    async def generate(request: Request) -> Any:
        req = await parse_body(request, GenerateRequest)
        kwargs = native_kwargs(req, server_args.max_batch_size_per_request)
        if req.stream:
            return await _native_stream(ctx, request, kwargs, req.is_batch(), req.batch_size())
        rids = kwargs["rid"] if isinstance(kwargs["rid"], list) else [kwargs["rid"]]
        timer = StreamTimer(metrics)
        try:
            out = await run_or_abort(request.receive, engine_generate(engine, kwargs),
                                     lambda: abort_all(engine, rids))
        except ClientGone:
            return Response(status_code=499)
        except Exception as exc:
            abort_all(engine, rids)
            raise as_http_error(exc) from exc
        timer.done()
        for o in out if isinstance(out, list) else [out]:
            metrics.observe_finished(o.get("meta_info") or {})
        return JSONResponse(out)

    register_openai_routes(app, ctx)
    install_openapi(app, {("post", "/generate"): GenerateRequest, ("post", "/abort_request"): AbortRequest,
                          ("post", "/v1/completions"): CompletionRequest,
                          ("post", "/v1/chat/completions"): ChatCompletionRequest})
    return app


async def _generate_one_token(engine: Any) -> Optional[str]:
    """None when one greedy token came out of the engine within the probe's time, else what went wrong."""
    kwargs = {"text": "ping", "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}, "rid": new_rid()}
    try:
        await asyncio.wait_for(engine_generate(engine, kwargs), timeout=HEALTH_GENERATE_TIMEOUT_S)
    except Exception as exc:  # any failure means unhealthy, not a crash
        abort_all(engine, [kwargs["rid"]])
        return repr(exc)
    return None


async def _native_stream(ctx: ServerContext, request: Request, kwargs: dict[str, Any], batch: bool,
                         size: int) -> Any:
    """Native SSE: `data: {text (cumulative), meta_info[, index]}` per chunk, then `data: [DONE]`."""
    engine = ctx.engine
    subs = split_per_output(kwargs, batch, size)
    rids = [s["rid"] for s in subs]
    tracker = StreamTracker(engine, rids)
    timers = [StreamTimer(ctx.metrics) for _ in subs]
    try:
        # native outputs are cumulative (full text and meta_info): a client that falls behind gets the latest
        streams, first = await open_streams(engine, request, subs, tracker, coalesce=True)
    except ClientGone:
        return Response(status_code=499)
    tag_index = batch or len(subs) > 1

    async def events() -> AsyncIterator[str]:
        try:
            async for i, out in merge_streams(streams, first, coalesce=True):
                meta = out.get("meta_info") or {}
                timers[i].chunk(int(meta.get("completion_tokens") or 0))
                if tracker.update(rids[i], out):
                    timers[i].done()
                    ctx.metrics.observe_finished(meta)
                yield sse({**out, "index": i} if tag_index else out)
        except Exception as exc:  # headers are sent: report in-band, then end the stream normally
            yield sse(as_http_error(exc).body())
        yield SSE_DONE

    return EventStreamResponse(events(), tracker.close)

