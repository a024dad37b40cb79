"""The router's HTTP front and `sglang router --worker-urls URL ...`.

Proxies SGLang's native routes (`/generate`, streamed or not; `/get_model_info`, `/get_server_args` from
one worker; `/flush_cache` to all) and the OpenAI routes (`/v1/completions`, `/v1/chat/completions`,
`/v1/models`) to the worker the policy picks. Its own routes: `/health` (the router is up and has a
healthy worker), `/workers` (GET list; POST `?url=` adds, DELETE `?url=` removes), `/metrics`.
On SIGTERM the router drains like a server (server/drain.py): new requests get 503 + Retry-After, the
ones it is relaying get `--drain-grace-period` seconds to finish, then it exits.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sglang.runtime.router.router import NoWorkerAvailable, Router, error_json, routing_key
from sglang.runtime.router.workers import HttpWorker, Reply
from sglang.runtime.server.drain import DrainGate, DrainingServer


ROUTED_POSTS = ("/generate", "/v1/completions", "/v1/chat/completions")
# Request headers passed on to workers (the API key among them); the rest are per hop.
FORWARDED_HEADERS = ("authorization", "content-type", "accept")
RETRY_AFTER_S = "5"


def _unavailable(exc: Exception) -> Response:
    return Response(error_json(str(exc), 503), status_code=503, media_type="application/json",
                    headers={"Retry-After": RETRY_AFTER_S})


def _as_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


def _headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None  # the worker answers the malformed body with its own 400


class RelayResponse(StreamingResponse):
    """Streams a worker's reply and always closes it, even when the client left before the first byte
    (then the body iterator never starts, so its own cleanup would not run)."""

    def __init__(self, reply: Reply) -> None:
        assert reply.chunks is not None
        super().__init__(reply.chunks, status_code=reply.status, headers=reply.headers)
        self.reply = reply

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.reply.aclose()


def create_router_app(router: Router, *, health_loop: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await router.start(health_loop=health_loop)
        try:
            yield
        finally:
            await router.close()

    app = FastAPI(title="sglang-router", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.router = router

    async def routed(request: Request) -> Response:
        body = await request.body()
        parsed = _parse(body)
        key = routing_key(request.url.path, parsed)
        try:
            if isinstance(parsed, dict) and parsed.get("stream"):
                reply = await router.forward_stream(request.url.path, body, _headers(request), key)
                if reply.chunks is not None:
                    return RelayResponse(reply)
                return _as_response(reply)
            return _as_response(await router.forward("POST", request.url.path, body, _headers(request), key))
        except NoWorkerAvailable as exc:
            return _unavailable(exc)

    for path in ROUTED_POSTS:
        app.add_api_route(path, routed, methods=["POST"])

    async def from_one_worker(request: Request) -> Response:
        try:
            reply = await router.forward("GET", request.url.path, b"", _headers(request), ())
        except NoWorkerAvailable as exc:
            return _unavailable(exc)
        return _as_response(reply)

    for path in ("/get_model_info", "/get_server_args", "/v1/models"):
        app.add_api_route(path, from_one_worker, methods=["GET"])

    @app.api_route("/flush_cache", methods=["GET", "POST"])
    async def flush_cache(request: Request) -> Response:
        results = await router.broadcast("POST", "/flush_cache", headers=_headers(request))
        per_worker = {n: (r.status if isinstance(r, Reply) else repr(r)) for n, r in results.items()}
        ok = bool(results) and all(s == 200 for s in per_worker.values())
        return JSONResponse({"flushed": ok, "workers": per_worker}, status_code=200 if ok else 400)

    @app.get("/health")
    async def health() -> Response:
        if router.registry.healthy():
            return Response(status_code=200)
        return _unavailable(NoWorkerAvailable("no healthy worker"))

    @app.get("/workers")
    async def list_workers() -> dict[str, Any]:
        workers = router.registry.snapshot()
        for w in workers:
            w["routed"] = dict(router.routed.get(str(w["url"]), {}))
        return {"policy": router.policy.name, "workers": workers,
                "events": dict(router.counters + router.registry.events)}

    @app.post("/workers")
    async def add_worker(url: str) -> Response:
        try:
            worker = HttpWorker(url)
            router.registry.add(worker)
        except ValueError as exc:
            return Response(error_json(str(exc), 400, "invalid_request_error"), status_code=400,
                            media_type="application/json")
        await router.registry.check_all()
        return JSONResponse({"added": worker.name, "healthy": worker.name in router.registry.healthy()})

    @app.delete("/workers")
    async def remove_worker(url: str) -> Response:
        if not await router.registry.remove(url.rstrip("/")):
            return Response(error_json(f"no worker {url}", 404, "invalid_request_error"), status_code=404,
                            media_type="application/json")
        return JSONResponse({"removed": url.rstrip("/")})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(render_metrics(router), media_type="text/plain; version=0.0.4")

    return app


def render_metrics(router: Router) -> str:
    """Prometheus text exposition of the router's counters and per-worker state."""
    lines = ["# TYPE sglang_router_worker_healthy gauge", "# TYPE sglang_router_in_flight gauge",
             "# TYPE sglang_router_served_total counter"]
    for w in router.registry.snapshot():
        label = f'{{worker="{w["url"]}"}}'
        lines += [f"sglang_router_worker_healthy{label} {int(bool(w['healthy']))}",
                  f"sglang_router_in_flight{label} {w['in_flight']}",
                  f"sglang_router_served_total{label} {w['served']}"]
    lines.append("# TYPE sglang_router_events_total counter")
    for name, n in sorted((router.counters + router.registry.events).items()):
        lines.append(f'sglang_router_events_total{{event="{name}"}} {n}')
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sglang router",
                                description="Route requests over several SGLang servers (cache-aware).")
    p.add_argument("--worker-urls", nargs="+", required=True, metavar="URL", help="http://HOST:PORT of each worker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--policy", choices=["cache_aware", "round_robin"], default="cache_aware")
    p.add_argument("--cache-threshold", type=float, default=0.5,
                   help="route by cache when the best match covers at least this fraction of the prompt")
    p.add_argument("--balance-abs-threshold", type=int, default=32,
                   help="loads are imbalanced when max - min in-flight exceeds this ...")
    p.add_argument("--balance-rel-threshold", type=float, default=1.0001, help="... and max > this * min")
    p.add_argument("--max-tree-size", type=int, default=1 << 22,
                   help="prompt elements (characters / token ids) remembered per worker")
    p.add_argument("--health-check-interval", type=float, default=5.0, help="seconds between probes")
    p.add_argument("--health-failure-threshold", type=int, default=2,
                   help="failed probes in a row before a worker is dropped")
    p.add_argument("--drain-grace-period", type=float, default=30.0,
                   help="on SIGTERM: seconds the requests in flight get to finish before the router exits")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def build_router(args: argparse.Namespace) -> Router:
    policy_args: dict[str, Any] = {}
    if args.policy == "cache_aware":
        policy_args = {"cache_threshold": args.cache_threshold, "balance_abs_threshold": args.balance_abs_threshold,
                       "balance_rel_threshold": args.balance_rel_threshold, "max_tree_size": args.max_tree_size}
    return Router.from_urls(args.worker_urls, args.policy, policy_args,
                            fail_threshold=args.health_failure_threshold, check_interval=args.health_check_interval)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s %(name)s] %(message)s")
    try:
        router = build_router(args)
    except ValueError as exc:
        print(f"sglang router: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_router_app(router)
    print(f"The router is ready: http://{args.host}:{args.port}  ({args.policy} over "
          f"{len(args.worker_urls)} workers)", flush=True)
    gate = DrainGate(app)
    config = uvicorn.Config(gate, host=args.host, port=args.port, log_level=args.log_level.lower(),
                            access_log=False, timeout_keep_alive=30, backlog=4096, timeout_graceful_shutdown=5)
    try:
        DrainingServer(config, gate, args.drain_grace_period).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
        pass
    return 0
