"""The tensor-parallel forward wire format: rank 0 → worker ranks, over distributed.broadcast_object.

Per forward, rank 0 (`broadcast_forward`) sends a host-side description of its ForwardBatch: the tensors
moved to the host, plus the req_to_token rows of the batch's requests up to the longest sequence, so each
worker's table equals rank 0's where this forward reads it (slots are chosen by rank 0's scheduler and
mean the same on every rank: the pools have the same size). `broadcast_stop` sends the stop message.
A worker (`receive_forward`) rebuilds the ForwardBatch on its own pools, or gets None to stop.
Packing and unpacking live together here: the description's layout is private to this module.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from sglang.runtime import distributed
from sglang.runtime.forward_batch import ForwardBatch, ForwardMode

_NOT_SENT = ("req_to_token", "kv_pool", "attn_metadata")  # the worker's own pools; backend-private state
_ROWS = "_rows"  # the description's key for the req_to_token rows


def _pack(batch: ForwardBatch) -> dict[str, Any]:
    desc: dict[str, Any] = {}
    for f in dataclasses.fields(batch):
        if f.name in _NOT_SENT:
            continue
        v = getattr(batch, f.name)
        desc[f.name] = v.cpu() if isinstance(v, torch.Tensor) else v
    width = max(batch.seq_lens_cpu) if batch.seq_lens_cpu else int(batch.seq_lens.max())
    desc[_ROWS] = batch.req_to_token[batch.req_pool_indices, :width].cpu()
    return desc


def _unpack(desc: dict[str, Any], runner: Any) -> ForwardBatch:
    dev = runner.device
    rows = desc.pop(_ROWS)
    fields = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in desc.items()}
    fields["mode"] = ForwardMode(fields["mode"])
    table = runner.req_to_token_pool.req_to_token
    table[fields["req_pool_indices"], : rows.shape[1]] = rows.to(dev, table.dtype)
    return ForwardBatch(req_to_token=table, kv_pool=runner.token_kv_pool, **fields)


def broadcast_forward(batch: ForwardBatch) -> None:
    """Rank 0, before running `batch`: the workers run the same forward."""
    distributed.broadcast_object(_pack(batch))


def broadcast_stop() -> None:
    """Rank 0: the workers leave their loop."""
    distributed.broadcast_object(None)


def receive_forward(runner: Any) -> Optional[ForwardBatch]:
    """A worker rank: rank 0's next forward on this runner's pools, or None (stop).
    RuntimeError when rank 0 is gone (its connections closed)."""
    desc = distributed.broadcast_object()
    return None if desc is None else _unpack(desc, runner)
