"""Sampler: one vectorized sampling step for a mixed batch, plus logprob helpers.

Per row, in order: repetition penalty -> frequency/presence penalties -> logit_bias -> min_new_tokens mask ->
constrained-decoding vocab mask -> greedy argmax (temperature 0 or top_k 1) or
temperature -> softmax -> top-k / top-p / min-p filter -> inverse-CDF draw.

The draw is by inverse CDF: one uniform u per row, token = first index whose cumulative
(unnormalized, filtered) probability exceeds u * total. Unseeded rows take u from the sampler's own
generator in one batched op; a seeded row's u is a hash of (seed, output position) computed on the
host, so its tokens depend only on its seed and its logits: never on the batch around it, the
device (up to float rounding at a CDF boundary), or a step being redone.

Host syncs: none on accelerators (an overlapped scheduler keeps running ahead). On CPU, top-p uses
a partial top-k and one check (a sync, free there) whether each nucleus fits in it, else sorts.

Logprob choice (as SGLang reports): the returned logprob is log_softmax of the ORIGINAL logits
(before temperature, penalties and masks) at the chosen token.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from sglang.runtime.sampling.penalties import apply_frequency_presence, apply_repetition_penalty
from sglang.runtime.sampling.sampling_batch_info import SamplingBatchInfo


class Sampler:
    def __init__(self, seed: Optional[int] = None) -> None:
        # generator for unseeded rows; created lazily on the logits' device
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _default_generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self._seed is None:
            return None  # torch's global RNG
        g = self._generators.get(device)
        if g is None:
            g = torch.Generator(device=device)
            g.manual_seed(self._seed)
            self._generators[device] = g
        return g

    def process_logits(self, logits: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        """Penalties and masks applied to a copy of `logits` (or `logits` itself when nothing applies);
        greedy rows take the argmax of this."""
        if (info.repetition_penalties is None and info.output_counts is None and info.bias_flat is None
                and info.banned_flat is None and info.vocab_mask is None):
            return logits.float()
        x = logits.float().clone()
        if info.repetition_penalties is not None:
            apply_repetition_penalty(x, info.seen_mask, info.repetition_penalties)
        if info.output_counts is not None:
            apply_frequency_presence(x, info.output_counts, info.frequency_penalties, info.presence_penalties)
        if info.bias_flat is not None:
            x.view(-1).index_add_(0, info.bias_flat, info.bias_values)
        if info.banned_flat is None and info.vocab_mask is None:
            return x
        before = x.clone() if info.vocab_mask is not None else None
        if info.banned_flat is not None:
            x.view(-1).index_fill_(0, info.banned_flat, float("-inf"))
        if info.vocab_mask is not None:
            x.masked_fill_(~info.vocab_mask, float("-inf"))
            # A constraint that allows nothing (or only tokens banned by min_new_tokens) is a bug
            # upstream; sampling from nothing is impossible, so such a row falls back to its
            # unmasked logits (a where, not an `if`, to keep the step free of host syncs).
            dead = torch.isneginf(x).all(dim=-1, keepdim=True)
            x = torch.where(dead, before, x)
        return x

    def sample(self, logits: torch.Tensor, info: SamplingBatchInfo,
               with_logprobs: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """logits fp32 [bs, V] -> (next token ids int64 [bs], their logprobs fp32 [bs], or None without
        with_logprobs: a full-vocab log_softmax per step that nobody reads is worth skipping)."""
        if logits.dim() != 2 or logits.shape[0] != info.batch_size:
            raise ValueError(f"logits must be [{info.batch_size}, V], got {tuple(logits.shape)}")
        if logits.shape[1] != info.vocab_size:
            raise ValueError(f"logits have vocab {logits.shape[1]}, sampling info was built for {info.vocab_size}")
        logits = logits.float()
        x = self.process_logits(logits, info)

        if info.all_greedy:
            ids = x.argmax(dim=-1)
        else:
            ids = self._draw(x, info)
            if info.any_greedy:
                ids = torch.where(info.greedy, x.argmax(dim=-1), ids)
        return ids, (token_logprobs(logits, ids) if with_logprobs else None)

    def filtered_probs(self, x: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        """Unnormalized sampling weights per row: softmax(x / T) with top-k / top-p / min-p zeroed."""
        probs = torch.softmax(x / info.temperatures, dim=-1)
        if info.need_top_k or info.need_top_p:
            probs = self._truncate(probs, info)
        elif info.need_min_p:
            top = probs.max(dim=-1, keepdim=True).values
            probs = probs.masked_fill(probs < info.min_ps.unsqueeze(1) * top, 0.0)
        return probs

    def _draw(self, x: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        u = torch.rand(x.shape[0], 1, dtype=torch.float64, device=x.device,
                       generator=self._default_generator(x.device))
        if info.seed_uniforms is not None:
            u[info.seeded_rows_t, 0] = info.seed_uniforms
        # The CDF runs in vocab order for every row, whatever filters its neighbours need: a seeded
        # row's u must map to the same token alone and in any batch.
        return _inverse_cdf(self.filtered_probs(x, info), u)

    # candidates examined before falling back to a full sort when top_p needs more mass
    TOP_P_CANDIDATES = 1024

    def _candidates(self, probs: torch.Tensor, info: SamplingBatchInfo) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row, the best k probabilities (descending) with the ones top-k / top-p / min-p drop
        zeroed, and their token ids. On CPU a partial top-k instead of a full sort: a top-p row is
        exact as long as its nucleus fits in the candidates; otherwise the whole vocab is sorted."""
        vocab = probs.shape[1]
        nucleus = info.top_ps < 1.0
        kmax = info.max_top_k if info.need_top_k else 0  # host value: no device sync
        k = min(vocab, max(kmax, self.TOP_P_CANDIDATES if info.need_top_p else 0))
        if info.need_top_p and probs.device.type != "cpu":
            # On accelerators a full sort costs about a partial top-k and needs no coverage check,
            # whose host sync would stall an overlapped scheduler; on CPU sorting is ~10x dearer.
            k = vocab
            vals, idx = probs.sort(dim=-1, descending=True)
        else:
            vals, idx = probs.topk(k, dim=-1, sorted=True)
        if info.need_top_p and k < vocab:
            # a nucleus row is covered when the candidates hold >= top_p mass or its top_k binds first
            covered = (vals.sum(dim=-1) >= info.top_ps) | (info.top_ks <= k) | ~nucleus | info.greedy
            if not bool(covered.all()):
                k = vocab
                vals, idx = probs.sort(dim=-1, descending=True)
        keep = torch.ones_like(vals, dtype=torch.bool)
        if info.need_top_k:
            keep &= torch.arange(k, device=vals.device).unsqueeze(0) < info.top_ks.unsqueeze(1)
        if info.need_top_p:
            # keep a token while the mass strictly before it is below top_p (the top one always)
            keep &= (vals.cumsum(dim=-1) - vals) < info.top_ps.unsqueeze(1)
        if info.need_min_p:
            keep &= vals >= info.min_ps.unsqueeze(1) * vals[:, :1]
        return vals.masked_fill(~keep, 0.0), idx

    def _truncate(self, probs: torch.Tensor, info: SamplingBatchInfo) -> torch.Tensor:
        """top-k / top-p (and min-p on those rows) in vocab order; rows without top-k/top-p keep
        the full distribution (with min-p applied)."""
        cand, idx = self._candidates(probs, info)
        if info.need_min_p:
            full = probs.masked_fill(probs < info.min_ps.unsqueeze(1) * probs.max(dim=-1, keepdim=True).values, 0.0)
        else:
            full = probs
        truncated = torch.zeros_like(probs).scatter_(1, idx, cand)
        rows = (info.top_ks < probs.shape[1]) | (info.top_ps < 1.0)
        return torch.where(rows.unsqueeze(1), truncated, full)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the first column whose cumulative weight exceeds u * total (weights >= 0, not
    normalized). The CDF is fp64 so that tail tokens keep their probability."""
    cdf = weights.double().cumsum_(dim=-1)
    pos = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_max_(weights.shape[1] - 1)
    # u * total rounding up onto the very end could land on a zero-weight tail column
    ok = weights.gather(1, pos.unsqueeze(1)).squeeze(1) > 0
    return torch.where(ok, pos, weights.argmax(dim=-1))


# ---------------------------------------------------------------------- logprob helpers
def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[i, ids[i]] for logits [n, V], ids [n] -> fp32 [n]."""
    logits = logits.float()
    # log_softmax + gather: on CPU several times faster than a separate logsumexp
    return torch.log_softmax(logits, dim=-1).gather(1, ids.view(-1, 1).long()).squeeze(1)


def top_logprobs(
    logits: torch.Tensor, k: Union[int, Sequence[int]]
) -> list[list[tuple[float, int]]]:
    """Top-k (logprob, token_id) pairs per row of logits [n, V], best first.

    k is one int for all rows or one per row (0 = empty list for that row).
    """
    n, vocab = logits.shape
    ks = [k] * n if isinstance(k, int) else list(k)
    if len(ks) != n:
        raise ValueError(f"top_logprobs: {len(ks)} k values for {n} rows")
    kmax = min(max(ks, default=0), vocab)
    if kmax <= 0:
        return [[] for _ in range(n)]
    lp = torch.log_softmax(logits.float(), dim=-1)
    vals, idx = lp.topk(kmax, dim=-1)
    vals_l, idx_l = vals.tolist(), idx.tolist()
    return [list(zip(vals_l[i][: ks[i]], idx_l[i][: ks[i]])) for i in range(n)]
