"""FlashInferAttentionBackend: FlashInfer (>= 0.5) kernels over the token KV pool (page size 1).

The pool's per-layer buffers [slots, Hkv, D] are viewed as pages of one token, [slots, 1, Hkv, D], so a
request's page list is simply its req_to_token row (flattened by `kernels.kv_indices`).
EXTEND: the new tokens attend to each other with the ragged prefill wrapper (causal, K/V straight from
this forward); when some request has a cached prefix, the paged prefill wrapper attends to the prefix
(non-causal) and the two partial results are merged by their log-sum-exp (`merge_state`).
DECODE: the paged decode wrapper; under CUDA graphs one wrapper per captured batch size, planned on the
host before each replay into fixed device buffers.
Cascade DECODE (the batch carries `prefix_groups`): FlashInfer's two-level cascade wrapper; level 0 attends
each group's queries (made contiguous by a row permutation) to the group's shared prefix once, level 1
each row to its own suffix, merged by log-sum-exp. Eager only (`needs_eager`), like the triton backend's.
Plans need the query head count and the softmax scale; both are learnt from the first forward call
(a plan made at that moment for eager runs, and before capture for graphs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.attention.base import AttentionBackend

WORKSPACE_BYTES = 256 * 1024 * 1024


@dataclass
class _Meta:
    mode: str  # "decode" | "extend"
    qo_indptr: Optional[torch.Tensor] = None  # host int32 [bs+1]
    kv_indptr: Optional[torch.Tensor] = None  # host int32 [bs+1] (decode: seq lens; extend: prefix lens)
    kv_indices: Optional[torch.Tensor] = None  # device int32
    has_prefix: bool = False
    planned: bool = False
    decode_wrapper: Any = None
    # cascade decode: batch rows in level order (groups contiguous), and per level
    # (qo_indptr, kv_indptr, kv_indices, last_page_len)
    order: Optional[torch.Tensor] = None
    levels: Optional[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]] = None


def check_supported(dtype: Optional[torch.dtype], head_dim: Optional[int]) -> None:
    """Raise ValueError for what this backend refuses by design (the GPU tests skip exactly these)."""
    # FlashInfer 0.5 has no fp32 kernels, and its Hopper (sm90) prefill kernels only head dims 64/128/256
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"attention backend 'flashinfer' supports float16/bfloat16 only, got {dtype}; "
                         "use attention_backend='triton' or 'torch'")
    if head_dim is not None and head_dim not in (64, 128, 256):
        raise ValueError(f"attention backend 'flashinfer' supports head_dim 64/128/256, the model has "
                         f"{head_dim}; use attention_backend='triton' or 'torch'")


class FlashInferAttentionBackend(AttentionBackend):
    supports_cuda_graph = True

    def __init__(self, model_runner: Any) -> None:
        try:
            import flashinfer
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise ImportError("--attention-backend flashinfer needs flashinfer-python (>= 0.5) on a CUDA machine") from e
        from sglang.kernels.kv_indices import build_kv_indices

        cfg = getattr(model_runner, "model_config", None)
        check_supported(getattr(model_runner, "dtype", None), getattr(cfg, "head_dim", None))
        self._fi = flashinfer
        self._build_kv_indices = build_kv_indices
        self.device = torch.device(getattr(model_runner, "device", "cuda"))
        cfg = getattr(model_runner, "model_config", None)
        # known up front so that CUDA graphs can be planned before any eager forward; a forward with a
        # different scale re-plans (eager only)
        heads = getattr(cfg, "num_heads", None)  # this tp rank's share of them
        self.num_qo_heads: Optional[int] = heads // getattr(model_runner, "tp_size", 1) if heads else None
        self.sm_scale: Optional[float] = cfg.head_dim ** -0.5 if cfg is not None else None
        self.workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)
        self.ragged = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(self.workspace, "NHD")
        self.paged_prefill = flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self._decode_wrapper = None  # created at the first decode, once the GQA group size is known
        self._cascade_wrapper = None  # created at the first cascade decode
        self._graph_wrappers: dict[int, Any] = {}
        self._graph_indices: Optional[torch.Tensor] = None
        self._ones: Optional[torch.Tensor] = None

    def warm_up_ragged_prefill(self, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
        """Compile (FlashInfer JIT-compiles on first use: about a minute on a cold cache) and load the ragged
        prefill kernel of these shapes by planning and running a 16-token batch on a wrapper, workspace and
        stream of its own, so that the caller may run this off the serving thread."""
        stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(stream):
            ws = torch.zeros(16 << 20, dtype=torch.uint8, device=self.device)
            wrapper = self._fi.BatchPrefillWithRaggedKVCacheWrapper(ws, "NHD")
            indptr = torch.tensor([0, 16], dtype=torch.int32)
            self._plan_ragged(wrapper, indptr, num_kv_heads, head_dim, dtype)
            q = torch.zeros(16, self.num_qo_heads, head_dim, dtype=dtype, device=self.device)
            kv = torch.zeros(16, num_kv_heads, head_dim, dtype=dtype, device=self.device)
            wrapper.run(q, kv, kv)
        stream.synchronize()

    # -- planning -------------------------------------------------------------------------------
    def _use_tensor_cores(self, num_kv_heads: int) -> bool:
        # the prefill-style decode kernel pays off when several query heads share a KV head
        return (self.num_qo_heads or num_kv_heads) // num_kv_heads >= 4

    def _last_page_len(self, bs: int) -> torch.Tensor:
        if self._ones is None or self._ones.numel() < bs:
            self._ones = torch.ones(max(bs, 256), dtype=torch.int32, device=self.device)
        return self._ones[:bs]

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        batch.attn_metadata = self.make_metadata(batch)

    def make_metadata(self, batch: ForwardBatch) -> Any:
        """This batch's index arrays, planned when the head count and scale are known (also used by
        the triton backend, which hands large extends to FlashInfer and keeps the result opaque)."""
        if batch.mode.is_decode() and batch.prefix_groups is not None:
            meta = self._cascade_metadata(batch)
        elif batch.mode.is_decode():
            seq = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens.tolist()
            kv_indptr = _cumsum_host(seq)
            indices = torch.empty(int(kv_indptr[-1]), dtype=torch.int32, device=self.device)
            self._build_kv_indices(batch.req_to_token, batch.req_pool_indices,
                                   kv_indptr.to(self.device, non_blocking=True), indices)
            meta = _Meta("decode", kv_indptr=kv_indptr, kv_indices=indices)
        else:
            ext = batch.extend_seq_lens_cpu if batch.extend_seq_lens_cpu is not None else batch.extend_seq_lens.tolist()
            pre = (batch.extend_prefix_lens_cpu if batch.extend_prefix_lens_cpu is not None
                   else batch.extend_prefix_lens.tolist())
            meta = _Meta("extend", qo_indptr=_cumsum_host(ext), kv_indptr=_cumsum_host(pre), has_prefix=any(pre))
            if meta.has_prefix:
                meta.kv_indices = torch.empty(int(meta.kv_indptr[-1]), dtype=torch.int32, device=self.device)
                self._build_kv_indices(batch.req_to_token, batch.req_pool_indices,
                                       meta.kv_indptr.to(self.device, non_blocking=True), meta.kv_indices)
        if self.sm_scale is not None and self.num_qo_heads is not None:
            self._plan(meta, batch)
        return meta

    def needs_eager(self, batch: ForwardBatch) -> bool:
        """Whether this batch must not replay a CUDA graph (cascade decode is planned per grouping)."""
        return batch.mode.is_decode() and batch.prefix_groups is not None

    def _cascade_metadata(self, batch: ForwardBatch) -> _Meta:
        """Level 0: one query segment per group (plus one per ungrouped row, with no KV) over the shared
        prefix, read through the group's first row; level 1: every row over its own suffix."""
        g, bs = batch.prefix_groups, batch.batch_size
        seq = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens.tolist()
        groups = g.group_rows()
        shared_of = [0] * bs
        for rows, n in zip(groups, g.shared_lens):
            for r in rows:
                shared_of[r] = n
        in_group = set(g.rows)
        alone = [r for r in range(bs) if r not in in_group]
        order = list(g.rows) + alone
        firsts = [rows[0] for rows in groups] + alone
        seg_sizes = [len(rows) for rows in groups] + [1] * len(alone)
        prefix_lens = list(g.shared_lens) + [0] * len(alone)
        own_lens = [seq[r] - shared_of[r] for r in order]
        host = torch.tensor(order + firsts + [shared_of[r] for r in order], dtype=torch.int64)
        dev = host.pin_memory().to(self.device, non_blocking=True)
        order_d, firsts_d, starts_d = dev[:bs], dev[bs: bs + len(firsts)], dev[bs + len(firsts):]
        req = batch.req_pool_indices
        kv0, kv1 = _cumsum_host(prefix_lens), _cumsum_host(own_lens)
        ind0 = torch.empty(max(int(kv0[-1]), 1), dtype=torch.int32, device=self.device)
        ind1 = torch.empty(int(kv1[-1]), dtype=torch.int32, device=self.device)
        self._build_kv_indices(batch.req_to_token, req[firsts_d], kv0.to(self.device, non_blocking=True), ind0)
        self._build_kv_indices(batch.req_to_token, req[order_d], kv1.to(self.device, non_blocking=True), ind1,
                               starts=starts_d)
        # page size 1: an entry with no pages has a last page of 0 tokens (see _plan's extend branch)
        last0 = (kv0[1:] > kv0[:-1]).to(torch.int32)
        levels = [(_cumsum_host(seg_sizes), kv0, ind0, last0),
                  (torch.arange(bs + 1, dtype=torch.int32), kv1, ind1, torch.ones(bs, dtype=torch.int32))]
        return _Meta("cascade", order=order_d, levels=levels)

    def _plan_ragged(self, wrapper: Any, qo_indptr: torch.Tensor, num_kv_heads: int, head_dim: int,
                     dtype: torch.dtype) -> None:
        """The new tokens among themselves (causal). One place for these arguments: the warm-up must plan the
        same kernel variant as serving does, or it compiles one that serving never uses."""
        wrapper.plan(qo_indptr, qo_indptr, self.num_qo_heads, num_kv_heads, head_dim, causal=True,
                     sm_scale=self.sm_scale, q_data_type=dtype, kv_data_type=dtype)

    def _plan(self, meta: _Meta, batch: ForwardBatch, wrapper: Any = None) -> None:
        pool = batch.kv_pool
        hkv, d, dtype = pool.num_kv_heads, pool.head_dim, pool.dtype
        bs = batch.batch_size
        if meta.mode == "cascade":
            if self._cascade_wrapper is None:
                self._cascade_wrapper = self._fi.MultiLevelCascadeAttentionWrapper(2, self.workspace, "NHD")
            qo, kv_indptr, kv_indices, last = (list(x) for x in zip(*meta.levels))
            self._cascade_wrapper.plan(qo, kv_indptr, kv_indices, last, self.num_qo_heads, hkv, d, 1, causal=False,
                                       sm_scale=self.sm_scale, q_data_type=dtype, kv_data_type=dtype)
        elif meta.mode == "decode":
            if wrapper is None:
                if self._decode_wrapper is None:
                    self._decode_wrapper = self._fi.BatchDecodeWithPagedKVCacheWrapper(
                        self.workspace, "NHD", use_tensor_cores=self._use_tensor_cores(hkv))
                wrapper = self._decode_wrapper
            wrapper.plan(meta.kv_indptr, meta.kv_indices, self._last_page_len(bs), self.num_qo_heads, hkv, d, 1,
                         q_data_type=dtype, kv_data_type=dtype, sm_scale=self.sm_scale)
            meta.decode_wrapper = wrapper
        else:
            self._plan_ragged(self.ragged, meta.qo_indptr, hkv, d, dtype)
            if meta.has_prefix:
                # page size 1: a request with no cached prefix has 0 pages and a last page of 0 tokens
                # (FlashInfer derives kv_len = max(pages - 1, 0) * page_size + last_page_len, so 1 would
                # make it read one index past its range)
                last = (meta.kv_indptr[1:] > meta.kv_indptr[:-1]).to(torch.int32)
                self.paged_prefill.plan(meta.qo_indptr, meta.kv_indptr, meta.kv_indices, last,
                                        self.num_qo_heads, hkv, d, 1, causal=False, sm_scale=self.sm_scale,
                                        q_data_type=dtype, kv_data_type=dtype)
        meta.planned = True

    # -- CUDA graphs ----------------------------------------------------------------------------
    def init_cuda_graph_state(self, max_bs: int, max_total_slots: Optional[int] = None) -> None:
        n = max_total_slots or 1 << 20
        self._graph_indices = torch.zeros(n, dtype=torch.int32, device=self.device)
        self._last_page_len(max_bs)

    def _graph_wrapper(self, bs: int, hkv: int) -> Any:
        w = self._graph_wrappers.get(bs)
        if w is None:
            w = self._fi.BatchDecodeWithPagedKVCacheWrapper(
                self.workspace, "NHD", use_cuda_graph=True, use_tensor_cores=self._use_tensor_cores(hkv),
                paged_kv_indptr_buffer=torch.zeros(bs + 1, dtype=torch.int32, device=self.device),
                paged_kv_indices_buffer=self._graph_indices,
                paged_kv_last_page_len_buffer=self._last_page_len(bs))
            self._graph_wrappers[bs] = w
        return w

    def _graph_meta(self, batch: ForwardBatch) -> None:
        if self.sm_scale is None or self.num_qo_heads is None:
            raise RuntimeError("FlashInferAttentionBackend: run one eager forward before capturing CUDA graphs")
        seq = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens.tolist()
        kv_indptr = _cumsum_host(seq)
        total = int(kv_indptr[-1])
        if self._graph_indices is None or total > self._graph_indices.numel():
            raise RuntimeError(f"FlashInferAttentionBackend: {total} KV slots exceed the CUDA-graph index buffer")
        indices = self._graph_indices[:total]
        self._build_kv_indices(batch.req_to_token, batch.req_pool_indices,
                               kv_indptr.to(self.device, non_blocking=True), indices)
        meta = _Meta("decode", kv_indptr=kv_indptr, kv_indices=indices)
        self._plan(meta, batch, wrapper=self._graph_wrapper(batch.batch_size, batch.kv_pool.num_kv_heads))
        batch.attn_metadata = meta

    def init_forward_metadata_capture(self, batch: ForwardBatch) -> None:
        self._graph_meta(batch)

    def init_forward_metadata_replay(self, batch: ForwardBatch) -> None:
        self._graph_meta(batch)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
                batch: ForwardBatch, scaling: float) -> torch.Tensor:
        meta = batch.attn_metadata
        if not isinstance(meta, _Meta):
            meta = batch.attn_metadata = self.make_metadata(batch)
        return self.run(meta, q, k, v, layer_id, batch, scaling)

    def run(self, meta: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_id: int,
            batch: ForwardBatch, scaling: float) -> torch.Tensor:
        """forward() with the metadata given (from make_metadata on this batch)."""
        if q.dim() != 3:
            raise ValueError(f"FlashInferAttentionBackend.forward expects q [tokens, heads, head_dim], got {tuple(q.shape)}")
        t, hq, d = q.shape
        pool = batch.kv_pool
        pool.set_kv(layer_id, batch.out_cache_loc, k, v)
        k_buf, v_buf = pool.get_kv(layer_id)
        q = q.to(k_buf.dtype)
        same_scale = self.sm_scale is not None and abs(self.sm_scale - scaling) <= 1e-6 * abs(scaling)
        if not meta.planned or self.num_qo_heads != hq or not same_scale:
            if meta.decode_wrapper is not None and meta.decode_wrapper is not self._decode_wrapper:
                raise RuntimeError("FlashInferAttentionBackend: CUDA graph planned with another head count/scale")
            self.num_qo_heads, self.sm_scale = hq, float(scaling)
            self._plan(meta, batch)
        paged = (k_buf.view(-1, 1, pool.num_kv_heads, d), v_buf.view(-1, 1, pool.num_kv_heads, d))
        if meta.mode == "cascade":
            out = torch.empty_like(q)
            out[meta.order] = self._cascade_wrapper.run(q[meta.order], paged)
        elif meta.mode == "decode":
            out = meta.decode_wrapper.run(q, paged)
        else:
            k, v = k.to(k_buf.dtype), v.to(k_buf.dtype)
            if meta.has_prefix:
                o1, s1 = self.ragged.run(q, k, v, return_lse=True)
                o2, s2 = self.paged_prefill.run(q, paged, return_lse=True)
                out, _ = self._fi.merge_state(o1, s1, o2, s2)
            else:
                out = self.ragged.run(q, k, v)
        return out.reshape(t, hq * d)


def _cumsum_host(lens: list[int]) -> torch.Tensor:
    out = torch.zeros(len(lens) + 1, dtype=torch.int32)
    if lens:
        out[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
    return out
