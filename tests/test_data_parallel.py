"""`--dp-size`: two replicas behind one HTTP front (tiny dummy-weight Llama, CPU, loopback) give one
server's greedy outputs, the cache-aware policy keeps a prefix group on one replica, /health_generate
checks every replica, and the scale-out flags parse (aliases) and are checked against each other."""
from __future__ import annotations

import json

import httpx
import pytest
from server_helpers import wait_idle

from sglang.runtime.data_parallel import DataParallelEngine, replica_args
from sglang.runtime.server.launch import BackgroundServer, parse_args
from sglang.runtime.server_args import ServerArgs

GREEDY = {"max_new_tokens": 6, "temperature": 0.0, "ignore_eos": True}
PROMPTS = [f"Question {i}: what comes after {i}?" for i in range(6)]


def _args(path: str, **kw) -> ServerArgs:
    return ServerArgs(model_path=path, load_format="dummy", device="cpu", dtype="float32", max_total_tokens=8192, **kw)


@pytest.fixture(scope="module")
def single(tiny_llama_path):
    from sglang.runtime.engine import Engine

    engine = Engine(**_args(tiny_llama_path).to_dict())
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def dp(tiny_llama_path):
    engine = DataParallelEngine(_args(tiny_llama_path, dp_size=2))
    yield engine
    engine.shutdown()


def _answers(url: str) -> list[str]:
    out = []
    for p in PROMPTS:
        r = httpx.post(f"{url}/generate", json={"text": p, "sampling_params": GREEDY}, timeout=60)
        assert r.status_code == 200, r.text
        out.append(r.json()["text"])
    stream = httpx.post(f"{url}/generate", json={"text": PROMPTS[0], "sampling_params": GREEDY, "stream": True},
                        timeout=60)
    events = [json.loads(line[5:]) for line in stream.text.splitlines()
              if line.startswith("data:") and line.strip() != "data: [DONE]"]
    out.append(events[-1]["text"])
    model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    r = httpx.post(f"{url}/v1/completions", timeout=60,
                   json={"model": model, "prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    out.append(r.json()["choices"][0]["text"])
    return out


def test_two_replicas_answer_like_one_server(single, dp):
    with BackgroundServer(single) as one, BackgroundServer(dp) as two:
        expected, got = _answers(one.url), _answers(two.url)
        assert got == expected
        metrics = httpx.get(f"{two.url}/metrics", timeout=30)  # summed over the replicas
        assert metrics.status_code == 200 and "sglang" in metrics.text
    # distinct prompts on idle replicas go to the emptier one: both served
    assert all(n > 0 for n in dp.routed.values()), dp.routed
    assert dp.loads() == {"dp0": 0, "dp1": 0}
    wait_idle(dp, settle=True)


def test_cache_aware_keeps_a_prefix_group_on_one_replica(dp):
    prefix = "You are a helpful assistant. Answer briefly and precisely. " * 4
    before = dict(dp.routed)
    for i in range(4):
        dp.generate(f"{prefix}Question {i}?", GREEDY)
    delta = {k: dp.routed[k] - before[k] for k in dp.routed}
    assert sorted(delta.values()) == [0, 4], delta
    stats = dp.stats()
    assert len(stats["replicas"]) == 2 and stats["cached_tokens"] > 0
    assert stats["cached_tokens"] == sum(r["cached_tokens"] for r in stats["replicas"])


def test_stream_closed_early_releases_its_replica(dp):
    stream = dp.generate(PROMPTS[2], {**GREEDY, "max_new_tokens": 50}, stream=True)
    next(stream)
    assert sum(dp.loads().values()) == 1
    stream.close()
    assert sum(dp.loads().values()) == 0
    wait_idle(dp, settle=True)


def test_health_generate_checks_every_replica(tiny_llama_path):
    engine = DataParallelEngine(_args(tiny_llama_path, dp_size=2))
    try:
        with BackgroundServer(engine) as srv:
            assert httpx.get(f"{srv.url}/health_generate", timeout=60).status_code == 200
            engine.replicas[1].shutdown()  # replica 1 can no longer generate; /health only says "process up"
            r = httpx.get(f"{srv.url}/health_generate", timeout=60)
            assert r.status_code == 503 and "replica(s) [1]" in r.json()["error"]["message"]
            assert httpx.get(f"{srv.url}/health", timeout=10).status_code == 200
    finally:
        engine.shutdown()


def test_health_generate_needs_no_api_key(single):
    args = _args("unused", api_key="secret")
    with BackgroundServer(single, args) as srv:
        assert httpx.get(f"{srv.url}/health_generate", timeout=60).status_code == 200
        assert httpx.get(f"{srv.url}/get_model_info", timeout=10).status_code == 401


def test_scale_out_flags_and_aliases():
    a = parse_args(["--dp", "3", "--tp", "2", "--drain-grace-period", "7.5"])
    assert (a.dp_size, a.tp_size, a.drain_grace_period) == (3, 2, 7.5)
    b = parse_args(["--tp-size", "4", "--nnodes", "2", "--node-rank", "1", "--nccl-init-addr", "10.0.0.1:5000"])
    assert (b.tp_size, b.nnodes, b.node_rank, b.dist_init_addr) == (4, 2, 1, "10.0.0.1:5000")
    with pytest.raises(ValueError, match="dist-init-addr"):
        ServerArgs(tp_size=2, nnodes=2)
    with pytest.raises(ValueError, match="multiple of nnodes"):
        ServerArgs(tp_size=3, nnodes=2, dist_init_addr="h:1")
    with pytest.raises(ValueError, match="node_rank"):
        ServerArgs(tp_size=2, nnodes=2, node_rank=2, dist_init_addr="h:1")
    with pytest.raises(ValueError, match="not supported"):
        ServerArgs(tp_size=2, nnodes=2, dp_size=2, dist_init_addr="h:1")
    with pytest.raises(ValueError, match="dp_size"):
        ServerArgs(dp_size=0)


def test_replicas_share_one_device_by_cumulative_memory_fraction():
    args = ServerArgs(dp_size=4, mem_fraction_static=0.8, device="cpu", tp_size=2, dist_init_addr="h:1")
    fractions = [replica_args(args, i).mem_fraction_static for i in range(4)]
    assert fractions == pytest.approx([0.2, 0.4, 0.6, 0.8])  # each replica ends up with 0.2 of the device
    assert all(replica_args(args, i).dp_size == 1 for i in range(4))
    assert all(replica_args(args, i).dist_init_addr is None for i in range(4))  # a tp group each
