"""`--dp-size N`: N Engine replicas behind one engine-shaped front, `DataParallelEngine`.

Each replica is a whole Engine (its own scheduler, model copy, KV pool and radix cache; with tp_size > 1
its own tp ranks and process group). The HTTP server (and the frontend's EngineBackend) use the front
exactly like one Engine: it forwards each request to the replica the router's policy picks
(runtime/router/policy.py; cache-aware by default: the replica whose routed history shares the longest
prefix with the prompt, the least loaded one when loads are imbalanced), keyed the way the standalone
`sglang router` keys requests (router.routing_key). Routing happens in-process, so streams take no
second HTTP hop and the policy's loads are exact (requests in flight per replica).

GPU placement: with tp_size 1 and at least N GPUs, replica i runs on cuda:i. Otherwise the replicas
share the device(s) by memory fraction: a runner's budget is mem_fraction_static of the whole device
minus what is in use already, and the replicas start one after another, so replica i is given the
cumulative fraction mem_fraction_static * (i + 1) / N to end up with its 1/N share.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, AsyncIterator, Iterator, Optional

import torch

from sglang.runtime.engine import Engine
from sglang.runtime.router.policy import Policy, make_policy
from sglang.runtime.router.router import routing_key
from sglang.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)


def replica_args(server_args: ServerArgs, index: int) -> ServerArgs:
    """The ServerArgs replica `index` of `server_args.dp_size` runs with (see the module docstring)."""
    n = server_args.dp_size
    own_gpu = (server_args.tp_size == 1 and server_args.device in ("auto", "cuda")
               and torch.cuda.is_available() and torch.cuda.device_count() >= n)
    if own_gpu:
        return server_args.replace(dp_size=1, device=f"cuda:{index}")
    # dist_init_addr: each replica's tp group needs its own rendezvous (None = a free port each)
    return server_args.replace(dp_size=1, dist_init_addr=None,
                               mem_fraction_static=server_args.mem_fraction_static * (index + 1) / n)


class DataParallelEngine:
    """`server_args.dp_size` Engines; the Engine surface the server uses, each request on one replica."""

    def __init__(self, server_args: ServerArgs, policy: Optional[Policy] = None) -> None:
        if server_args.dp_size < 2:
            raise ValueError(f"DataParallelEngine needs dp_size >= 2, got {server_args.dp_size}")
        self.replicas: list[Engine] = []
        try:
            for i in range(server_args.dp_size):  # one after another: see the memory fractions above
                logger.info("starting data parallel replica %d/%d", i + 1, server_args.dp_size)
                self.replicas.append(Engine(**replica_args(server_args, i).to_dict()))
        except BaseException:
            self.shutdown()
            raise
        first = self.replicas[0]
        self.server_args = server_args.replace(model_path=first.get_server_args().model_path)
        self.policy = policy if policy is not None else make_policy(server_args.dp_policy)
        self.names = [f"dp{i}" for i in range(len(self.replicas))]
        self._loads = dict.fromkeys(self.names, 0)
        self.routed = dict.fromkeys(self.names, 0)  # requests each replica was given (tests, logs)
        self._lock = threading.Lock()
        self.tokenizer = first.tokenizer
        self.vocab_size, self.context_len = first.vocab_size, first.context_len
        self.pool_size = min(r.pool_size for r in self.replicas)

    # -- routing ----------------------------------------------------------------------------------
    def _acquire(self, text: Any, input_ids: Any) -> int:
        """Pick the replica for a prompt and count the request on it (release it with `_release`)."""
        key = routing_key("/generate", {"text": text, "input_ids": input_ids})
        with self._lock:
            name = self.policy.select(key, dict(self._loads)).worker
            self._loads[name] += 1
            self.routed[name] += 1
        return self.names.index(name)

    def _release(self, i: int) -> None:
        with self._lock:
            self._loads[self.names[i]] -= 1

    def loads(self) -> dict[str, int]:
        """Requests in flight per replica."""
        with self._lock:
            return dict(self._loads)

    # -- requests (Engine's signatures) -------------------------------------------------------------
    def generate(self, text: Any = None, sampling_params: Any = None, input_ids: Any = None,
                 **kwargs: Any) -> Any:
        i = self._acquire(text, input_ids)
        try:
            out = self.replicas[i].generate(text, sampling_params, input_ids, **kwargs)
        except BaseException:
            self._release(i)
            raise
        if kwargs.get("stream"):
            return self._track_sync_stream(i, out)
        self._release(i)
        return out

    def async_generate(self, text: Any = None, sampling_params: Any = None, input_ids: Any = None,
                       **kwargs: Any) -> Any:
        """Like Engine.async_generate: validates now, returns a coroutine (or an async iterator)."""
        i = self._acquire(text, input_ids)
        try:
            result = self.replicas[i].async_generate(text, sampling_params, input_ids, **kwargs)
        except BaseException:
            self._release(i)
            raise
        if kwargs.get("stream"):
            return self._track_stream(i, result)
        return self._track(i, result)

    async def _track(self, i: int, coro: Any) -> Any:
        try:
            return await coro
        finally:
            self._release(i)

    async def _track_stream(self, i: int, stream: AsyncIterator[dict]) -> AsyncIterator[dict]:
        try:
            async for out in stream:
                yield out
        finally:
            self._release(i)
            await stream.aclose()  # a consumer that stopped early: the replica aborts the request

    def _track_sync_stream(self, i: int, stream: Iterator[dict]) -> Iterator[dict]:
        try:
            yield from stream
        finally:
            self._release(i)
            stream.close()

    def generate_request(self, request: dict[str, Any]) -> Any:
        """`generate` from a native request dict (the /generate body)."""
        return self.generate(**request)

    def abort(self, rid: str) -> None:
        # the replica holding rid is not remembered: an unknown rid is a no-op for the others
        for r in self.replicas:
            r.abort(rid)

    # -- maintenance ------------------------------------------------------------------------------
    def flush_cache(self) -> bool:
        """Flush every replica's prefix cache (each only when idle); True when all flushed."""
        results = [r.flush_cache() for r in self.replicas]
        return all(ok is not False for ok in results)

    def stats(self) -> dict[str, Any]:
        """The replicas' counters summed (cache_hit_rate recomputed), plus each replica's under 'replicas'."""
        per = [r.stats() for r in self.replicas]
        total: dict[str, Any] = {}
        for k, v in per[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                vals = [p[k] for p in per]
                total[k] = sum(vals) if isinstance(v, int) else sum(vals) / len(vals)
        prompt = total.get("prefill_tokens", 0) + total.get("cached_tokens", 0)
        total["cache_hit_rate"] = total.get("cached_tokens", 0) / prompt if prompt else 0.0
        total["replicas"] = per
        return total

    def check_invariant(self) -> None:
        for r in self.replicas:
            r.check_invariant()

    def get_server_args(self) -> ServerArgs:
        return self.server_args

    def shutdown(self) -> None:
        """Shut every replica down (idempotent; also after a failed start)."""
        for r in self.replicas:
            r.shutdown()

    def __enter__(self) -> "DataParallelEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def make_engine(server_args: ServerArgs) -> Any:
    """An Engine, or a DataParallelEngine when dp_size > 1: the one place that decides which."""
    if server_args.dp_size > 1:
        return DataParallelEngine(server_args)
    return Engine(**server_args.to_dict())
