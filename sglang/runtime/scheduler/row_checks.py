"""Which rows of a sampling step need more than an append: the finish checks as array operations.

A decode step of hundreds of rows must not pay a Python function per row. `RowChecks` is built once
per batch (the same requests step after step) with each row's stop ids (stop_token_ids, and the EOS
ids unless ignore_eos), min_new_tokens and max_new_tokens, and whether the row always needs the full
per-row path (logprobs, a constraint, stop strings that must see every token's text); streaming rows
only get their partial output sent (TokenProcessor.process).
`full_path_mask(ids)` then finds, with a handful of numpy operations, the rows whose new token may end
the request or that need the full path; every other row only gets its token appended.

The output lengths are read from the requests each step (not counted here), so the checks cannot drift
from the requests whatever happened between two steps.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sglang.runtime.scheduler.req import Req


class RowChecks:
    def __init__(self, reqs: Sequence[Req], eos_ids: Sequence[int]) -> None:
        self.reqs = list(reqs)  # held so that the ids in `key` stay unique while this is cached
        self.key = tuple(map(id, reqs))
        stops = [self._stop_ids(r, eos_ids) for r in reqs]
        width = max((len(s) for s in stops), default=0)
        # -1 pads: never a sampled id
        self.stop_ids = np.full((len(reqs), max(width, 1)), -1, dtype=np.int64)
        for i, s in enumerate(stops):
            self.stop_ids[i, : len(s)] = s
        self.min_new = np.array([r.sampling_params.min_new_tokens for r in reqs], dtype=np.int64)
        self.max_new = np.array([r.sampling_params.max_new_tokens for r in reqs], dtype=np.int64)
        self.always = np.array([self._needs_full_path(r) for r in reqs], dtype=bool)
        # streaming rows send an output after each token, even on the append-only path
        self.stream = np.array([bool(r.stream) for r in reqs], dtype=bool)
        self.any_stream = bool(self.stream.any())

    @staticmethod
    def _stop_ids(r: Req, eos_ids: Sequence[int]) -> list[int]:
        sp = r.sampling_params
        ids = set(sp.stop_token_ids)
        if not sp.ignore_eos:
            ids.update(eos_ids)
        return sorted(ids)

    @staticmethod
    def _needs_full_path(r: Req) -> bool:
        tracker = r.text_tracker
        return bool(r.return_logprob or r.constraint is not None
                    or (tracker is not None and tracker.needs_every_token))

    def full_path_mask(self, ids: np.ndarray) -> np.ndarray:
        """bool [bs]: rows whose token `ids[i]`, once appended, may finish the request, or that always
        take the full path. Lengths are the requests' current ones, before the append."""
        n = np.fromiter((len(r.output_ids) for r in self.reqs), dtype=np.int64, count=len(self.reqs)) + 1
        stop_hit = (ids[:, None] == self.stop_ids).any(axis=1) & (n >= self.min_new)
        return stop_hit | (n >= self.max_new) | self.always
