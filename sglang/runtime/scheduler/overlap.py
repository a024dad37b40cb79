"""Overlap scheduling for decode: the host processes step k while the device computes step k+1.

Synchronous decode is: forward k -> sample k -> copy ids to host -> append / stop checks / stream ->
forward k+1. With a one-step lag, step k+1 is launched with step k's sampled ids still on the
device (its input_ids), and only then are step k's ids copied and processed, so detokenization,
stop checks and streaming hide behind the forward. A request that finished at step k was also in
step k+1: its extra token is dropped (its KV slot went back with the request's release).

Only plain requests qualify: the sampling of step k+1 must not depend on step k's token on the host
(no penalties, min_new_tokens still pending, constraints, logprobs; seeded draws depend only on the
token position, which accounts for the lag). Anything else, or any change of the running set (a
prefill, an abort, a retraction), flushes the pending step first and the scheduler runs synchronously. On by default on CUDA (--disable-overlap turns it off); `force`
enables it on CPU, where it gains nothing but lets tests check that outputs are unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from sglang.runtime.scheduler.batch import to_device
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.decode import DecodeManager
from sglang.runtime.scheduler.process import TokenProcessor
from sglang.runtime.scheduler.req import Req
from sglang.runtime.scheduler.sample import BatchSampler


@dataclass
class _Pending:
    """A launched step's sampled ids (no logprobs: overlap takes only rows that return none)."""

    reqs: list[Req]
    ids: torch.Tensor  # device, sampled at the last launched step (input of the next one)
    rows: Optional[list[int]] = None  # rows of the host copy that belong to reqs (None: all)
    ids_host: Optional[torch.Tensor] = None  # device->host copy, enqueued without blocking
    copied: Optional[object] = None  # CUDA event recorded after the copy

    def __post_init__(self) -> None:
        if self.ids_host is not None:
            return
        if self.ids.device.type != "cuda":
            self.ids_host = self.ids
            return
        # enqueue the copy now, before the next step's kernels: waiting for it later then does not
        # wait for the next step (a plain .tolist() would queue behind it)
        self.ids_host = torch.empty(self.ids.shape, dtype=self.ids.dtype, pin_memory=True)
        self.ids_host.copy_(self.ids, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()

    def subset(self, keep: list[int]) -> "_Pending":
        sel = to_device(torch.tensor(keep, dtype=torch.int64), self.ids.device)
        rows = keep if self.rows is None else [self.rows[i] for i in keep]
        return _Pending([self.reqs[i] for i in keep], self.ids[sel], rows, self.ids_host, self.copied)

    def host_ids(self) -> list[int]:
        if self.copied is not None:
            self.copied.synchronize()
        ids = self.ids_host.tolist()
        return ids if self.rows is None else [ids[i] for i in self.rows]


class OverlapDecoder:
    """Runs decode steps one ahead of the host through public methods of the DecodeManager, the
    CacheManager, the BatchSampler and the TokenProcessor."""

    def __init__(self, decode: DecodeManager, cache: CacheManager, sampler: BatchSampler, processor: TokenProcessor,
                 disabled: bool, device: torch.device) -> None:
        self.decode = decode
        self.cache = cache
        self.sampler = sampler
        self.processor = processor
        self.disabled = disabled  # --disable-overlap
        self.device = torch.device(device)
        self.pending: Optional[_Pending] = None
        self.force = False  # run on a device where it gains nothing (tests: outputs must not change)
        self.lagged_steps = 0  # steps launched before the previous one was processed on the host

    @staticmethod
    def eligible(r: Req) -> bool:
        sp = r.sampling_params
        return (r.constraint is None and not r.return_logprob and not sp.has_penalties
                and len(r.output_ids) >= sp.min_new_tokens)

    def enabled(self) -> bool:
        if self.disabled or not (self.force or self.device.type == "cuda"):
            return False
        running = self.decode.running
        return bool(running) and all(self.eligible(r) for r in running)

    def decode_step(self) -> None:
        p = self.pending
        if p is not None and not self._still_valid(p):
            self.flush()
            p = None
        if p is None:
            self._start()
            return
        # launch step k+1 on step k's device-side ids, then process step k on the host
        out = self.decode.launch(p.reqs, input_ids=p.ids)
        self.lagged_steps += 1
        ids, _ = self.sampler.sample(p.reqs, out.next_token_logits, lag=1)  # step k not on the host yet
        nxt = _Pending(list(p.reqs), ids)
        self.processor.timer.device_end()
        self.pending = None
        with self.processor.timer.blocked():
            host = p.host_ids()
        self.processor.process(p.reqs, host, None, None)
        keep = [i for i, r in enumerate(p.reqs) if not r.finished and r.req_pool_idx is not None]
        if keep:
            self.pending = nxt if len(keep) == len(p.reqs) else nxt.subset(keep)

    def _still_valid(self, p: _Pending) -> bool:
        """The pending step can be continued: same running batch, and a slot for each of them."""
        running = self.decode.running
        return (len(p.reqs) == len(running) and all(a is b for a, b in zip(p.reqs, running))
                and self.cache.available() >= len(p.reqs))

    def _start(self) -> None:
        """A first step with nothing pending: launch and sample it, leave it for the next call."""
        self.decode.make_room()
        reqs = list(self.decode.running)
        if not reqs:
            return
        out = self.decode.launch(reqs)
        ids, _ = self.sampler.sample(reqs, out.next_token_logits)
        self.processor.timer.device_end()
        self.pending = _Pending(reqs, ids)

    def flush(self) -> None:
        """Process the launched-but-unprocessed step, leaving every request decode-ready."""
        p, self.pending = self.pending, None
        if p is not None:
            self.processor.process(p.reqs, p.host_ids(), None, None)

    def drop(self) -> None:
        """Forget the pending step without processing it (the scheduler is failing everything)."""
        self.pending = None
