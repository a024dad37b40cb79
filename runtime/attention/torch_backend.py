"""TorchAttentionBackend: the reference attention over the token KV pool, in plain torch (CPU and GPU).

Per request: gather K/V of the whole sequence through req_to_token[row, :seq_len] and attend causally,
query at absolute position p seeing keys 0..p (prefix_len + its offset among the new tokens).
GQA is handled by grouping the query heads of each KV head, so K/V are never repeated in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..forward_batch import ForwardBatch
from .base import AttentionBackend


@dataclass
class _Seq:
    q_start: int  # offset of this request's new tokens in the ragged token dimension
    q_len: int  # new tokens
    prefix_len: int  # cached tokens before them
    slots: torch.Tensor  # KV slots of the whole sequence [prefix_len + q_len]


class TorchAttentionBackend(AttentionBackend):
    def __init__(self, model_runner=None) -> None:
        self.model_runner = model_runner

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        seq_lens = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens.tolist()
        if batch.mode.is_decode():
            q_lens = [1] * batch.batch_size
        elif batch.extend_seq_lens_cpu is not None:
            q_lens = list(batch.extend_seq_lens_cpu)
        else:
            q_lens = batch.extend_seq_lens.tolist()
        rows = batch.req_pool_indices.tolist()
        seqs, start = [], 0
        for row, n, q_len in zip(rows, seq_lens, q_lens):
            n, q_len = int(n), int(q_len)
            if q_len > n:
                raise ValueError(f"request in row {row}: {q_len} new tokens but seq_len {n}")
            seqs.append(_Seq(start, q_len, n - q_len, batch.req_to_token[int(row), :n].long()))
            start += q_len
        if start != batch.num_tokens:
            raise ValueError(f"new-token counts add up to {start}, but the batch has {batch.num_tokens} tokens")
        batch.attn_metadata = seqs

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        layer_id: int,
        batch: ForwardBatch,
        scaling: float,
    ) -> torch.Tensor:
        pool = batch.kv_pool
        pool.set_kv(layer_id, batch.out_cache_loc, k, v)
        k_buf, v_buf = pool.get_kv(layer_id)
        num_tokens, num_heads, head_dim = q.shape
        group = num_heads // k_buf.shape[1]
        out = torch.empty((num_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
        for s in batch.attn_metadata:
            if s.q_len == 0:
                continue
            qi = q[s.q_start : s.q_start + s.q_len]  # [t, H, D]
            ki = k_buf[s.slots].to(q.dtype)  # [n, Hkv, D]
            vi = v_buf[s.slots].to(q.dtype)
            # [Hkv, group, t, D] x [Hkv, 1, n, D]: each KV head serves its `group` query heads
            qh = qi.permute(1, 0, 2).reshape(-1, group, s.q_len, head_dim)
            kh = ki.permute(1, 0, 2).unsqueeze(1)
            vh = vi.permute(1, 0, 2).unsqueeze(1)
            n = s.prefix_len + s.q_len
            mask = None
            if s.q_len > 1:
                qpos = torch.arange(s.prefix_len, n, device=q.device)[:, None]
                mask = torch.arange(n, device=q.device)[None, :] <= qpos  # [t, n], True = attend
            o = F.scaled_dot_product_attention(
                qh, kh.expand(-1, group, -1, -1), vh.expand(-1, group, -1, -1), attn_mask=mask, scale=scaling
            )
            out[s.q_start : s.q_start + s.q_len] = o.reshape(num_heads, s.q_len, head_dim).permute(1, 0, 2)
        return out.reshape(num_tokens, num_heads * head_dim)
