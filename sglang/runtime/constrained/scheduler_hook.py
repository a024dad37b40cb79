"""The scheduler's constrained-decoding hook (see runtime/scheduler/scheduler.py's docstring).

`make_constraint_factory(tokenizer, vocab_size, server_args)` (called by the Engine) returns a factory:
- `factory.prepare(sampling_params)` at admission, in the caller's thread: converts and compiles the
  constraint (through the cache), so a bad regex/schema/grammar is a ValueError before any output and
  the scheduler thread never compiles;
- `factory(req)` → a per-request adapter or None, with the scheduler's method names
  (`fill_vocab_mask`, `advance`, `is_terminated`, `jump_forward() -> (rollback, new_ids) | None`).
Jump-forward is off with ServerArgs.disable_regex_jump_forward.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

import torch

from sglang.runtime.constrained.budget import ADMISSION_TIME_S, DEFAULT_MEM_BYTES, ensure_budget
from sglang.runtime.constrained.api import ConstraintSpec, build_constraint_from_sampling_params
from sglang.runtime.constrained.cache import ConstraintCache, get_default_cache
from sglang.runtime.constrained.errors import ConstraintViolation
from sglang.runtime.constrained.state import ConstraintState
from sglang.runtime.constrained.vocab import TokenVocab, vocab_from_tokenizer

logger = logging.getLogger(__name__)


class RequestConstraint:
    """Adapter between one request and its ConstraintState."""

    def __init__(self, state: ConstraintState, req: Any, tokenizer: Any, jump_forward: bool) -> None:
        self.state = state
        self.req = req
        self.tokenizer = tokenizer
        self.jump_enabled = jump_forward
        self.violated = False
        self.num_jumps = 0

    def fill_vocab_mask(self, row: torch.Tensor) -> None:
        self.state.fill_mask(row)

    def advance(self, token_id: int) -> None:
        try:
            self.state.advance(token_id)
        except ConstraintViolation as exc:  # a mask bug must not kill the scheduler thread
            logger.error("request %s: %s", getattr(self.req, "rid", "?"), exc)
            self.violated = True

    def is_terminated(self) -> bool:
        return self.violated or self.state.must_stop()

    def jump_forward(self) -> Optional[tuple[int, list[int]]]:
        if not self.jump_enabled or self.violated:
            return None
        jf = self.state.jump_forward(self.req.output_ids, self.tokenizer)
        if jf is None:
            return None
        self.state.apply_jump_forward(jf)
        self.num_jumps += 1
        return jf.rollback, list(jf.new_ids)


class ConstraintFactory:
    def __init__(self, tokenizer: Any, vocab_size: int, server_args: Any, cache: Optional[ConstraintCache] = None) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.jump_forward = not getattr(server_args, "disable_regex_jump_forward", False)
        self.cache = cache or get_default_cache()
        self._vocab: Optional[TokenVocab] = None
        self._specs: dict[tuple[str, str], ConstraintSpec] = {}
        self._lock = threading.Lock()

    @property
    def vocab(self) -> TokenVocab:
        with self._lock:
            if self._vocab is None:
                self._vocab = vocab_from_tokenizer(self.tokenizer)
            return self._vocab

    def _spec(self, sp: Any) -> Optional[ConstraintSpec]:
        c = getattr(sp, "constraint", None)
        if c is None:
            return None
        spec = self._specs.get(c)
        if spec is None:
            spec = build_constraint_from_sampling_params(sp)
            if spec is not None:
                with self._lock:
                    if len(self._specs) > 4096:
                        self._specs.clear()
                    self._specs[c] = spec
        return spec

    def prepare(self, sp: Any) -> None:
        """Validate and compile the request's constraint (raises ValueError naming the field), under one
        memory and time budget for the whole compile (budget.py: a CompileBudgetError past it)."""
        with ensure_budget(DEFAULT_MEM_BYTES, ADMISSION_TIME_S):
            self._prepare(sp)

    def _prepare(self, sp: Any) -> None:
        spec = self._spec(sp)
        if spec is not None and spec.grammar is not None:  # non-regular grammar: exact CFG engine
            from sglang.runtime.constrained.cfg_state import cfg_index

            if self.vocab.size > self.vocab_size:
                raise ValueError(f"tokenizer has {self.vocab.size} tokens but the model only {self.vocab_size}")
            cfg_index(spec.grammar, self.vocab)
        elif spec is not None:
            fsm = self.cache.get(spec.regex, self.vocab)
            if fsm.vocab_size > self.vocab_size:
                raise ValueError(f"tokenizer has {fsm.vocab_size} tokens but the model only {self.vocab_size}")

    def __call__(self, req: Any) -> Optional[RequestConstraint]:
        spec = self._spec(req.sampling_params)
        if spec is None:
            return None
        if spec.grammar is not None:
            from sglang.runtime.constrained.cfg_state import CFGConstraintState, cfg_index

            state: Any = CFGConstraintState(cfg_index(spec.grammar, self.vocab))
        else:
            state = ConstraintState(self.cache.get(spec.regex, self.vocab), self.vocab)
        return RequestConstraint(state, req, self.tokenizer, self.jump_forward)


def make_constraint_factory(tokenizer: Any, vocab_size: int, server_args: Any) -> ConstraintFactory:
    return ConstraintFactory(tokenizer, vocab_size, server_args)
