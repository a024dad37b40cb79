"""Input (prompt) logprobs of a request, stitched across prefill chunks.

The model's LogitsOutput gives, per request of an EXTEND batch, the logprob of each new token from
the row before it (rows from `extend_logprob_start_lens_cpu`); the chunk's last row predicts the first
token of the NEXT chunk, so that one entry is computed here from next_token_logits. Position 0 of a
prompt has no context: its entry is (None, token).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from sglang.runtime.sampling.sampler import top_logprobs
from sglang.runtime.scheduler.req import Req


def logprob_start(req: Req) -> int:
    """Position (within this round's new tokens) of the first logits row whose input logprob is
    wanted; extend_len means none."""
    if not req.wants_input_logprobs:
        return req.extend_len
    first_logit_pos = max(req.logprob_start_len, 1) - 1
    return min(max(first_logit_pos - req.kv_len, 0), req.extend_len)


def host_token_logprobs(out: Any) -> list[Optional[list[float]]]:
    """Every request's `out.input_token_logprobs` as floats, copied to the host in ONE transfer: a
    `.tolist()` per request would wait on the device once per request (a select's batch has thousands)."""
    tensors = out.input_token_logprobs or []
    present = [t for t in tensors if t is not None]
    flat = torch.cat(present).tolist() if present else []
    host: list[Optional[list[float]]] = []
    pos = 0
    for t in tensors:
        if t is None:
            host.append(None)
            continue
        host.append(flat[pos:pos + t.numel()])
        pos += t.numel()
    return host


def record_input_logprobs(req: Req, row: int, start: int, out: Any, logits: torch.Tensor,
                          host: Optional[list[Optional[list[float]]]] = None) -> None:
    """Append this round's input logprobs of req (LogitsOutput: row p predicts new token p+1); `host`:
    `host_token_logprobs(out)`, computed once for the batch."""
    if not req.wants_input_logprobs:
        return
    count = req.extend_len - start  # logits rows from `start` to the end of this chunk
    k = req.top_logprobs_num
    if req.kv_len == 0 and req.logprob_start_len == 0:
        req.input_token_logprobs.append((None, req.origin_input_ids[0]))
        req.input_top_logprobs.append(None)
    if count > 1:
        vals = host[row] if host is not None else out.input_token_logprobs[row].tolist()
        first_tok = req.kv_len + start + 1
        req.input_token_logprobs.extend(zip(vals, req.origin_input_ids[first_tok : first_tok + len(vals)]))
        if k > 0:
            tv, ti = out.input_top_logprobs[row]
            req.input_top_logprobs.extend(list(zip(v, t)) for v, t in zip(tv.tolist(), ti.tolist()))
    # chunk boundary: the chunk's last row predicts the first token of the next chunk
    nxt = req.kv_len + req.extend_len
    if count > 0 and nxt < len(req.origin_input_ids):
        tok = req.origin_input_ids[nxt]
        lp = torch.log_softmax(logits[row].float(), dim=-1)
        req.input_token_logprobs.append((float(lp[tok]), tok))
        if k > 0:
            req.input_top_logprobs.append(top_logprobs(logits[row : row + 1], k)[0])
