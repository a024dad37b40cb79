"""From final hidden states to what the scheduler needs: next-token logits of each request and, when asked,
log-probabilities of the prompt tokens (input logprobs) with their top-k alternatives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.scheduler.batch import to_device

# Prompt rows are projected onto the vocabulary this many at a time, so a long prompt with logprobs
# does not materialise a [tokens, vocab] fp32 matrix at once.
_ROWS_PER_CHUNK = 1024


@dataclass
class LogitsOutput:
    """`next_token_logits`: fp32 [bs, vocab], the logits at each request's last new token.

    When `batch.return_logprob` (EXTEND), per request i with s = extend_logprob_start_lens_cpu[i] and
    e = extend_seq_lens_cpu[i]:
      input_token_logprobs[i]: fp32 [max(e - 1 - s, 0)], entry j = log p(new token s+j+1 | tokens up to s+j);
          None when s >= e (no input logprobs wanted from this chunk).
      input_top_logprobs[i]: (values fp32 [n, k], token ids int64 [n, k]) at the same n rows, with
          k = batch.top_logprobs_nums[i]; None when k == 0 or s >= e.
    Both lists are None when the batch did not ask for logprobs.
    """

    next_token_logits: torch.Tensor
    input_token_logprobs: Optional[list[Optional[torch.Tensor]]] = None
    input_top_logprobs: Optional[list[Optional[tuple[torch.Tensor, torch.Tensor]]]] = None


class LogitsProcessor:
    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def _logits(self, hidden: torch.Tensor, lm_head: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        logits = torch.matmul(hidden, lm_head.t())
        if out is None:
            return logits.float()
        return out.copy_(logits)  # the same conversion, into the caller's buffer

    def __call__(self, hidden: torch.Tensor, lm_head: torch.Tensor, batch: ForwardBatch,
                 out: Optional[torch.Tensor] = None) -> LogitsOutput:
        """out: an fp32 [bs, vocab] buffer for a DECODE batch's logits (CUDA graphs of every batch size
        share one, instead of each keeping its own output alive)."""
        if batch.mode.is_decode():
            return LogitsOutput(self._logits(hidden, lm_head, out))
        ext_lens = _extend_lens_cpu(batch)
        starts, acc = [], 0
        for n in ext_lens:
            starts.append(acc)
            acc += n
        if batch.extend_start_loc is not None and batch.extend_seq_lens is not None:
            # from the batch's device columns: a torch.tensor(..., device="cuda") from a host list
            # would wait for the whole forward queued before it
            last_rows = (batch.extend_start_loc + batch.extend_seq_lens - 1).to(hidden.device)
        else:
            last_rows = torch.tensor([st + n - 1 for st, n in zip(starts, ext_lens)], device=hidden.device)
        out = LogitsOutput(self._logits(hidden.index_select(0, last_rows), lm_head))
        if batch.return_logprob:
            self._input_logprobs(hidden, lm_head, batch, starts, ext_lens, out)
        return out

    def _input_logprobs(
        self,
        hidden: torch.Tensor,
        lm_head: torch.Tensor,
        batch: ForwardBatch,
        starts: list[int],
        ext_lens: list[int],
        out: LogitsOutput,
    ) -> None:
        """Every request's wanted rows projected together, _ROWS_PER_CHUNK at a time, then split per
        request: a batch of many short scoring requests (a select's choices) costs a few kernel launches,
        not a handful per request."""
        bs = len(ext_lens)
        lp_starts = batch.extend_logprob_start_lens_cpu
        if lp_starts is None or len(lp_starts) != bs:
            raise ValueError("return_logprob needs extend_logprob_start_lens_cpu with one entry per request")
        top_ks = [int(k or 0) for k in (batch.top_logprobs_nums or [0] * bs)]
        # row p predicts the new token at p + 1; the last row predicts beyond the chunk
        wanted = [max(int(s), 0) < e for s, e in zip(lp_starts, ext_lens)]
        first = [st + max(int(s), 0) for st, s in zip(starts, lp_starts)]
        counts = [max(e - 1 - max(int(s), 0), 0) if w else 0 for s, e, w in zip(lp_starts, ext_lens, wanted)]
        rows = to_device(_row_indices(first, counts), hidden.device)  # (pinned: the forward queued before it keeps running)
        kmax = max((k for k, w in zip(top_ks, wanted) if w), default=0)
        lps, vals, ids = [], [], []
        for c0 in range(0, rows.numel(), _ROWS_PER_CHUNK):
            chunk = rows[c0 : c0 + _ROWS_PER_CHUNK]
            # log p = logit - logsumexp(logits): only the gathered entries are normalized, so no second
            # [rows, vocab] matrix (a full log_softmax) is written and read again
            logits = self._logits(hidden.index_select(0, chunk), lm_head)
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            nxt = batch.input_ids.index_select(0, chunk + 1)
            lps.append((logits.gather(1, nxt[:, None].long()) - lse).squeeze(1))
            if kmax > 0:
                v, ix = logits.topk(min(kmax, logits.shape[-1]), dim=-1)
                vals.append(v - lse)
                ids.append(ix)
        dev = hidden.device
        token_all = torch.cat(lps) if lps else torch.empty(0, dtype=torch.float32, device=dev)
        per_req = torch.split(token_all, counts)
        out.input_token_logprobs = [t if w else None for t, w in zip(per_req, wanted)]
        if kmax > 0:
            kk = min(kmax, self.vocab_size)
            v_all = torch.cat(vals) if vals else torch.empty(0, kk, device=dev)
            i_all = torch.cat(ids) if ids else torch.empty(0, kk, dtype=torch.int64, device=dev)
            out.input_top_logprobs = [
                (v[:, : min(k, kk)], ix[:, : min(k, kk)]) if w and k > 0 else None
                for v, ix, k, w in zip(torch.split(v_all, counts), torch.split(i_all, counts), top_ks, wanted)
            ]
        else:
            out.input_top_logprobs = [None] * bs


def _row_indices(first: list[int], counts: list[int]) -> torch.Tensor:
    """concat(range(f, f + n) for f, n in zip(first, counts)) as an int64 CPU tensor, without a Python loop."""
    n = torch.tensor(counts, dtype=torch.int64)
    total = int(n.sum()) if counts else 0
    if total == 0:
        return torch.empty(0, dtype=torch.int64)
    offsets = torch.cumsum(n, 0) - n  # where each request's rows begin in the output
    return torch.repeat_interleave(torch.tensor(first, dtype=torch.int64) - offsets, n) + torch.arange(total)


def _extend_lens_cpu(batch: ForwardBatch) -> list[int]:
    if batch.extend_seq_lens_cpu is not None:
        return [int(n) for n in batch.extend_seq_lens_cpu]
    if batch.extend_seq_lens is None:
        raise ValueError("EXTEND batch without extend_seq_lens")
    return [int(n) for n in batch.extend_seq_lens.tolist()]
