"""HTTP server under load: 200 concurrent streaming requests over loopback all complete, none lost, and the
KV pool is whole afterwards; benchmarks/bench_serving.py runs end to end against the same server.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from server_helpers import wait_idle


N_REQUESTS = 200


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    from sglang.runtime.engine import Engine

    eng = Engine(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=65536)
    yield eng
    eng.shutdown()


def _dechunk(raw: bytes) -> bytes:
    """Body of an HTTP/1.1 chunked response."""
    out = []
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(raw[:size])
        raw = raw[size + 2:]
    return b"".join(out)


async def _one_stream(host: str, port: int, i: int) -> dict:
    # A bare asyncio HTTP/1.1 client: one connection per request, so the client's own pooling
    # (quadratic in httpx with hundreds of live connections) does not dominate the test.
    body = json.dumps({"text": f"request number {i}: " + "word " * (i % 7), "stream": True, "rid": f"load-{i}",
                       "sampling_params": {"max_new_tokens": 4 + i % 5, "temperature": 0.0,
                                           "ignore_eos": True}}).encode()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"POST /generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    if b"transfer-encoding: chunked" in head.lower():
        payload = _dechunk(payload)
    events = [line[5:].strip() for line in payload.decode().splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    return json.loads(events[-2])


async def _all(url: str) -> list[dict]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.gather(*(_one_stream(host, int(port), i) for i in range(N_REQUESTS)))


def test_200_concurrent_streams_all_complete(server, engine):
    finished_before = engine.stats()["finished"]
    finals = asyncio.run(_all(server.url))
    assert len(finals) == N_REQUESTS
    for i, out in enumerate(finals):
        meta = out["meta_info"]
        assert meta["id"] == f"load-{i}"
        assert meta["finish_reason"]["type"] == "length"
        assert meta["completion_tokens"] == 4 + i % 5
    wait_idle(engine)
    assert engine.stats()["finished"] - finished_before == N_REQUESTS


def _load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serving.py"
    spec = importlib.util.spec_from_file_location("bench_serving", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_serving"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("backend", ["sglang", "openai"])
def test_bench_serving_shared_prefix_reports_cache_hits(server, engine, backend, tmp_path):
    bench = _load_bench()
    engine.flush_cache()
    out_file = tmp_path / "bench.jsonl"
    summary = bench.main(["--base-url", server.url, "--backend", backend, "--dataset", "generated-shared-prefix",
                          "--gsp-num-groups", "2", "--gsp-prompts-per-group", "6", "--gsp-system-prompt-len", "64",
                          "--gsp-question-len", "8", "--gsp-output-len", "4", "--request-rate", "40",
                          "--output-file", str(out_file)])
    assert summary["completed"] == 12 and summary["failed"] == 0
    assert summary["output_tokens"] == 12 * 4 and summary["input_tokens"] == 12 * 72
    # 2 groups x 6 prompts sharing a 64-token prefix: later arrivals of a group hit the radix cache
    assert 0.3 < summary["cache_hit_rate"] < 1.0
    assert summary["ttft_ms"]["p50"] > 0 and summary["itl_ms"]["p99"] >= summary["itl_ms"]["p50"] > 0
    assert json.loads(out_file.read_text().splitlines()[-1])["completed"] == 12
    wait_idle(engine)


def test_bench_serving_random_dataset(server, engine):
    bench = _load_bench()
    summary = bench.main(["--base-url", server.url, "--dataset", "random", "--num-prompts", "10",
                          "--random-input-len", "32", "--random-output-len", "6", "--random-range-ratio", "0.5"])
    assert summary["completed"] == 10 and summary["failed"] == 0
    assert 10 * 3 <= summary["output_tokens"] <= 10 * 6
    wait_idle(engine)
