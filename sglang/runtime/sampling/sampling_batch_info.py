"""SamplingBatchInfo: the per-row sampling tensors of one batch, built once per forward step.

The scheduler calls `SamplingBatchInfo.build(...)` with the requests' SamplingParams (in batch row
order), their output token ids so far, and their per-request generators (None = unseeded; a
seed in the params is enough), then `Sampler.sample(logits, info)`. Everything expensive (penalty counts, min-token masks) is built
only when some row in the batch needs it, so the common path is a handful of tiny tensors.

Every host->device copy here is non_blocking: a blocking one synchronizes the stream (PyTorch waits
for all queued kernels), which would stall an overlapped scheduler behind the forward in flight.
From pageable memory CUDA stages the bytes before returning, so the host lists may go at once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from sglang.runtime.sampling.penalties import PenaltyCache
from sglang.runtime.sampling.sampling_params import SamplingParams

# temperatures at or below this are greedy (SGLang 0.2.x uses the same cut-off)
GREEDY_TEMPERATURE = 1e-6


def make_generator(seed: Optional[int], device: torch.device | str = "cpu") -> Optional[torch.Generator]:
    """A per-request generator for a seeded request (None when seed is None); host-side whatever
    `device` says. It only carries the seed (`initial_seed()`): a seeded row's uniform at a step is
    `position_uniform(seed, len(output_ids))`, a pure function, so the request's tokens depend only
    on its seed and its logits: not on its batch, the device, or whether a step was ever redone
    (retraction, overlap). Rows whose SamplingParams have a seed are seeded even without one.
    """
    if seed is None:
        return None
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    """splitmix64's finalizer: a bijective 64-bit mixer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def position_uniform(seed: int, position: int) -> float:
    """The uniform in [0, 1) a request with `seed` uses for its output token number `position`."""
    z = _mix64((_mix64(seed & _MASK64) + (position + 1) * 0x9E3779B97F4A7C15) & _MASK64)
    return (z >> 11) * (1.0 / (1 << 53))


@dataclass
class SamplingBatchInfo:
    vocab_size: int
    temperatures: torch.Tensor  # fp32 [bs, 1], greedy rows hold 1.0
    greedy: torch.Tensor  # bool [bs]
    top_ps: torch.Tensor  # fp32 [bs]
    top_ks: torch.Tensor  # int64 [bs], disabled = vocab_size
    min_ps: torch.Tensor  # fp32 [bs]
    max_top_k: int = 0  # host copy: largest top_k over the sampled rows (vocab_size when none)
    all_greedy: bool = False
    any_greedy: bool = False
    need_top_p: bool = False
    need_top_k: bool = False
    need_min_p: bool = False
    # penalties (None when no row in the batch uses them)
    repetition_penalties: Optional[torch.Tensor] = None  # fp32 [bs, 1]
    seen_mask: Optional[torch.Tensor] = None  # bool [bs, V]: prompt + output tokens
    frequency_penalties: Optional[torch.Tensor] = None  # fp32 [bs, 1]
    presence_penalties: Optional[torch.Tensor] = None  # fp32 [bs, 1]
    output_counts: Optional[torch.Tensor] = None  # fp32 [bs, V]
    # min_new_tokens: flat indices row * V + token that must not be sampled this step
    banned_flat: Optional[torch.Tensor] = None  # int64 [k]
    # logit_bias: flat indices row * V + token and the bias added there
    bias_flat: Optional[torch.Tensor] = None  # int64 [k]
    bias_values: Optional[torch.Tensor] = None  # fp32 [k]
    vocab_mask: Optional[torch.Tensor] = None  # bool [bs, V], True = allowed
    generators: list[Optional[torch.Generator]] = field(default_factory=list)
    seeded_rows: list[int] = field(default_factory=list)
    seeded_rows_t: Optional[torch.Tensor] = None  # int64 [n_seeded] on device
    seed_uniforms: Optional[torch.Tensor] = None  # fp64 [n_seeded]: this step's uniform per seeded row

    @property
    def batch_size(self) -> int:
        return self.greedy.shape[0]

    @classmethod
    def build(
        cls,
        params: Sequence[SamplingParams],
        output_ids: Sequence[Sequence[int]],
        generators: Optional[Sequence[Optional[torch.Generator]]],
        vocab_size: int,
        device: torch.device | str,
        vocab_mask: Optional[torch.Tensor] = None,
        *,
        prompt_ids: Optional[Sequence[Sequence[int]]] = None,
        eos_token_ids: Sequence[int] = (),
        penalty_cache: Optional[PenaltyCache] = None,
    ) -> "SamplingBatchInfo":
        """Build the batch's sampling tensors.

        params / output_ids / generators / prompt_ids are in batch row order. prompt_ids is only read
        when some row has a repetition penalty (which covers prompt + output tokens). eos_token_ids
        are the model's EOS ids: with stop_token_ids they are masked while a row has produced fewer
        than min_new_tokens tokens (unless that row has ignore_eos, for EOS).
        Penalty counts are kept across steps in `penalty_cache` (default: one per thread), keyed by
        the identity of each row's prompt / output lists, so pass the request's own lists.
        """
        bs = len(params)
        if len(output_ids) != bs:
            raise ValueError(f"output_ids has {len(output_ids)} rows for a batch of {bs}")
        if generators is None:
            generators = [None] * bs
        if len(generators) != bs:
            raise ValueError(f"generators has {len(generators)} entries for a batch of {bs}")
        device = torch.device(device)

        greedy_l = [p.temperature <= GREEDY_TEMPERATURE or p.top_k == 1 for p in params]
        top_ps = [p.top_p for p in params]
        top_ks = [vocab_size if p.top_k < 0 or p.top_k > vocab_size else p.top_k for p in params]
        min_ps = [p.min_p for p in params]
        sampled = [not g for g in greedy_l]
        temperatures, greedy, top_ps_t, top_ks_t, min_ps_t = _base_tensors(params, greedy_l, top_ks, vocab_size, device)
        info = cls(
            vocab_size=vocab_size,
            temperatures=temperatures,
            greedy=greedy,
            top_ps=top_ps_t,
            top_ks=top_ks_t,
            min_ps=min_ps_t,
            max_top_k=max((k for s_, k in zip(sampled, top_ks) if s_), default=vocab_size),
            all_greedy=all(greedy_l),
            any_greedy=any(greedy_l),
            # filters matter only on rows that actually sample
            need_top_p=any(s and p < 1.0 for s, p in zip(sampled, top_ps)),
            need_top_k=any(s and k < vocab_size for s, k in zip(sampled, top_ks)),
            need_min_p=any(s and m > 0.0 for s, m in zip(sampled, min_ps)),
            generators=list(generators),
            seeded_rows=[i for i, (p, g) in enumerate(zip(params, generators))
                         if sampled[i] and (p.seed is not None or g is not None)],
        )

        cache = penalty_cache if penalty_cache is not None else _thread_cache()
        rep_rows = [i for i, p in enumerate(params) if p.repetition_penalty != 1.0]
        if rep_rows:
            if prompt_ids is None:
                raise ValueError("repetition_penalty needs prompt_ids in SamplingBatchInfo.build")
            hist = cache.counts([(prompt_ids[i], output_ids[i]) for i in rep_rows], vocab_size, device)
            info.seen_mask = _scatter_rows(hist, rep_rows, bs) > 0
            info.repetition_penalties = _col([p.repetition_penalty for p in params], device)
        freq_rows = [i for i, p in enumerate(params) if p.frequency_penalty != 0.0 or p.presence_penalty != 0.0]
        if freq_rows:
            counts = cache.counts([(None, output_ids[i]) for i in freq_rows], vocab_size, device)
            info.output_counts = _scatter_rows(counts, freq_rows, bs)
            info.frequency_penalties = _col([p.frequency_penalty for p in params], device)
            info.presence_penalties = _col([p.presence_penalty for p in params], device)

        if any(p.logit_bias for p in params):
            flat = [i * vocab_size + t for i, p in enumerate(params) for t, _ in p.logit_bias]
            if any(not 0 <= t < vocab_size for p in params for t, _ in p.logit_bias):
                raise ValueError(f"logit_bias token id outside the vocabulary [0, {vocab_size})")
            info.bias_flat = torch.tensor(flat, dtype=torch.int64).to(device, non_blocking=True)
            biases = [b for p in params for _, b in p.logit_bias]
            info.bias_values = torch.tensor(biases, dtype=torch.float32).to(device, non_blocking=True)

        banned: list[int] = []
        for i, p in enumerate(params):
            if len(output_ids[i]) < p.min_new_tokens:
                ids = set(p.stop_token_ids)
                if not p.ignore_eos:
                    ids.update(eos_token_ids)
                banned.extend(i * vocab_size + t for t in sorted(ids) if 0 <= t < vocab_size)
        if banned:
            info.banned_flat = torch.tensor(banned, dtype=torch.int64).to(device, non_blocking=True)

        if info.seeded_rows:
            # a pure function of (seed, position): redoing a step redraws the same token
            us = [
                position_uniform(
                    params[i].seed if params[i].seed is not None else generators[i].initial_seed(),
                    len(output_ids[i]),
                )
                for i in info.seeded_rows
            ]
            info.seeded_rows_t = torch.tensor(info.seeded_rows, dtype=torch.int64).to(device, non_blocking=True)
            info.seed_uniforms = torch.tensor(us, dtype=torch.float64).to(device, non_blocking=True)

        if vocab_mask is not None:
            if vocab_mask.dtype != torch.bool or tuple(vocab_mask.shape) != (bs, vocab_size):
                raise ValueError(
                    f"vocab_mask must be bool [{bs}, {vocab_size}], got {vocab_mask.dtype} {tuple(vocab_mask.shape)}"
                )
            info.vocab_mask = vocab_mask.to(device, non_blocking=True)
        return info


_local = threading.local()


def _base_tensors(params, greedy_l, top_ks, vocab_size, device):
    """temperatures [bs,1], greedy [bs], top_p [bs], top_k [bs], min_p [bs] on `device`.

    Packed into one host tensor so that a step costs a single host-to-device copy, and reused
    outright when the batch holds the same SamplingParams objects as the last build (steady decode).
    """
    key = (tuple(map(id, params)), vocab_size, device)
    last = getattr(_local, "base", None)
    if last is not None and last[0] == key:
        return last[2]
    rows = [
        (1.0 if g else p.temperature, p.top_p, p.min_p, float(k), 1.0 if g else 0.0)
        for p, g, k in zip(params, greedy_l, top_ks)
    ]
    packed = torch.tensor(rows, dtype=torch.float32).view(len(params), 5).to(device, non_blocking=True)
    out = (packed[:, 0:1], packed[:, 4] > 0.5, packed[:, 1], packed[:, 3].long(), packed[:, 2])
    _local.base = (key, list(params), out)  # holding params keeps their ids unique while cached
    return out


def _thread_cache() -> PenaltyCache:
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = PenaltyCache()
    return cache


def _scatter_rows(rows: torch.Tensor, index: list[int], bs: int) -> torch.Tensor:
    """[len(index), V] rows placed at `index` of a zero [bs, V] tensor (no copy when index is all rows)."""
    if len(index) == bs:
        return rows
    out = torch.zeros(bs, rows.shape[1], dtype=rows.dtype, device=rows.device)
    out[torch.tensor(index, dtype=torch.int64).to(rows.device, non_blocking=True)] = rows
    return out


def _col(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1).to(device, non_blocking=True)
