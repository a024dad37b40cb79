"""TritonAttentionBackend: the project's own Triton kernels over the token KV pool.

EXTEND: new K/V are written into the pool first, then `extend_attention` reads every key (cached prefix
and new tokens) through req_to_token, causal among the new tokens.
DECODE: `decode_attention`, split-KV with a fixed number of splits, so its launch grid depends only on the
batch size: the decode step is CUDA-graph safe with no per-step metadata at all. The kernel also writes
the step's K/V into the pool (fused), which removes two scatter launches per layer per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.attention.base import AttentionBackend


@dataclass(frozen=True)
class _ExtendMeta:
    max_extend_len: int


class TritonAttentionBackend(AttentionBackend):
    supports_cuda_graph = True

    def __init__(self, model_runner: Any = None, num_kv_splits: Optional[int] = None) -> None:
        # imported here so that a CPU-only install without triton can still import this package
        from sglang.kernels import decode_attention as _dec
        from sglang.kernels import extend_attention as _ext

        self._decode = _dec.decode_attention
        self._extend = _ext.extend_attention
        self.num_kv_splits = num_kv_splits or _dec.DEFAULT_NUM_SPLITS

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        if batch.mode.is_extend():
            if batch.extend_seq_lens_cpu is not None:
                max_ext = max(batch.extend_seq_lens_cpu, default=0)
            else:  # one host sync; the scheduler normally passes the host copy
                max_ext = int(batch.extend_seq_lens.max()) if batch.batch_size else 0
            batch.attn_metadata = _ExtendMeta(max_ext)
        else:
            batch.attn_metadata = None

    # CUDA-graph hooks: decode needs no metadata, so capture and replay are the plain path
    def init_cuda_graph_state(self, max_bs: int) -> None:
        pass

    def init_forward_metadata_capture(self, batch: ForwardBatch) -> None:
        self.init_forward_metadata(batch)

    def init_forward_metadata_replay(self, batch: ForwardBatch) -> None:
        self.init_forward_metadata(batch)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer_id: int,
        batch: ForwardBatch,
        scaling: float,
    ) -> torch.Tensor:
        t = q.shape[0]
        if q.dim() != 3:
            raise ValueError(f"TritonAttentionBackend.forward expects q [tokens, heads, head_dim], got {tuple(q.shape)}")
        pool = batch.kv_pool
        k_buf, v_buf = pool.get_kv(layer_id)
        if q.dtype != k_buf.dtype:
            q = q.to(k_buf.dtype)
        out = torch.empty_like(q)
        if batch.mode.is_decode():
            # the kernel stores this step's k/v into the pool itself (no separate scatter launches)
            self._decode(q, k_buf, v_buf, batch.req_to_token, batch.req_pool_indices, batch.seq_lens,
                         scaling, num_splits=self.num_kv_splits, out=out,
                         k_new=k, v_new=v, out_cache_loc=batch.out_cache_loc)
        else:
            pool.set_kv(layer_id, batch.out_cache_loc, k, v)
            meta = batch.attn_metadata
            if not isinstance(meta, _ExtendMeta):
                self.init_forward_metadata(batch)
                meta = batch.attn_metadata
            self._extend(q, k_buf, v_buf, batch.req_to_token, batch.req_pool_indices, batch.extend_prefix_lens,
                         batch.extend_seq_lens, batch.extend_start_loc, meta.max_extend_len, scaling, out=out)
        return out.view(t, -1)
