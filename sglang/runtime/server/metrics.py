"""Prometheus metrics of one server app, in a registry of its own (several servers per process must not collide).

Counters and histograms are fed by the request handlers as outputs finish; the scheduler gauges
(queue length, running batch, pool usage) are read from `engine.stats()` when `/metrics` is scraped.
TTFT and inter-token latency are observed on streamed requests (the only ones whose token timing
the server sees); end-to-end latency on all generation requests.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)

# engine.stats() key -> gauge name suffix; missing keys are skipped so the engine may grow its dict.
_STAT_GAUGES = {
    "waiting": ("num_queue_reqs", "Requests waiting in the scheduler queue"),
    "running": ("num_running_reqs", "Requests in the running batch"),
    "pool_free": ("kv_pool_free_tokens", "Free KV-pool slots"),
    "pool_evictable": ("kv_pool_evictable_tokens", "KV-pool slots held only by the prefix cache"),
    "pool_size": ("kv_pool_size_tokens", "KV-pool capacity in tokens"),
}


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("sglang_http_requests", "HTTP requests by route and status",
                                     ["route", "status"], registry=r)
        self.requests = Counter("sglang_requests", "Finished generation requests (one per output)",
                                ["finish_reason"], registry=r)
        self.prompt_tokens = Counter("sglang_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter("sglang_generation_tokens", "Generated tokens", registry=r)
        self.cached_tokens = Counter("sglang_cached_tokens", "Prompt tokens served from the prefix cache",
                                     registry=r)
        self.cache_hit_rate = Gauge("sglang_cache_hit_rate",
                                    "cached_tokens / prompt_tokens over the server's lifetime", registry=r)
        self.ttft = Histogram("sglang_time_to_first_token_seconds", "Time to first token (streamed requests)",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("sglang_inter_token_latency_seconds",
                             "Time between streamed chunks divided by the tokens they carry",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("sglang_e2e_request_latency_seconds", "Request latency, arrival to last token",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.stat_gauges = {key: Gauge(f"sglang_{name}", doc, registry=r)
                            for key, (name, doc) in _STAT_GAUGES.items()}
        info = Gauge("sglang_model_info", "Served model (value is always 1)", ["model"], registry=r)
        info.labels(model=model_name).set(1)
        self._prompt_total = 0
        self._cached_total = 0

    def observe_finished(self, meta_info: dict[str, Any]) -> None:
        """Count one finished output from its meta_info (prompt/completion/cached tokens, finish reason)."""
        prompt = int(meta_info.get("prompt_tokens") or 0)
        cached = int(meta_info.get("cached_tokens") or 0)
        self.prompt_tokens.inc(prompt)
        self.cached_tokens.inc(cached)
        self.generation_tokens.inc(int(meta_info.get("completion_tokens") or 0))
        finish = meta_info.get("finish_reason")
        kind = finish.get("type") if isinstance(finish, dict) else (finish or "unknown")
        self.requests.labels(finish_reason=str(kind)).inc()
        self._prompt_total += prompt
        self._cached_total += cached
        if self._prompt_total:
            self.cache_hit_rate.set(self._cached_total / self._prompt_total)

    def render(self, engine_stats: Optional[dict[str, Any]]) -> tuple[bytes, str]:
        for key, gauge in self.stat_gauges.items():
            value = (engine_stats or {}).get(key)
            if isinstance(value, (int, float)):
                gauge.set(value)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class StreamTimer:
    """Per-request token timing for TTFT / ITL, fed each time a streamed chunk is produced."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.start = time.perf_counter()
        self.last: Optional[float] = None
        self.last_tokens = 0

    def chunk(self, completion_tokens: int) -> None:
        now = time.perf_counter()
        if completion_tokens <= self.last_tokens:
            return
        if self.last is None:
            self.metrics.ttft.observe(now - self.start)
        else:
            per_token = (now - self.last) / (completion_tokens - self.last_tokens)
            for _ in range(completion_tokens - self.last_tokens):
                self.metrics.itl.observe(per_token)
        self.last = now
        self.last_tokens = completion_tokens

    def done(self) -> None:
        self.metrics.e2e.observe(time.perf_counter() - self.start)
