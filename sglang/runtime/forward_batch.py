"""ForwardBatch: the tensors one model forward needs, built by the scheduler, read by the model and
the attention backends. It is the contract between scheduling (which requests, which KV slots) and
execution (model + kernels).

Layout ("ragged", as RadixAttention): the new tokens of all requests are concatenated.
For request i in an EXTEND batch:
    prefix_len  = extend_prefix_lens[i]   tokens already in the KV pool (cached prefix)
    extend_len  = extend_seq_lens[i]      new tokens computed in this forward
    seq_len     = seq_lens[i] = prefix_len + extend_len
    req_to_token[req_pool_indices[i], :seq_len] are the KV slots of the whole sequence; the last
    extend_len of them equal out_cache_loc[extend_start_loc[i] : extend_start_loc[i] + extend_len].
A DECODE batch is the special case extend_len == 1 for every request (extend_* fields may be None).

Shared prefixes (DECODE only, optional): `prefix_groups` names rows that hold the SAME KV slots for
their first `shared_lens[g]` positions (the radix cache's copy of a common prefix), so that an attention
backend may read that KV once per group instead of once per row (cascade decode). Backends that do not
use it ignore it; the result is the same either way.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch

if TYPE_CHECKING:
    from sglang.runtime.mem_cache.memory_pool import TokenKVPool


class ForwardMode(enum.IntEnum):
    EXTEND = 1  # prefill, possibly on top of a cached prefix, possibly a chunk
    DECODE = 2  # one new token per request

    def is_extend(self) -> bool:
        return self == ForwardMode.EXTEND

    def is_decode(self) -> bool:
        return self == ForwardMode.DECODE


@dataclass(frozen=True)
class PrefixGroups:
    """Rows of a DECODE batch that share cached-prefix KV slots; host lists (small, picklable for tp).

    Group g is rows[indptr[g] : indptr[g+1]] (batch row numbers, >= 2 of them, no row in two groups);
    req_to_token[req_pool_indices[r], :shared_lens[g]] is identical for all of them. Rows in no group
    have no shared prefix worth reading once."""

    rows: list[int]
    indptr: list[int]
    shared_lens: list[int]

    @property
    def num_groups(self) -> int:
        return len(self.shared_lens)

    def group_rows(self) -> list[list[int]]:
        return [self.rows[a:b] for a, b in zip(self.indptr, self.indptr[1:])]


@dataclass
class ForwardBatch:
    mode: ForwardMode
    batch_size: int
    input_ids: torch.Tensor  # int64 [num_tokens]
    positions: torch.Tensor  # int64 [num_tokens]
    req_pool_indices: torch.Tensor  # int64 [bs]
    seq_lens: torch.Tensor  # int64 [bs], lengths after this forward
    out_cache_loc: torch.Tensor  # int64 [num_tokens], KV slots the new tokens are written to
    req_to_token: torch.Tensor  # int32/int64 [max_reqs, max_context_len]
    kv_pool: "TokenKVPool"
    # EXTEND only
    extend_prefix_lens: Optional[torch.Tensor] = None  # int64 [bs]
    extend_seq_lens: Optional[torch.Tensor] = None  # int64 [bs]
    extend_start_loc: Optional[torch.Tensor] = None  # int64 [bs], offsets into the ragged token dim
    # host-side copies (python lists) so backends and the logits processor avoid device syncs
    seq_lens_cpu: Optional[list[int]] = None
    extend_prefix_lens_cpu: Optional[list[int]] = None
    extend_seq_lens_cpu: Optional[list[int]] = None
    # logits: for EXTEND, position (within each request's new tokens) from which per-token
    # input logprobs are wanted; None = only the last token's logits
    extend_logprob_start_lens_cpu: Optional[list[int]] = None
    return_logprob: bool = False
    top_logprobs_nums: Optional[list[int]] = None
    # EXTEND only, vision-language models: row i's MultimodalItems (runtime/multimodal/inputs.py) or None;
    # None for the whole batch when no row has any (the model then runs its text-only forward)
    mm_items: Optional[list[Optional[list[Any]]]] = None
    # DECODE only: rows sharing cached-prefix KV (see the module docstring); None = no sharing known
    prefix_groups: Optional[PrefixGroups] = None
    # backend-private metadata, filled by AttentionBackend.init_forward_metadata
    attn_metadata: Any = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.input_ids.device
