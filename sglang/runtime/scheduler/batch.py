"""ForwardBatch construction: `build_extend` / `build_decode` turn a list of requests (whose KV slots
the CacheManager has already allocated) into the ForwardBatch contract; `to_device` copies host
tensors without blocking the host. Batches are built only here, so a runner may pad or replay them.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from sglang.runtime.forward_batch import ForwardBatch, ForwardMode, PrefixGroups
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool
from sglang.runtime.scheduler.req import Req


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device without blocking the host: a plain torch.tensor(..., device="cuda") or a
    pageable .to() waits for the stream to drain, which would undo overlap scheduling."""
    device = torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def _t(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return to_device(torch.tensor(values, dtype=torch.int64), device)


def build_extend(
    reqs: Sequence[Req],
    out_slots: Sequence[torch.Tensor],
    req_pool: ReqToTokenPool,
    kv_pool: TokenKVPool,
    device: torch.device,
    logprob_starts: Optional[list[int]] = None,
    top_logprobs_nums: Optional[list[int]] = None,
) -> ForwardBatch:
    """reqs have kv_len (prefix) set and extend_len tokens to compute, whose slots are out_slots."""
    input_ids: list[int] = []
    positions: list[int] = []
    prefix_lens, ext_lens, seq_lens, starts = [], [], [], []
    loc = 0
    for r in reqs:
        ids = r.all_ids[r.kv_len : r.kv_len + r.extend_len]
        input_ids.extend(ids)
        positions.extend(range(r.kv_len, r.kv_len + r.extend_len))
        prefix_lens.append(r.kv_len)
        ext_lens.append(r.extend_len)
        seq_lens.append(r.kv_len + r.extend_len)
        starts.append(loc)
        loc += r.extend_len
    return ForwardBatch(
        mode=ForwardMode.EXTEND,
        batch_size=len(reqs),
        input_ids=_t(input_ids, device),
        positions=_t(positions, device),
        req_pool_indices=_t([r.req_pool_idx for r in reqs], device),
        seq_lens=_t(seq_lens, device),
        out_cache_loc=torch.cat(list(out_slots)).to(device),
        req_to_token=req_pool.req_to_token,
        kv_pool=kv_pool,
        extend_prefix_lens=_t(prefix_lens, device),
        extend_seq_lens=_t(ext_lens, device),
        extend_start_loc=_t(starts, device),
        seq_lens_cpu=seq_lens,
        extend_prefix_lens_cpu=prefix_lens,
        extend_seq_lens_cpu=ext_lens,
        extend_logprob_start_lens_cpu=logprob_starts,
        return_logprob=logprob_starts is not None,
        top_logprobs_nums=top_logprobs_nums,
        mm_items=[r.mm_items for r in reqs] if any(r.mm_items for r in reqs) else None,
    )


def build_decode(
    reqs: Sequence[Req],
    out_slots: torch.Tensor,
    req_pool: ReqToTokenPool,
    kv_pool: TokenKVPool,
    device: torch.device,
    input_ids: Optional[torch.Tensor] = None,
    prefix_groups: Optional[PrefixGroups] = None,
) -> ForwardBatch:
    """Every req computes one token at position kv_len into out_slots[i]: its last token, or
    input_ids[i] when given (overlap: sampled on the device, not yet on the host). The per-request
    columns go to the device in ONE non-blocking copy. prefix_groups: rows sharing cached-prefix KV
    (scheduler/prefix_groups.py), for cascade decode."""
    bs = len(reqs)
    kv_lens = [r.kv_len for r in reqs]
    cols = [r.req_pool_idx for r in reqs] + kv_lens
    cols += [n + 1 for n in kv_lens]
    cols += [0] * bs if input_ids is not None else [r.output_ids[-1] if r.output_ids else r.origin_input_ids[-1]
                                                  for r in reqs]
    # one flat list through numpy: several times faster than torch.tensor on nested lists
    packed = to_device(torch.from_numpy(np.array(cols, dtype=np.int64)).view(4, bs), device)
    seq_lens = cols[2 * bs : 3 * bs]
    return ForwardBatch(
        mode=ForwardMode.DECODE,
        batch_size=len(reqs),
        input_ids=packed[3] if input_ids is None else input_ids.to(device, torch.int64),
        positions=packed[1],
        req_pool_indices=packed[0],
        seq_lens=packed[2],
        out_cache_loc=out_slots.to(device),
        req_to_token=req_pool.req_to_token,
        kv_pool=kv_pool,
        seq_lens_cpu=seq_lens,
        prefix_groups=prefix_groups,
    )
