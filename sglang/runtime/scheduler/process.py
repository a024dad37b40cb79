"""After a forward: sampled tokens → request updates, stop checks, constraints, jump-forward, outputs.

`TokenProcessor.process` is the host side of a sampling step, row by row: append the token, its
logprobs, advance the constraint, check the stop conditions (finishing through the RequestTable and
leaving the running batch), apply a constraint's jump-forward, stream. It is the hot loop of a decode
step (hundreds of rows), so a plain row costs an append and a few comparisons, a streaming one an
output dict more: detokenization runs per token only for rows whose stop strings need the text; the
others' text is made in bulk when an output goes out (RequestTable.sync_text), or, in the engine's
schedulers, not here at all (the output carries ids: RequestTable.client_text). `sample_and_process` runs the
BatchSampler first, for the synchronous paths; overlap decoding samples and processes a step apart.

Constraint hook (set per request by the engine's constraint factory): `fill_vocab_mask(row: bool[V])`,
`advance(token_id)`, `is_terminated() -> bool`, optionally `jump_forward() -> (rollback_k, new_ids) | None`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from sglang.runtime.detokenizer import DecodeStream
from sglang.runtime.scheduler.cache_manager import CacheManager
from sglang.runtime.scheduler.decode import DecodeManager
from sglang.runtime.scheduler.prefill import PrefillManager
from sglang.runtime.scheduler.req import FinishKind, FinishReason, Req
from sglang.runtime.scheduler.request_table import RequestTable
from sglang.runtime.scheduler.row_checks import RowChecks
from sglang.runtime.scheduler.sample import BatchSampler
from sglang.runtime.scheduler.step_timer import StepTimer


class TokenProcessor:
    def __init__(self, sampler: BatchSampler, cache: CacheManager, table: RequestTable, prefill: PrefillManager,
                 decode: DecodeManager, tokenizer: Any, timer: Optional[StepTimer] = None) -> None:
        self.sampler = sampler
        self.cache = cache
        self.table = table
        self.prefill = prefill
        self.decode = decode
        self.tokenizer = tokenizer
        self.timer = timer or StepTimer()
        self._checks: Optional[RowChecks] = None  # the last batch's, reused while its rows are the same

    def sample_and_process(self, reqs: list[Req], logits: torch.Tensor) -> None:
        ids, lps = self.sampler.sample(reqs, logits)
        self.timer.device_end()
        with self.timer.blocked():
            ids_l = ids.tolist()
        tops = self.sampler.top_logprobs(reqs, logits)
        self.process(reqs, ids_l, None if lps is None else lps.tolist(), tops)

    def process(self, reqs: list[Req], ids: list[int], lps: Optional[list[float]], tops: Optional[list]) -> None:
        """Host side of a sampling step (row i of ids/lps/tops belongs to reqs[i]; lps may be None when
        no row returns logprobs). RowChecks picks, with array operations, the rows that may finish or
        need more than an append; the others get their token appended and nothing else (their text
        is made in bulk when an output goes out: RequestTable.sync_text)."""
        checks = self._checks
        if checks is None or checks.key != tuple(map(id, reqs)):
            checks = self._checks = RowChecks(reqs, self.sampler.eos_ids)
        full = checks.full_path_mask(np.asarray(ids, dtype=np.int64))
        for r, tok, slow in zip(reqs, ids, full.tolist()):
            if not slow and r.finished_reason is None:  # (finished: aborted meanwhile)
                r.output_ids.append(tok)
        eos = self.sampler.eos_ids
        for i in np.flatnonzero(full).tolist():
            self._process_row(reqs[i], ids[i], None if lps is None else lps[i], tops[i] if tops else None, eos)
        if checks.any_stream:  # streaming rows that only got their token: their partial outputs
            for i in np.flatnonzero(checks.stream & ~full).tolist():
                self.table.emit(reqs[i])

    def _process_row(self, r: Req, tok: int, lp: Optional[float], top: Optional[list], eos: tuple[int, ...]) -> None:
        """The full path for one row: logprobs, constraint, finish checks, jump-forward, streaming."""
        if r.finished_reason is not None:  # aborted meanwhile
            return
        r.output_ids.append(tok)
        if r.return_logprob:
            r.output_token_logprobs.append((lp, tok))
            if r.top_logprobs_num > 0:
                r.output_top_logprobs.append(top if top is not None else [])
        constraint = r.constraint
        if constraint is not None:
            constraint.advance(tok)
        reason = self._finish_reason(r, tok, eos, r.client_text)
        if reason is not None:
            self.decode.remove(r)
            self.table.finish(r, reason)
            return
        if constraint is not None and hasattr(constraint, "jump_forward"):
            jump = constraint.jump_forward()
            if jump:
                self.replace_output_tail(r, *jump)
        if r.stream:
            self.table.emit(r)

    @staticmethod
    def _finish_reason(r: Req, tok: int, eos: tuple[int, ...], client_text: bool = False) -> Optional[FinishReason]:
        """Stop token / EOS, then stop strings (on the detokenized text), then length, then the
        constraint. A stop token's own text is not part of the output unless no_stop_trim (client_text:
        the engine makes the text, RequestTable trims the ids it hands off)."""
        sp, stream = r.sampling_params, r.text_tracker
        n = len(r.output_ids)
        if n >= sp.min_new_tokens and (tok in sp.stop_token_ids or (not sp.ignore_eos and tok in eos)):
            if stream is not None and not sp.no_stop_trim and not client_text:
                stream.catch_up(r.output_ids, n - 1)
                stream.skip()
            return FinishReason(FinishKind.STOP, matched=tok)
        if stream is not None and stream.needs_every_token:
            matched = stream.catch_up(r.output_ids)
            if matched is not None:
                return FinishReason(FinishKind.STOP, matched=matched)
        if n >= sp.max_new_tokens:
            return FinishReason(FinishKind.LENGTH, length=sp.max_new_tokens)
        if r.constraint is not None and r.constraint.is_terminated():
            return FinishReason(FinishKind.STOP)
        return None

    def replace_output_tail(self, req: Req, rollback: int, new_ids: list[int]) -> None:
        """Jump-forward: drop the last `rollback` output tokens, append `new_ids` (not counted as
        sampled). The request re-extends the new tokens from the cache in a later prefill round."""
        if rollback < 0 or rollback > len(req.output_ids):
            raise ValueError(f"cannot roll back {rollback} of {len(req.output_ids)} output tokens")
        self.decode.remove(req)
        self.cache.release(req)  # computed tokens go to the cache; the common prefix is reused
        del req.output_ids[len(req.output_ids) - rollback :]
        if req.return_logprob:
            del req.output_token_logprobs[len(req.output_ids) :]
            del req.output_top_logprobs[len(req.output_ids) :]
        req.output_ids.extend(new_ids)
        req.jump_forward_tokens += len(new_ids) - rollback  # not sampled; the rolled-back ones were
        req.text_tracker = DecodeStream(self.tokenizer, req.sampling_params, req.origin_input_ids)
        matched = req.text_tracker.catch_up(req.output_ids)
        reason = None
        if matched is not None:  # the jumped-over text completed a stop string
            reason = FinishReason(FinishKind.STOP, matched=matched)
        elif len(req.output_ids) >= req.sampling_params.max_new_tokens:
            reason = FinishReason(FinishKind.LENGTH, length=req.sampling_params.max_new_tokens)
        if reason is not None:
            self.table.finish(req, reason)  # already out of the running batch (removed above)
        else:
            self.prefill.requeue(req)
