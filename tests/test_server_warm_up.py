"""launch.warm_up: on a GPU, every replica gets a long prompt and then one extending its cached prefix (the
kernels' first-use compiles happen before the server is ready), then an empty cache; never on a CPU, and a
failing warm-up does not stop the server."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from sglang.runtime.server import launch


class FakeReplica:
    def __init__(self, context_len: int = 4096, pool_size: int = 100_000, fail: bool = False) -> None:
        self.context_len, self.pool_size, self.vocab_size, self.fail = context_len, pool_size, 32000, fail
        self.calls: list[list[int]] = []
        self.flushed = 0

    def generate(self, input_ids, sampling_params):
        if self.fail:
            raise RuntimeError("no")
        assert all(0 <= t < self.vocab_size for t in input_ids)
        self.calls.append(list(input_ids))

    def flush_cache(self):
        self.flushed += 1
        return True


def test_every_replica_warms_a_prefix_then_its_extension_and_empties_the_cache(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    replicas = [FakeReplica(), FakeReplica(context_len=512)]
    launch.warm_up(SimpleNamespace(replicas=replicas), SimpleNamespace(device="cuda"))
    for r in replicas:
        first, second = r.calls
        assert len(first) == min(launch.WARM_UP_PROMPT, r.context_len - 64)
        assert second[: len(first)] == first and len(second) > len(first)  # a cached-prefix extend
        assert r.flushed == 1


def test_no_warm_up_on_cpu_and_a_failure_is_not_fatal(monkeypatch):
    cpu = FakeReplica()
    launch.warm_up(cpu, SimpleNamespace(device="cpu"))
    assert cpu.calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    broken = FakeReplica(fail=True)
    launch.warm_up(broken, SimpleNamespace(device="auto"))  # logged, not raised
    assert broken.flushed == 0
