"""TorchAttentionBackend: the reference attention over the token KV pool, in plain torch (CPU and GPU).

Per request: gather K/V of the whole sequence through req_to_token[row, :seq_len] and attend causally,
query at absolute position p seeing keys 0..p (prefix_len + its offset among the new tokens).
GQA is handled by grouping the query heads of each KV head, so K/V are never repeated in memory.
K/V are gathered once per layer for the whole batch; DECODE does one attention call over the batch padded
to its longest sequence (masked), EXTEND one call per request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.attention.base import AttentionBackend

# decode attention runs in row chunks of at most this many gathered K (or V) elements (64 Mi: 128 MiB bf16)
DECODE_CHUNK_ELEMENTS = 1 << 26


@dataclass
class _Seq:
    q_start: int  # offset of this request's new tokens in the ragged token dimension
    q_len: int  # new tokens
    prefix_len: int  # cached tokens before them
    kv_start: int  # offset of this request's K/V in the batch-wide gathered K/V


@dataclass
class _Meta:
    seqs: list[_Seq]
    slots: torch.Tensor  # KV slots of every request's whole sequence, concatenated (one gather per layer)
    # DECODE only: [bs, max_len] slots padded with the pad slot 0, and which of them are real keys
    padded_slots: Optional[torch.Tensor] = None
    key_mask: Optional[torch.Tensor] = None

    def rows(self, start: int, end: int) -> "_Meta":
        """The decode columns of batch rows [start, end) (seqs/slots are not used by decode)."""
        return _Meta(self.seqs[start:end], self.slots, self.padded_slots[start:end], self.key_mask[start:end])


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
        seqs, slots, start, kv_start = [], [], 0, 0
        for row, n, q_len in zip(rows, seq_lens, q_lens):
            n, q_len = int(n), int(q_len)
            if q_len > n:
                raise ValueError(f"request in row {row}: {q_len} new tokens but seq_len {n}")
            seqs.append(_Seq(start, q_len, n - q_len, kv_start))
            slots.append(batch.req_to_token[int(row), :n])
            start += q_len
            kv_start += n
        if start != batch.num_tokens:
            raise ValueError(f"new-token counts add up to {start}, but the batch has {batch.num_tokens} tokens")
        meta = _Meta(seqs, torch.cat(slots).long() if slots else torch.zeros(0, dtype=torch.long, device=batch.device))
        if batch.mode.is_decode() and seqs:
            # one padded attention call for the whole batch instead of one per request
            lens = torch.tensor([int(n) for n in seq_lens], device=batch.device)
            cols = torch.arange(int(lens.max()), device=batch.device)
            meta.key_mask = cols[None, :] < lens[:, None]  # [bs, max_len]
            table = batch.req_to_token[batch.req_pool_indices.long()][:, : cols.numel()].long()
            meta.padded_slots = torch.where(meta.key_mask, table, torch.zeros_like(table))
        batch.attn_metadata = meta

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
        meta: _Meta = batch.attn_metadata
        if meta.padded_slots is not None:
            return self._decode(q, k_buf, v_buf, meta, group, scaling).reshape(num_tokens, num_heads * head_dim)
        k_all = k_buf[meta.slots].to(q.dtype)  # [sum of seq lens, Hkv, D]
        v_all = v_buf[meta.slots].to(q.dtype)
        out = torch.empty((num_tokens, num_heads, head_dim), dtype=q.dtype, device=q.device)
        for s in meta.seqs:
            if s.q_len == 0:
                continue
            n = s.prefix_len + s.q_len
            qi = q[s.q_start : s.q_start + s.q_len]  # [t, H, D]
            # [Hkv, group, t, D] x [Hkv, 1, n, D]: each KV head serves its `group` query heads
            qh = qi.permute(1, 0, 2).reshape(-1, group, s.q_len, head_dim)
            kh = k_all[s.kv_start : s.kv_start + n].permute(1, 0, 2).unsqueeze(1)
            vh = v_all[s.kv_start : s.kv_start + n].permute(1, 0, 2).unsqueeze(1)
            mask = None
            if s.q_len > 1:
                qpos = torch.arange(s.prefix_len, n, device=q.device)[:, None]
                mask = torch.arange(n, device=q.device)[None, :] <= qpos  # [t, n], True = attend
            o = F.scaled_dot_product_attention(
                qh, kh.expand(-1, group, -1, -1), vh.expand(-1, group, -1, -1), attn_mask=mask, scale=scaling
            )
            out[s.q_start : s.q_start + s.q_len] = o.reshape(num_heads, s.q_len, head_dim).permute(1, 0, 2)
        return out.reshape(num_tokens, num_heads * head_dim)

    @staticmethod
    def _decode(
        q: torch.Tensor, k_buf: torch.Tensor, v_buf: torch.Tensor, meta: _Meta, group: int, scaling: float
    ) -> torch.Tensor:
        bs, num_heads, head_dim = q.shape
        # the padded gather (and SDPA's expanded heads) take bs * L * H * D elements per tensor: go in
        # row chunks so a large batch of long contexts does not need gigabytes next to a full KV pool
        rows = max(1, DECODE_CHUNK_ELEMENTS // max(1, meta.padded_slots.shape[1] * num_heads * head_dim))
        if bs > rows:
            return torch.cat([TorchAttentionBackend._decode(q[i : i + rows], k_buf, v_buf, meta.rows(i, i + rows),
                                                            group, scaling) for i in range(0, bs, rows)])
        k = k_buf[meta.padded_slots].to(q.dtype)  # [bs, L, Hkv, D]
        v = v_buf[meta.padded_slots].to(q.dtype)
        qh = q.reshape(bs, -1, group, 1, head_dim)  # [bs, Hkv, group, 1, D]
        kh = k.permute(0, 2, 1, 3).unsqueeze(2)  # [bs, Hkv, 1, L, D]
        vh = v.permute(0, 2, 1, 3).unsqueeze(2)
        mask = meta.key_mask[:, None, None, None, :]  # [bs, 1, 1, 1, L]
        o = F.scaled_dot_product_attention(
            qh, kh.expand(-1, -1, group, -1, -1), vh.expand(-1, -1, group, -1, -1), attn_mask=mask, scale=scaling
        )
        return o.reshape(bs, num_heads, head_dim)
