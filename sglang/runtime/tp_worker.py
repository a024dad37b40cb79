"""Tensor-parallel worker ranks 1..N-1: spawned processes, each with its own ModelRunner(rank), that run the
same forwards as rank 0 (the Engine's ModelRunner + Scheduler) and drop the logits.

Per forward, rank 0 broadcasts a host-side description of its ForwardBatch (`pack_forward`): the tensors
moved to the host, plus the req_to_token rows of the batch's requests up to the longest sequence, so each
worker's table equals rank 0's where this forward reads it (slots are chosen by rank 0's scheduler and
mean the same on every rank: the pools have the same size). `None` is the stop message. A worker exits
when its parent process dies as well (no orphans); `TPWorkers.join` reaps them at Engine shutdown.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from typing import Any

import torch

from sglang.runtime import distributed
from sglang.runtime.forward_batch import ForwardBatch, ForwardMode
from sglang.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)

_NOT_SENT = ("req_to_token", "kv_pool", "attn_metadata")  # the worker's own pools; backend-private state


def pack_forward(batch: ForwardBatch) -> dict[str, Any]:
    desc: dict[str, Any] = {}
    for f in dataclasses.fields(batch):
        if f.name in _NOT_SENT:
            continue
        v = getattr(batch, f.name)
        desc[f.name] = v.cpu() if isinstance(v, torch.Tensor) else v
    width = max(batch.seq_lens_cpu) if batch.seq_lens_cpu else int(batch.seq_lens.max())
    desc["_rows"] = batch.req_to_token[batch.req_pool_indices, :width].cpu()
    return desc


def unpack_forward(desc: dict[str, Any], runner: Any) -> ForwardBatch:
    dev = runner.device
    rows = desc.pop("_rows")
    fields = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in desc.items()}
    fields["mode"] = ForwardMode(fields["mode"])
    table = runner.req_to_token_pool.req_to_token
    table[fields["req_pool_indices"], : rows.shape[1]] = rows.to(dev, table.dtype)
    return ForwardBatch(req_to_token=table, kv_pool=runner.token_kv_pool, **fields)


def run_tp_worker(server_args: ServerArgs, rank: int, log_level: int = logging.WARNING) -> None:
    """Entry point of a spawned worker rank."""
    logging.basicConfig(level=log_level, format=f"[%(asctime)s tp{rank} %(name)s] %(message)s")
    parent = multiprocessing.parent_process()

    def watchdog() -> None:  # the Engine process died: leave at once (rank 0's collectives will not come)
        if parent is not None:
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(1)

    threading.Thread(target=watchdog, name=f"sglang-tp{rank}-watchdog", daemon=True).start()
    from sglang.runtime.model_runner import ModelRunner

    runner = ModelRunner(server_args, tp_rank=rank)
    while True:
        try:
            desc = distributed.broadcast_object()
        except RuntimeError as exc:  # rank 0 died: its connections closed
            logger.error("tp rank %d: rank 0 is gone, exiting (%s)", rank, str(exc).splitlines()[0][:200])
            os._exit(1)
        if desc is None:
            break
        runner.forward(unpack_forward(desc, runner))
    distributed.destroy_distributed()


class TPWorkers:
    """Ranks 1..tp_size-1 as spawned processes (started before rank 0 joins the process group)."""

    def __init__(self, server_args: ServerArgs) -> None:
        from sglang.runtime.scheduler_process import _start_without_main

        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        self.procs = [
            ctx.Process(target=run_tp_worker, args=(server_args, rank, level), name=f"sglang-tp{rank}", daemon=True)
            for rank in range(1, server_args.tp_size)
        ]
        for p in self.procs:
            _start_without_main(p)

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the workers to exit (after rank 0's stop message), killing any that do not."""
        from sglang.runtime.scheduler_process import end_process

        for p in self.procs:
            end_process(p, timeout)


def prepare_tp(server_args: ServerArgs) -> tuple[ServerArgs, TPWorkers]:
    """Check the model splits over tp_size, fix what tp > 1 cannot do, and start the worker ranks.
    Returns the args rank 0 must run with (resolved model path, rendezvous address) and the workers."""
    from sglang.runtime.model_config import ModelConfig
    from sglang.runtime.model_loader.default_model import resolve_model_path

    model_path = resolve_model_path(server_args.model_path)  # converted once, here, not by every rank
    cfg = ModelConfig.from_path(model_path, server_args.context_length)
    distributed.check_tp_divisible(cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, server_args.tp_size)
    # CUDA graph replays and overlapped decode would skip the per-forward broadcast to the workers
    logger.info("tp_size=%d: CUDA graphs and overlap scheduling are off", server_args.tp_size)
    args = server_args.replace(
        model_path=model_path, disable_cuda_graph=True, disable_overlap=True,
        dist_init_addr=server_args.dist_init_addr or f"127.0.0.1:{distributed.free_port()}",
    )
    return args, TPWorkers(args)
