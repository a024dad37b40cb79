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
    # backend-private metadata, filled by AttentionBackend.init_forward_metadata
    attn_metadata: Any = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.input_ids.device
