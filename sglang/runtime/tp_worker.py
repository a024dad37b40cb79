"""Tensor-parallel worker ranks 1..N-1: spawned processes, each with its own ModelRunner(rank), that run the
same forwards as rank 0 (the Engine's ModelRunner + Scheduler, in this process or the scheduler process)
and drop the logits.

Each worker loops on rank 0's forward descriptions (runtime/tp_broadcast.py) until the stop message. It
exits when its parent process dies as well (process.exit_with_parent: no orphans); `TPWorkers.join`
reaps them at Engine shutdown (process.stop_process).
"""
from __future__ import annotations

import logging
import os

from sglang.runtime import distributed
from sglang.runtime.model_runner import ModelRunner
from sglang.runtime.process import exit_with_parent, spawn, stop_processes
from sglang.runtime.resolved_model import ResolvedModel
from sglang.runtime.server_args import ServerArgs
from sglang.runtime.tp_broadcast import receive_forward

logger = logging.getLogger(__name__)


def run_tp_worker(server_args: ServerArgs, model: ResolvedModel, rank: int, log_level: int = logging.WARNING) -> None:
    """Entry point of a spawned worker rank."""
    logging.basicConfig(level=log_level, format=f"[%(asctime)s tp{rank} %(name)s] %(message)s")
    # the Engine process died: leave at once (rank 0's collectives will not come)
    exit_with_parent(f"sglang-tp{rank}")
    runner = ModelRunner(server_args, tp_rank=rank, model=model)
    while True:
        try:
            batch = receive_forward(runner)
        except RuntimeError as exc:  # rank 0 died: its connections closed
            logger.error("tp rank %d: rank 0 is gone, exiting (%s)", rank, str(exc).splitlines()[0][:200])
            os._exit(1)
        if batch is None:
            break
        runner.forward(batch)
    distributed.destroy_distributed()


class TPWorkers:
    """This node's worker ranks as spawned processes (started before rank 0 joins the process group):
    ranks 1..tp_size-1 on one node; with nnodes > 1, the node's block of ranks except rank 0."""

    def __init__(self, server_args: ServerArgs, model: ResolvedModel) -> None:
        level = logging.getLogger().getEffectiveLevel()
        ranks = distributed.node_ranks(server_args.tp_size, server_args.nnodes, server_args.node_rank)
        self.procs = [spawn(run_tp_worker, (server_args, model, rank, level), name=f"sglang-tp{rank}")
                      for rank in ranks if rank != 0]

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the workers to exit (after rank 0's stop message), killing any that do not."""
        stop_processes(self.procs, timeout)


def prepare_tp(server_args: ServerArgs, model: ResolvedModel) -> tuple[ServerArgs, TPWorkers]:
    """Check the model splits over tp_size, fix what tp > 1 cannot do, and start the worker ranks.
    Returns the args rank 0 must run with (resolved model path, rendezvous address) and the workers."""
    cfg = model.config
    distributed.check_tp_divisible(cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, server_args.tp_size)
    # CUDA graph replays and overlapped decode would skip the per-forward broadcast to the workers
    logger.info("tp_size=%d: CUDA graphs and overlap scheduling are off", server_args.tp_size)
    args = server_args.replace(
        model_path=model.path, disable_cuda_graph=True, disable_overlap=True,
        dist_init_addr=server_args.dist_init_addr or f"127.0.0.1:{distributed.free_port()}",
    )
    return args, TPWorkers(args, model)


def serve_worker_node(server_args: ServerArgs, model: ResolvedModel) -> int:
    """A node other than node 0 (`--node-rank R > 0`): run this node's tp ranks until rank 0 stops them
    (or dies); returns how many of them failed. No scheduler and no HTTP here: node 0 has those."""
    _, workers = prepare_tp(server_args, model)
    logger.info("node %d: tp ranks %s joined %s", server_args.node_rank,
                [p.name for p in workers.procs], server_args.dist_init_addr)
    workers.join(timeout=None)
    return sum(1 for p in workers.procs if p.exitcode != 0)
