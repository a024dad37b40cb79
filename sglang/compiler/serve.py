"""Program endpoints: each function of a compiled program as `POST /programs/{name}`.

The request body is a pydantic model built from the function's signature (so /docs shows it and a bad
body is a 400 naming the field, in /generate's error shape; any Content-Type is read as JSON); `POST /programs/{name}/batch` takes {"items": [...]} and runs them as
one batch through the plan executor; `?stream=true` answers with server-sent events, one per variable
as it is generated, then the result, then `[DONE]`. The native (/generate) and OpenAI (/v1) routes of
runtime/server/http_server.py stay up beside them (mounted under the program app).
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from sglang.compiler.executor import PlanExecutor
from sglang.compiler.plan import FunctionPlan, Plan
from sglang.runtime.server.common import error_body, format_validation_errors

_PY_TYPE: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
                            "image": str, "video": str, "any": Any}


def request_model(fplan: FunctionPlan) -> type[BaseModel]:
    """A pydantic model of the function's parameters (unknown fields rejected)."""
    fields: dict[str, Any] = {}
    for p in fplan.params:
        typ = _PY_TYPE.get(fplan.param_types.get(p, "any"), Any)
        if p in fplan.defaults:
            fields[p] = (Optional[typ] if fplan.defaults[p] is None else typ, Field(default=fplan.defaults[p]))
        else:
            fields[p] = (typ, Field(...))
    name = "".join(part.title() for part in fplan.name.split("_")) + "Args"
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=False), **fields)


def _batch_model(fplan: FunctionPlan, item: type[BaseModel]) -> type[BaseModel]:
    name = "".join(part.title() for part in fplan.name.split("_")) + "Batch"
    return create_model(name, __config__=ConfigDict(extra="forbid"), items=(list[item], Field(..., min_length=1)))


class ProgramRunner:
    """Runs plan functions on one backend; each call gets its own executor (they run concurrently)."""

    def __init__(self, plan: Plan, backend: Any) -> None:
        self.plan, self.backend = plan, backend

    def run(self, function: str, batch: list[dict[str, Any]], on_event: Any = None) -> list[dict[str, Any]]:
        ex = PlanExecutor(self.plan, self.backend)
        out = ex.run_batch(function, batch, on_event=on_event)
        for r in out:
            r.pop("text", None)
        return out


# The executor reports an item's failure as a message: "<ExceptionClass>: ..." for exceptions that are
# not the program's own errors, the bare message for SglError (a positioned program error).
_EXC_PREFIX = re.compile(r"^([A-Z]\w*(?:Error|Exception)): ")
_CLIENT_EXCEPTIONS = {"ValueError"}  # the engine's contract: ValueError is the request's fault (too long, bad params)


def error_status(message: str) -> int:
    """400 for the caller's mistakes (bad arguments, prompt too long, program errors such as a fork
    count of 0); 500 for failures of the server itself."""
    m = _EXC_PREFIX.match(message)
    return 400 if m is None or m.group(1) in _CLIENT_EXCEPTIONS else 500


def _result_response(results: list[dict[str, Any]], single: bool) -> JSONResponse:
    errors = [r for r in results if "error" in r]
    if single and errors:
        status = error_status(errors[0]["error"])
        kind = "invalid_request_error" if status < 500 else "program_error"
        return JSONResponse(error_body(errors[0]["error"], kind), status_code=status)
    return JSONResponse(results[0] if single else {"results": results})


def _sse(runner: ProgramRunner, function: str, batch: list[dict[str, Any]], single: bool) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def on_event(index: int, ev: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("event", dict(ev, index=index)))

    def work() -> None:
        try:
            res = runner.run(function, batch, on_event)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", res))
        except Exception as e:  # reported in the stream: the status line is already sent
            loop.call_soon_threadsafe(queue.put_nowait, ("error", str(e)))

    threading.Thread(target=work, daemon=True).start()

    async def events():
        while True:
            kind, payload = await queue.get()
            if kind == "event":
                yield f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
            elif kind == "done":
                for r in payload:
                    yield f"data: {json.dumps({'result': r}, ensure_ascii=False)}\n\n"
                break
            else:
                yield f"data: {json.dumps(error_body(payload, 'program_error'))}\n\n"
                break
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def add_program_routes(app: FastAPI, plan: Plan, backend: Any) -> None:
    runner = ProgramRunner(plan, backend)
    for fname, fplan in plan.functions.items():
        model = request_model(fplan)
        batch_model = _batch_model(fplan, model)

        def make(fname: str = fname, model: type[BaseModel] = model, batch_model: type[BaseModel] = batch_model):
            async def run_one(body, stream=Query(False, description="stream the variables as server-sent events")):
                args = body.model_dump()
                if stream:
                    return _sse(runner, fname, [args], True)
                res = await asyncio.to_thread(runner.run, fname, [args])
                return _result_response(res, True)

            async def run_batch(body, stream=Query(False, description="stream the variables as server-sent events")):
                rows = [it.model_dump() for it in body.items]
                if stream:
                    return _sse(runner, fname, rows, False)
                res = await asyncio.to_thread(runner.run, fname, rows)
                return _result_response(res, False)

            # real classes, not the strings `from __future__ import annotations` leaves: FastAPI reads these
            run_one.__annotations__ = {"body": model, "stream": bool}
            run_batch.__annotations__ = {"body": batch_model, "stream": bool}
            return run_one, run_batch

        one, many = make()
        doc = f"Run `{fname}` of {plan.source or 'the program'}; returns its return value and variables."
        app.post(f"/programs/{fname}", summary=f"run {fname}", description=doc, tags=["programs"])(one)
        app.post(f"/programs/{fname}/batch", summary=f"run {fname} on a batch", tags=["programs"])(many)

    @app.get("/programs", tags=["programs"], summary="list the program's functions")
    async def list_programs() -> dict[str, Any]:
        return {"source": plan.source, "functions": {
            n: {"params": {p: f.param_types.get(p, "any") for p in f.params}, "defaults": f.defaults,
                "returns": f.returns} for n, f in plan.functions.items()}}


class JsonBodyMiddleware:
    """Read a POST /programs body as JSON whatever its Content-Type, as /generate does: a plain
    `curl -d '{...}'` sends application/x-www-form-urlencoded, which FastAPI would refuse with a 422."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/programs/"):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def use_error_shape(app: FastAPI) -> None:
    """Answer bad program requests in /generate's error shape, not FastAPI's {"detail": ...}."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return format_validation_errors(list(exc.errors())).response()


def create_program_app(plan: Plan, engine: Any, server_args: Any = None) -> FastAPI:
    """The program endpoints (with OpenAPI docs at /docs) in front of the regular server app."""
    from sglang.lang.backends.engine_backend import EngineBackend
    from sglang.runtime.server.http_server import create_app

    server_args = server_args if server_args is not None else engine.get_server_args()
    app = FastAPI(title=f"sglang programs: {plan.source or ''}", docs_url="/docs", openapi_url="/openapi.json")
    add_program_routes(app, plan, EngineBackend(engine))
    use_error_shape(app)
    app.add_middleware(JsonBodyMiddleware)
    app.mount("/", create_app(engine, server_args))  # /generate, /v1/*, /health ... keep working
    return app


def serve(plan: Plan, model: str | None = None, host: str = "127.0.0.1", port: int = 30000) -> int:
    import uvicorn

    from sglang.runtime.engine import Engine

    try:
        engine = Engine(model_path=model or "default", host=host, port=port)
    except (ValueError, OSError) as e:
        print(f"sglang serve: {e}")
        return 1
    try:
        app = create_program_app(plan, engine)
        names = ", ".join(f"/programs/{n}" for n in plan.functions)
        print(f"Serving {names} on http://{host}:{port} (docs at /docs; native /generate and /v1 too)", flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return 0
    finally:
        engine.shutdown()


__all__ = ["create_program_app", "add_program_routes", "request_model", "serve"]
