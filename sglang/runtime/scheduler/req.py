"""Req: one generation request as the scheduler sees it, from admission to its final output.

Token bookkeeping (everything else derives from these):
    all_ids  = origin_input_ids + output_ids          the sequence so far
    kv_len   = how many leading tokens of all_ids have KV in the request's req_to_token row
    prefix_len = how many of those the radix tree owns (locked at last_node); the rest the request owns
A request is ready to decode when kv_len == len(all_ids) - 1 (only the last sampled token lacks KV).
Anything that changes output_ids behind the scheduler's back (jump-forward) must go through
`TokenProcessor.replace_output_tail` (process.py), which gives the KV back before the tokens change.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from sglang.runtime.sampling.sampling_params import SamplingParams


class FinishKind(str, enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True)
class FinishReason:
    kind: FinishKind
    matched: int | str | None = None  # stop token id or stop string
    length: Optional[int] = None  # for LENGTH: the limit that was hit
    message: Optional[str] = None  # for ABORT

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind.value, "matched": self.matched}
        if self.length is not None:
            out["length"] = self.length
        if self.message is not None:
            out["message"] = self.message
        return out


@dataclass
class TokenizedRequest:
    """What the engine hands the scheduler: validated, tokenized, one prompt, one sample."""

    rid: str
    input_ids: list[int]
    sampling_params: SamplingParams
    input_text: Optional[str] = None
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    stream: bool = False
    # images/videos (runtime/multimodal/): items with their prompt offsets, and the prompt as the radix
    # key sees it (each item's placeholder run replaced by its content-hash pad id); None: text only
    mm_items: Optional[list[Any]] = None
    key_ids: Optional[list[int]] = None


@dataclass(eq=False)  # identity semantics: requests are compared and looked up as objects
class Req:
    rid: str
    origin_input_ids: list[int]
    sampling_params: SamplingParams
    origin_input_text: Optional[str] = None
    return_logprob: bool = False
    logprob_start_len: int = 0  # absolute prompt position of the first input logprob wanted
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    stream: bool = False
    # multimodal (see TokenizedRequest): the items are kept for the request's life, so a retracted or
    # chunked prefill finds its features again; key_ids stand in for origin_input_ids in the KV sequence
    mm_items: Optional[list[Any]] = None
    key_ids: Optional[list[int]] = None

    output_ids: list[int] = field(default_factory=list)
    # memory
    req_pool_idx: Optional[int] = None
    kv_len: int = 0
    prefix_len: int = 0
    last_node: Any = None
    # this round's extend (set by the batch builder)
    extend_len: int = 0
    # life cycle
    finished_reason: Optional[FinishReason] = None
    to_abort: bool = False
    arrival: float = field(default_factory=time.monotonic)
    skipped_rounds: int = 0  # times a later request was admitted before this one (starvation guard)
    cached_tokens: int = 0
    scheduled_once: bool = False
    num_retractions: int = 0
    jump_forward_tokens: int = 0  # len(output_ids) minus the tokens sampled so far (jump-forward's net change)
    generator: Optional[torch.Generator] = None
    # logprobs (lists of (logprob | None, token_id)); top lists of [(logprob, token_id), ...] | None
    input_token_logprobs: list[tuple[Optional[float], int]] = field(default_factory=list)
    input_top_logprobs: list[Optional[list[tuple[float, int]]]] = field(default_factory=list)
    input_logprobs_done: bool = False
    output_token_logprobs: list[tuple[float, int]] = field(default_factory=list)
    output_top_logprobs: list[Optional[list[tuple[float, int]]]] = field(default_factory=list)
    # detokenization / streaming
    text_tracker: Any = None  # incremental detokenization + stop strings (runtime/detokenizer.DecodeStream)
    text: str = ""
    sent_tokens: int = 0  # output tokens already streamed
    client_text: bool = False  # its outputs carry text ids, the engine makes the text (RequestTable.client_text)
    # hooks: per-request constraint state (runtime/constrained/); see process.py for the calls
    constraint: Any = None

    # -- derived ------------------------------------------------------------------------------------
    @property
    def all_ids(self) -> list[int]:
        """The sequence as the KV cache and the model see it: with images, the prompt's placeholder runs
        carry per-image pad ids (radix key), so the same image shares its prefix KV and another never
        does. Penalties, logprobs and detokenization read origin_input_ids (real vocabulary ids)."""
        prompt = self.key_ids if self.key_ids is not None else self.origin_input_ids
        return prompt + self.output_ids

    @property
    def seq_len(self) -> int:
        return len(self.origin_input_ids) + len(self.output_ids)

    @property
    def completion_tokens_wo_jump_forward(self) -> int:
        """Tokens sampled (a rolled-back one still counts): derived, so a decode step only appends."""
        return len(self.output_ids) - self.jump_forward_tokens

    @property
    def finished(self) -> bool:
        return self.finished_reason is not None

    @property
    def wants_input_logprobs(self) -> bool:
        return self.return_logprob and not self.input_logprobs_done

    def max_prefix_len(self) -> int:
        """How much of all_ids may come from the cache: never all of it (the last token's logits are
        needed), and not past the first position whose input logprob must be computed."""
        limit = self.seq_len - 1
        if self.wants_input_logprobs:
            # the logprob of token p comes from the logits at p - 1, which must be computed here
            limit = min(limit, max(self.logprob_start_len - 1, 0))
        return max(limit, 0)

    def remaining_new_tokens(self) -> int:
        return max(self.sampling_params.max_new_tokens - len(self.output_ids), 0)

    @classmethod
    def from_tokenized(cls, t: TokenizedRequest) -> "Req":
        start = t.logprob_start_len
        if start is None or start < 0:
            start = len(t.input_ids)  # -1: output logprobs only
        return cls(
            rid=t.rid,
            origin_input_ids=list(t.input_ids),
            sampling_params=t.sampling_params,
            origin_input_text=t.input_text,
            return_logprob=t.return_logprob,
            logprob_start_len=min(start, len(t.input_ids)),
            top_logprobs_num=t.top_logprobs_num or 0,
            return_text_in_logprobs=t.return_text_in_logprobs,
            stream=t.stream,
            mm_items=t.mm_items or None,
            key_ids=list(t.key_ids) if t.key_ids is not None else None,
            input_logprobs_done=not t.return_logprob or start >= len(t.input_ids),
        )
