"""Tensor parallelism plumbing (Megatron style, as SGLang/vLLM): the process group, this process's tp rank and
size, and the one collective the model needs (`tensor_model_parallel_all_reduce`).

At tp_size 1 nothing here creates a process group and the all-reduce is never called (layers check their
own tp size), so the single-GPU path is unchanged. The tp rank/size a model is BUILT with comes from
`tp_context(...)` (scoped to the model construction), not from the process group, so a tp=1 model can be
built in a process that also holds a tp>1 one.
"""
from __future__ import annotations

import contextlib
import datetime
import socket
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist

_BUILD_TP: tuple[int, int] = (0, 1)  # (rank, size) that layers being constructed shard for
_CPU_GROUP: Optional[Any] = None  # gloo group for host-side objects (the forward descriptions)
INIT_TIMEOUT = datetime.timedelta(minutes=10)
# a worker waits for rank 0's next forward as long as the server sits idle: no timeout in practice (a dead
# rank 0 closes its connections, which ends the wait with an error at once)
IDLE_TIMEOUT = datetime.timedelta(days=365)


@contextlib.contextmanager
def tp_context(rank: int, size: int) -> Iterator[None]:
    """Layers constructed inside shard themselves for (rank, size)."""
    global _BUILD_TP
    prev, _BUILD_TP = _BUILD_TP, (rank, size)
    try:
        yield
    finally:
        _BUILD_TP = prev


def get_tp_rank() -> int:
    return _BUILD_TP[0]


def get_tp_size() -> int:
    return _BUILD_TP[1]


def check_tp_divisible(num_heads: int, num_kv_heads: int, intermediate_size: int, tp_size: int) -> None:
    """ValueError unless every sharded dimension splits evenly over tp_size ranks."""
    if tp_size == 1:
        return
    if num_heads % tp_size or num_kv_heads % tp_size:
        raise ValueError(
            f"tp_size={tp_size} must divide the model's attention heads: num_attention_heads={num_heads}, "
            f"num_key_value_heads={num_kv_heads}"
        )
    if intermediate_size % tp_size:
        raise ValueError(f"tp_size={tp_size} must divide the model's intermediate_size={intermediate_size}")


def node_ranks(tp_size: int, nnodes: int, node_rank: int) -> range:
    """The global tp ranks that run on node `node_rank` (Megatron's layout: consecutive blocks of
    tp_size / nnodes ranks per node, so node 0 holds rank 0 and with it the scheduler)."""
    per_node = tp_size // nnodes
    return range(node_rank * per_node, (node_rank + 1) * per_node)


def local_rank(tp_rank: int, tp_size: int, nnodes: int) -> int:
    """A rank's index among its node's ranks: the GPU it uses there (each node numbers its GPUs from 0)."""
    return tp_rank % (tp_size // nnodes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed(rank: int, size: int, init_addr: str, device: torch.device) -> None:
    """Join the tp process group: nccl on CUDA (gloo on CPU) for the model's collectives, plus a gloo group
    for the pickled host objects rank 0 broadcasts (its own group: its own, idle-proof timeout)."""
    global _CPU_GROUP
    if dist.is_initialized():
        raise RuntimeError("a torch.distributed process group already exists in this process (one tp>1 runner per process)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{init_addr}", rank=rank, world_size=size, timeout=INIT_TIMEOUT)
    _CPU_GROUP = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)


def destroy_distributed() -> None:
    global _CPU_GROUP
    _CPU_GROUP = None
    if dist.is_initialized():
        dist.destroy_process_group()


def tensor_model_parallel_all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum x over the tp ranks in place (a no-op without a tp>1 group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    dist.all_reduce(x)
    return x


def broadcast_object(obj: Any = None) -> Any:
    """Rank 0's obj on every rank (host-side, pickled, over the gloo group)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_CPU_GROUP)
    return box[0]
