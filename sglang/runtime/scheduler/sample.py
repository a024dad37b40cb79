"""Sampling one token for each row of a forward's logits.

`BatchSampler` turns the rows' requests into a SamplingBatchInfo (their sampling params, outputs so
far, generators and, for constrained requests, a vocab mask filled on the host), samples without a
host sync, and gives the top logprobs that requests asked for.

Steady decode samples the same requests step after step; when nothing in their SamplingBatchInfo
depends on the step (no penalties, no seeded draws, no vocab mask, no min_new_tokens ban), the last
step's info is reused as is, and the per-token logprobs are computed only when some row returns them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from sglang.runtime.sampling.sampler import Sampler, top_logprobs
from sglang.runtime.sampling.sampling_batch_info import SamplingBatchInfo
from sglang.runtime.scheduler.batch import to_device
from sglang.runtime.scheduler.req import Req


@dataclass
class _LastBatch:
    """What the previous sample() call knew about its rows, reusable while the rows are the same."""

    reqs: list[Req]  # held so that the ids in `key` stay unique while cached
    key: tuple[int, ...]
    device: torch.device
    info: Optional[SamplingBatchInfo]  # None: it depends on the step, rebuild it each time
    with_logprobs: bool


class BatchSampler:
    def __init__(self, vocab_size: int, eos_ids: Sequence[int], seed: Optional[int]) -> None:
        self.vocab_size = vocab_size
        self.eos_ids = tuple(eos_ids)
        self.sampler = Sampler(seed=seed)
        self._last: Optional[_LastBatch] = None
        self.info_reuses = 0  # steps that reused the last SamplingBatchInfo (tests, stats)

    def sample(self, reqs: list[Req], logits: torch.Tensor,
               lag: int = 0) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Next tokens and their logprobs (None when no row returns logprobs), as device tensors (no
        host sync). lag: output tokens sampled on the device but not yet on the host (overlap)."""
        last = self._last
        if last is None or last.key != tuple(map(id, reqs)) or last.device != logits.device or last.info is None:
            last = self._remember(reqs, self.sampling_info(reqs, logits.device, lag))
        else:
            self.info_reuses += 1
        return self.sampler.sample(logits[:, : self.vocab_size], last.info, with_logprobs=last.with_logprobs)

    def _remember(self, reqs: list[Req], info: SamplingBatchInfo) -> _LastBatch:
        """Keep this step's info for the next step when nothing in it depends on the step. A row still
        under min_new_tokens with ids to ban has banned_flat set; without any, its ban stays empty."""
        steady = (info.repetition_penalties is None and info.output_counts is None and not info.seeded_rows
                  and info.vocab_mask is None and info.banned_flat is None)
        self._last = _LastBatch(list(reqs), tuple(map(id, reqs)), info.temperatures.device,
                                info if steady else None, any(r.return_logprob for r in reqs))
        # the info in use this step, steady or not
        return dataclasses.replace(self._last, info=info)

    def sampling_info(self, reqs: list[Req], device: torch.device, lag: int = 0) -> SamplingBatchInfo:
        """The lagged tokens count for the positions (seeded draws) but, being unknown, must not
        matter otherwise (overlap only takes requests for which they do not)."""
        outputs = [r.output_ids + [0] * lag for r in reqs] if lag else [r.output_ids for r in reqs]
        return SamplingBatchInfo.build(
            [r.sampling_params for r in reqs], outputs, [r.generator for r in reqs],
            self.vocab_size, device, self._vocab_mask(reqs, device),
            prompt_ids=[r.origin_input_ids for r in reqs], eos_token_ids=self.eos_ids,
        )

    def _vocab_mask(self, reqs: list[Req], device: torch.device) -> Optional[torch.Tensor]:
        if not any(r.constraint is not None for r in reqs):
            return None
        # filled on the host (one memcpy per row), then one non-blocking copy to the device
        mask = torch.ones((len(reqs), self.vocab_size), dtype=torch.bool)
        for i, r in enumerate(reqs):
            if r.constraint is not None:
                r.constraint.fill_vocab_mask(mask[i])
        return to_device(mask, device)

    def top_logprobs(self, reqs: list[Req], logits: torch.Tensor) -> Optional[list]:
        """Per row, the top-k (logprob, id) pairs its request asked for; None when no row asks."""
        last = self._last
        if last is not None and not last.with_logprobs and last.key == tuple(map(id, reqs)):
            return None  # the common case, known without a pass over the rows
        ks = [r.top_logprobs_num if r.return_logprob else 0 for r in reqs]
        return top_logprobs(logits[:, : self.vocab_size], ks) if any(ks) else None


def eos_ids_of(cfg: Any, tokenizer: Any) -> list[int]:
    """The model's end-of-sequence ids: the config's (one or several), else the tokenizer's."""
    ids = getattr(cfg, "eos_token_ids", None)
    if ids is None:
        ids = getattr(cfg, "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple, set)) else [ids])]
