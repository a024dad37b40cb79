"""Multi-node tensor parallelism on one machine: two loopback "nodes" (gloo on CPU). Node 1 is a real
`sglang launch-server --nnodes 2 --node-rank 1` process running only tp rank 1; node 0 is an Engine with
rank 0 and the scheduler. TP=2 across the two nodes equals TP=1 token for token, and node 1 exits
cleanly when node 0 shuts down."""
from __future__ import annotations

import os
import subprocess
import sys

from sglang.runtime import distributed
from sglang.runtime.engine import Engine

PROMPTS = [[1, 5, 9, 200, 31], [7, 7, 3], [100, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
PARAMS = {"max_new_tokens": 8, "temperature": 0.0, "ignore_eos": True}
COMMON = {"load_format": "dummy", "device": "cpu", "dtype": "float32", "max_total_tokens": 2048}


def _generate(engine: Engine) -> list[dict]:
    return engine.generate(input_ids=PROMPTS, sampling_params=PARAMS, return_logprob=True, logprob_start_len=0)


def _node1(model: str, addr: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--tp", "2", "--nnodes", "2",
           "--node-rank", "1", "--nccl-init-addr", addr, "--log-level", "warning",
           *[x for k, v in COMMON.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_tp2_over_two_loopback_nodes_equals_tp1(tiny_llama_path):
    with Engine(model_path=tiny_llama_path, **COMMON) as one:
        expected = _generate(one)
    addr = f"127.0.0.1:{distributed.free_port()}"
    node1 = _node1(tiny_llama_path, addr)
    try:
        engine = Engine(model_path=tiny_llama_path, tp_size=2, nnodes=2, node_rank=0, dist_init_addr=addr, **COMMON)
        try:
            assert engine._tp_workers.procs == []  # rank 1 lives on the other node
            got = _generate(engine)
        finally:
            engine.shutdown()  # rank 0's stop message ends node 1's rank
        out, _ = node1.communicate(timeout=120)
        assert node1.returncode == 0, out[-3000:]
    finally:
        if node1.poll() is None:
            node1.kill()
            node1.wait()
    for x, y in zip(expected, got):
        ox, oy = x["meta_info"]["output_token_logprobs"], y["meta_info"]["output_token_logprobs"]
        assert [t[1] for t in ox] == [t[1] for t in oy]
        assert max(abs(p[0] - q[0]) for p, q in zip(ox, oy)) < 1e-4


def test_node_ranks_split_tp_in_blocks():
    assert [list(distributed.node_ranks(4, 2, r)) for r in (0, 1)] == [[0, 1], [2, 3]]
    assert [distributed.local_rank(r, 4, 2) for r in range(4)] == [0, 1, 0, 1]
    assert list(distributed.node_ranks(2, 1, 0)) == [0, 1]
