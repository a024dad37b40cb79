"""Per-request constraint cursor (`ConstraintState`) and jump-forward with re-tokenization.

Interface used by the scheduler (one object per constrained request, not thread-safe):

- `fill_mask(row)`: write the allowed tokens of the current state into `row` (torch.bool [V'], True =
  allowed; V' may exceed the tokenizer's size, the tail is set False). EOS is allowed only when the text
  so far is a full match.
- `advance(token_id)`: consume a sampled token (EOS marks the constraint finished). A token the mask did
  not allow raises `ConstraintViolation`.
- `is_accepting()`: the text so far fully matches the pattern.
- `must_stop()`: nothing but EOS can follow (accepting, no continuation) → the request should finish with
  finish_reason "stop" without sampling.
- `jump_forward(output_ids, tokenizer)` → `JumpForward | None`: when the pattern forces the next
  characters, the forced text is appended at once. The last few output tokens plus the forced text are
  re-encoded by the tokenizer (so `"` + `name` becomes `"name` as the tokenizer would write it), and the
  result says how many trailing output tokens to drop (`rollback`) and which ids to append
  (`new_ids`); their bytes always equal the dropped tokens' bytes + the forced bytes, so the text never
  changes. The call does not mutate; `apply_jump_forward(jf)` commits it once the caller has applied it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from sglang.runtime.constrained.errors import ConstraintViolation
from sglang.runtime.constrained.token_fsm import TokenFSM
from sglang.runtime.constrained.vocab import TokenVocab


@dataclass(frozen=True)
class JumpForward:
    rollback: int  # trailing output tokens to remove (their KV entries too)
    new_ids: tuple[int, ...]  # ids to append (to prefill, not decode)
    new_state: int  # constraint state after the appended ids
    forced: bytes  # the forced bytes this jump adds to the text
    retokenized: int  # trailing output tokens whose text was re-encoded with the forced bytes (>= rollback)


def consume_eos(state: Any, token_id: int, what: str) -> bool:
    """The EOS/finished gate every constraint state's `advance` starts with: a token after the end is a
    violation; EOS finishes the constraint (only where `what` — pattern or grammar — is complete).
    Returns True when `token_id` was an EOS and has been consumed."""
    if state.finished:
        raise ConstraintViolation(f"token {token_id} fed after the constraint finished")
    if token_id not in state._eos:
        return False
    if not state.is_accepting():
        raise ConstraintViolation(f"EOS token {token_id} fed before the {what} is complete")
    state.finished = True
    return True


class ConstraintState:
    """Cursor of one request over a shared TokenFSM."""

    __slots__ = ("fsm", "vocab", "state", "finished", "_eos")

    def __init__(self, fsm: TokenFSM, vocab: TokenVocab) -> None:
        if fsm.fingerprint != vocab.fingerprint:
            raise ValueError("constraint table was built for a different tokenizer (fingerprint mismatch)")
        self.fsm = fsm
        self.vocab = vocab
        self.state = fsm.start
        self.finished = False
        self._eos = frozenset(fsm.eos_token_ids)

    # ----- masks -----
    def fill_mask(self, row: torch.Tensor) -> None:
        if self.finished:
            row.fill_(False)
            return
        self.fsm.fill_mask(self.state, row)

    def allowed_token_ids(self) -> np.ndarray:
        return self.fsm.allowed_ids(self.state)

    def is_allowed(self, token_id: int) -> bool:
        return not self.finished and self.fsm.is_allowed(self.state, int(token_id))

    # ----- stepping -----
    def advance(self, token_id: int) -> None:
        token_id = int(token_id)
        if consume_eos(self, token_id, "pattern"):
            return
        if not self.fsm.is_allowed(self.state, token_id):
            raise ConstraintViolation(
                f"token {token_id} ({self.vocab.token_bytes[token_id]!r}) is not allowed by pattern "
                f"{self.fsm.pattern[:80]!r} in state {self.state}")
        self.state = self.fsm.walk(self.state, self.vocab.token_bytes[token_id])

    def is_accepting(self) -> bool:
        return bool(self.fsm.accepting[self.state])

    def must_stop(self) -> bool:
        if self.finished:
            return True
        r = int(self.fsm.row_of[self.state])
        return r < 0 or (self.is_accepting() and int(self.fsm.n_allowed[r]) == 0)

    def copy(self) -> "ConstraintState":
        other = ConstraintState.__new__(ConstraintState)
        other.fsm, other.vocab, other.state, other.finished = self.fsm, self.vocab, self.state, self.finished
        other._eos = self._eos
        return other

    # ----- jump-forward -----
    def jump_forward(self, output_ids: Sequence[int], tokenizer: Any, window: int = 6,
                     min_bytes: int = 1) -> Optional[JumpForward]:
        """Forced continuation of the current state, re-tokenized with the last `window` output tokens.

        `output_ids` are this request's generated ids so far (never the prompt, which is not rewritten)."""
        if self.finished:
            return None
        forced = self.fsm.forced_bytes(self.state)
        if len(forced) < min_bytes:
            return None
        tb = self.vocab.token_bytes
        w = min(window, len(output_ids))
        # start the window at a character boundary (never inside a UTF-8 sequence)
        while w < len(output_ids) and tb[output_ids[len(output_ids) - w]][:1] and \
                0x80 <= tb[output_ids[len(output_ids) - w]][0] < 0xC0:
            w += 1
        tail = [int(t) for t in output_ids[len(output_ids) - w:]] if w else []
        if any(t in self._eos or not tb[t] for t in tail):
            return None
        prefix = b"".join(tb[t] for t in tail)
        span = prefix + forced
        text, forced = _decodable(span, len(prefix))
        if text is None or not forced:
            return None
        new = list(tokenizer.encode(text, add_special_tokens=False))
        if self.vocab.decode_bytes(new) != prefix + forced or any(not tb[t] for t in new):
            return None  # the tokenizer would alter the text (normalization, special tokens): do not jump
        k = 0
        while k < len(tail) and k < len(new) and tail[k] == new[k]:
            k += 1
        if k == len(new):
            return None
        new_state = self.fsm.walk(self.state, forced)
        if new_state == 0 or self.fsm.row_of[new_state] < 0:
            return None
        return JumpForward(rollback=len(tail) - k, new_ids=tuple(new[k:]), new_state=new_state, forced=forced,
                           retokenized=len(tail))

    def apply_jump_forward(self, jf: JumpForward) -> None:
        self.state = jf.new_state


def _decodable(span: bytes, prefix_len: int) -> tuple[Optional[str], bytes]:
    """Decode `span`, dropping an incomplete UTF-8 character at its end (which must lie in the forced
    part); returns (text, forced bytes kept)."""
    end = len(span)
    for _ in range(4):
        try:
            return span[:end].decode("utf-8"), span[prefix_len:end]
        except UnicodeDecodeError as exc:
            if exc.start < prefix_len or end - 1 < prefix_len:
                return None, b""
            end = exc.start
            if end <= prefix_len:
                return None, b""
    return None, b""
