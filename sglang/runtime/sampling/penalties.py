"""Logit penalties, applied in place on a [bs, vocab] fp32 logits tensor.

- repetition penalty (HF / CTRL semantics) over every token seen so far (prompt + output):
  a positive logit is divided by the penalty, a negative one multiplied by it;
- frequency / presence penalties (OpenAI semantics) over OUTPUT tokens only:
  logit -= frequency_penalty * count + presence_penalty * (count > 0).
Repetition is applied first, then frequency/presence (the order matters only when both are set).
"""
from __future__ import annotations

from typing import Optional, Sequence

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
    flat_pos = (row_idx * vocab_size + flat).to(device, non_blocking=True)
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


class _Entry:
    __slots__ = ("prompt", "output", "seen", "slot", "last_used")

    def __init__(self, prompt: Optional[Sequence[int]], output: Sequence[int], slot: int) -> None:
        self.prompt = prompt  # strong refs: keep the ids alive (and unique) while cached
        self.output = output
        self.seen: list[int] = []  # copy of the output ids already counted
        self.slot = slot
        self.last_used = 0


class PenaltyCache:
    """Token counts per request kept across steps, so a step only counts its NEW tokens.

    Rows live in one [capacity, V] slab; a request's row is found by the identity of its output-ids
    list (and prompt list), which the scheduler keeps for the request's life and only appends to.
    Each lookup checks that the counted ids are still a prefix of the list (a jump-forward may
    rewrite the tail); if not, the row is recounted. Rows unused for `max_idle` builds are freed.
    """

    def __init__(self, max_idle: int = 32) -> None:
        self.max_idle = max_idle
        self._entries: dict[tuple, _Entry] = {}
        self._slab: Optional[torch.Tensor] = None
        self._free: list[int] = []
        self._clock = 0
        self.tokens_counted = 0  # total ids ever scattered (tests check that steps are incremental)

    def counts(
        self,
        rows: Sequence[tuple[Optional[Sequence[int]], Sequence[int]]],
        vocab_size: int,
        device: torch.device | str,
    ) -> torch.Tensor:
        """fp32 [len(rows), V]: counts of prompt + output ids per (prompt | None, output) row."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must be one key
            device = torch.device("cuda", torch.cuda.current_device())
        self._clock += 1
        if self._slab is not None and (self._slab.shape[1] != vocab_size or self._slab.device != device):
            self._entries.clear()
            self._slab, self._free = None, []
        slots: list[int] = []
        reset: list[int] = []
        add_slots: list[int] = []  # per chunk of new ids: its row's slot and length
        add_lens: list[int] = []
        toks: list[int] = []
        for prompt, output in rows:
            key = (id(prompt) if prompt is not None else None, id(output))
            e = self._entries.get(key)
            n = len(e.seen) if e is not None else 0
            stale = e is not None and (
                e.prompt is not prompt or e.output is not output or len(output) < n or output[:n] != e.seen
            )
            if e is None or stale:
                if e is None:  # a recycled slot may hold an evicted row's counts
                    e = _Entry(prompt, output, self._alloc(vocab_size, device))
                    self._entries[key] = e
                else:  # the ids changed under us (e.g. jump-forward rewrote the tail): recount
                    e.prompt, e.output, e.seen = prompt, output, []
                reset.append(e.slot)
                if prompt is not None and len(prompt):
                    add_slots.append(e.slot)
                    add_lens.append(len(prompt))
                    toks.extend(prompt)
                n = 0
            if len(output) > n:
                fresh = output[n:]
                add_slots.append(e.slot)
                add_lens.append(len(fresh))
                toks.extend(fresh)
                e.seen.extend(fresh)
            e.last_used = self._clock
            slots.append(e.slot)
        slab = self._slab
        assert slab is not None
        if reset:
            slab[torch.tensor(reset, dtype=torch.int64).to(device, non_blocking=True)] = 0.0
        if toks:
            tok = torch.tensor(toks, dtype=torch.int64)
            if int(tok.min()) < 0 or int(tok.max()) >= vocab_size:
                bad = [t for t in toks if not 0 <= t < vocab_size][0]
                # forget what was counted in this call so a retry starts clean
                for prompt, output in rows:
                    e = self._entries.pop((id(prompt) if prompt is not None else None, id(output)), None)
                    if e is not None:
                        self._free.append(e.slot)
                raise ValueError(f"token id {bad} in penalty history is outside the vocabulary [0, {vocab_size})")
            base = torch.repeat_interleave(torch.tensor(add_slots, dtype=torch.int64), torch.tensor(add_lens))
            pos = (base * vocab_size + tok).to(device, non_blocking=True)
            self.tokens_counted += len(toks)
            slab.view(-1).index_add_(0, pos, torch.ones(pos.shape[0], dtype=slab.dtype, device=device))
        out = slab[torch.tensor(slots, dtype=torch.int64).to(device, non_blocking=True)]
        self._evict()
        return out

    def __len__(self) -> int:
        return len(self._entries)

    def _alloc(self, vocab_size: int, device: torch.device) -> int:
        if not self._free:
            old = self._slab
            cap = 0 if old is None else old.shape[0]
            new_cap = max(8, cap * 2)
            slab = torch.zeros(new_cap, vocab_size, dtype=torch.float32, device=device)
            if old is not None:
                slab[:cap] = old
            self._slab = slab
            self._free = list(range(new_cap - 1, cap - 1, -1))
        return self._free.pop()

    def _evict(self) -> None:
        stale = [k for k, e in self._entries.items() if self._clock - e.last_used >= self.max_idle]
        for k in stale:
            self._free.append(self._entries.pop(k).slot)

