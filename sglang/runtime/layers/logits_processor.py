"""From final hidden states to what the scheduler needs: next-token logits of each request and, when asked,
log-probabilities of the prompt tokens (input logprobs) with their top-k alternatives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from sglang.runtime.forward_batch import ForwardBatch

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

    def _logits(self, hidden: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
        return torch.matmul(hidden, lm_head.t()).float()

    def __call__(self, hidden: torch.Tensor, lm_head: torch.Tensor, batch: ForwardBatch) -> LogitsOutput:
        if batch.mode.is_decode():
            return LogitsOutput(self._logits(hidden, lm_head))
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
        bs = len(ext_lens)
        lp_starts = batch.extend_logprob_start_lens_cpu
        if lp_starts is None or len(lp_starts) != bs:
            raise ValueError("return_logprob needs extend_logprob_start_lens_cpu with one entry per request")
        top_ks = batch.top_logprobs_nums or [0] * bs
        token_lps: list[Optional[torch.Tensor]] = []
        top_lps: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = []
        for i in range(bs):
            st, e, s, k = starts[i], ext_lens[i], max(int(lp_starts[i]), 0), int(top_ks[i] or 0)
            if s >= e:
                token_lps.append(None)
                top_lps.append(None)
                continue
            lps, vals, ids = [], [], []
            # row p predicts the new token at p + 1; the last row predicts beyond the chunk
            for c0 in range(st + s, st + e - 1, _ROWS_PER_CHUNK):
                c1 = min(c0 + _ROWS_PER_CHUNK, st + e - 1)
                logprobs = torch.log_softmax(self._logits(hidden[c0:c1], lm_head), dim=-1)
                nxt = batch.input_ids[c0 + 1 : c1 + 1]
                lps.append(logprobs.gather(1, nxt[:, None].long()).squeeze(1))
                if k > 0:
                    v, ix = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
                    vals.append(v)
                    ids.append(ix)
            dev = hidden.device
            token_lps.append(torch.cat(lps) if lps else torch.empty(0, dtype=torch.float32, device=dev))
            if k > 0:
                kk = min(k, self.vocab_size)
                top_lps.append(
                    (torch.cat(vals), torch.cat(ids))
                    if vals
                    else (torch.empty(0, kk, device=dev), torch.empty(0, kk, dtype=torch.int64, device=dev))
                )
            else:
                top_lps.append(None)
        out.input_token_logprobs = token_lps
        out.input_top_logprobs = top_lps


def _extend_lens_cpu(batch: ForwardBatch) -> list[int]:
    if batch.extend_seq_lens_cpu is not None:
        return [int(n) for n in batch.extend_seq_lens_cpu]
    if batch.extend_seq_lens is None:
        raise ValueError("EXTEND batch without extend_seq_lens")
    return [int(n) for n in batch.extend_seq_lens.tolist()]
