"""Logit penalties, applied in place on a [bs, vocab] fp32 logits tensor.

- repetition penalty (HF / CTRL semantics) over every token seen so far (prompt + output):
  a positive logit is divided by the penalty, a negative one multiplied by it;
- frequency / presence penalties (OpenAI semantics) over OUTPUT tokens only:
  logit -= frequency_penalty * count + presence_penalty * (count > 0).
Repetition is applied first, then frequency/presence (the order matters only when both are set).
"""
from __future__ import annotations

from typing import Sequence

import torch


def token_counts(
    rows: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str
) -> torch.Tensor:
    """fp32 [len(rows), vocab] occurrence counts of each token id per row (one scatter, no Python loop)."""
    bs = len(rows)
    counts = torch.zeros(bs, vocab_size, dtype=torch.float32, device=device)
    lens = [len(r) for r in rows]
    total = sum(lens)
    if total == 0:
        return counts
    flat = torch.tensor([t for r in rows for t in r], dtype=torch.int64)
    if int(flat.min()) < 0 or int(flat.max()) >= vocab_size:
        raise ValueError(f"token id outside the vocabulary [0, {vocab_size}) in penalty history")
    row_idx = torch.repeat_interleave(torch.arange(bs), torch.tensor(lens))
    flat_pos = (row_idx * vocab_size + flat).to(device)
    counts.view(-1).index_add_(0, flat_pos, torch.ones(total, dtype=torch.float32, device=device))
    return counts


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> None:
    """seen: bool [bs, V]; penalty: fp32 [bs, 1] (1.0 = off)."""
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    logits.copy_(torch.where(seen, scaled, logits))


def apply_frequency_presence(
    logits: torch.Tensor, counts: torch.Tensor, frequency: torch.Tensor, presence: torch.Tensor
) -> None:
    """counts: fp32 [bs, V] output-token counts; frequency / presence: fp32 [bs, 1]."""
    logits.sub_(counts * frequency + (counts > 0).to(logits.dtype) * presence)
