"""TritonAttentionBackend: the project's own Triton kernels over the token KV pool.

EXTEND: new K/V are written into the pool first, then `extend_attention` reads every key (cached prefix
and new tokens) through req_to_token, causal among the new tokens. Rows of a mixed batch that extend by
one token (running requests riding along, --enable-mixed-chunk) go through the decode kernel instead:
the extend kernel would give each of them a mostly empty BLOCK_M query tile per query head and re-read
its whole context once per head. Large extends may go to FlashInfer's prefill (see `ExtendRouting`).
DECODE: `decode_attention`, split-KV with a fixed number of splits, so its launch grid depends only on the
batch size: the decode step is CUDA-graph safe with no per-step metadata at all. The kernel also writes
the step's K/V into the pool (fused), which removes two scatter launches per layer per step.
Cascade DECODE: when the batch carries `prefix_groups` (rows sharing radix-cached prefix KV, which the
scheduler attaches only when sharing saves enough reads), `cascade_decode_attention` reads each shared
prefix once per tile of rows. Eagerly its grid follows the grouping (`needs_eager(batch)` says so to a
graph runner without cascade graphs); with `init_cascade_graphs(max_bs)` a CUDA graph per batch size runs
any grouping that fits `graph_tile_capacity`: the plan is device data in one static buffer, rewritten
(one small host-to-device copy, made once per grouping) before each replay.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Optional

import torch

from sglang.runtime.attention.base import AttentionBackend
from sglang.runtime.forward_batch import ForwardBatch, PrefixGroups

logger = logging.getLogger(__name__)

# an EXTEND batch with at least this many new tokens uses FlashInfer's prefill when it is available
# (H200, issue 17: FlashInfer 443-574 TFLOP/s vs Triton 164-225 at large sizes; below this its host-side
# planning is a larger share of the forward). benchmarks/check_kernels.py times both to tune it.
FLASHINFER_EXTEND_MIN_TOKENS = 2048


@dataclass
class _DecodeMeta:
    groups: Optional[PrefixGroups]
    plan: Any = None  # kernels.cascade_decode.CascadePlan, made at the first layer (needs the head count)


@dataclass(frozen=True)
class _MixedRows:
    """A mixed EXTEND batch split by kind: one-token rows to the decode kernel, the rest to extend."""

    dec_tokens: torch.Tensor  # ragged token index of each one-token row
    dec_req: torch.Tensor
    dec_seq: torch.Tensor
    ext_req: torch.Tensor
    ext_prefix: torch.Tensor
    ext_lens: torch.Tensor
    ext_start: torch.Tensor


@dataclass(frozen=True)
class _ExtendMeta:
    max_extend_len: int  # over the rows the extend kernel runs
    mixed: Optional[_MixedRows] = None
    flashinfer: Any = None  # FlashInfer's metadata when the whole extend runs there


class TritonAttentionBackend(AttentionBackend):
    supports_cuda_graph = True

    def __init__(self, model_runner: Any = None, num_kv_splits: Optional[int] = None,
                 extend_with_flashinfer: Optional[bool] = None) -> None:
        """extend_with_flashinfer: None = when FlashInfer is installed and supports the model (CUDA)."""
        # imported here so that a CPU-only install without triton can still import this package
        from sglang.kernels import cascade_decode as _cas
        from sglang.kernels import decode_attention as _dec
        from sglang.kernels import extend_attention as _ext

        self._decode = _dec.decode_attention
        self._cas = _cas
        self._cascade = _cas.cascade_decode_attention
        self._graph_plan: Optional[torch.Tensor] = None  # the cascade graphs' static plan (init_cascade_graphs)
        self._packed: tuple[Any, int, torch.Tensor] | None = None  # (groups, bs, host plan) of the last replay
        # sizes the cascade prefix grid; without a runner (kernel checks) the current GPU if any
        dev = torch.device(getattr(model_runner, "device", "cuda" if torch.cuda.is_available() else "cpu"))
        self._device = dev
        self._num_sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 4
        self._extend = _ext.extend_attention
        # None: per batch size (auto_num_splits); SGLANG_DECODE_SPLITS=N fixes it (benchmarks compare the two)
        env = os.environ.get("SGLANG_DECODE_SPLITS", "auto")
        self.num_kv_splits = num_kv_splits or (None if env == "auto" else int(env))
        self._auto_splits = _dec.auto_num_splits
        # SGLANG_DECODE_MIN_SPLIT=N: fewest keys per decode split at every batch size (auto: auto_min_split)
        env_min = os.environ.get("SGLANG_DECODE_MIN_SPLIT", "auto")
        self._min_split = (_dec.auto_min_split if env_min == "auto"
                           else (lambda bs, hkv, sms, n=int(env_min): n))
        self._default_splits = _dec.DEFAULT_NUM_SPLITS
        self.flashinfer = _flashinfer_for_extend(model_runner, extend_with_flashinfer)
        self.flashinfer_min_tokens = FLASHINFER_EXTEND_MIN_TOKENS
        # FlashInfer JIT-compiles its prefill kernel on first use (about a minute on a cold cache: on the H200 the
        # radix-on shared-prefix benchmark stalled every request ~60 s in that compile, py-spy --idle showed it).
        # The kernel is compiled by a warm-up thread started at the first extend; large extends go to FlashInfer
        # only once it is ready, Triton serves them meanwhile.
        self.flashinfer_ready = threading.Event()
        self._warm_up: Optional[threading.Thread] = None

    # -- metadata ----------------------------------------------------------------------------------
    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        if batch.mode.is_decode():
            batch.attn_metadata = _DecodeMeta(batch.prefix_groups)
            return
        ext = batch.extend_seq_lens_cpu
        if ext is None:  # one host sync; the scheduler normally passes the host copy
            ext = batch.extend_seq_lens.tolist()
        # only prefills without a cached prefix (the ragged kernel; the paged-prefix one would be a second compile)
        no_prefix = batch.extend_prefix_lens_cpu is not None and not any(batch.extend_prefix_lens_cpu)
        if (self.flashinfer is not None and no_prefix and sum(ext) >= self.flashinfer_min_tokens
                and self._flashinfer_warm(batch)):
            batch.attn_metadata = _ExtendMeta(max(ext), flashinfer=self.flashinfer.make_metadata(batch))
            return
        one = [i for i, n in enumerate(ext) if n == 1]
        if not one:
            batch.attn_metadata = _ExtendMeta(max(ext, default=0))
            return
        many = [i for i, n in enumerate(ext) if n != 1]
        batch.attn_metadata = _ExtendMeta(max((ext[i] for i in many), default=0), mixed=_mixed_rows(batch, one, many))

    def _flashinfer_warm(self, batch: ForwardBatch) -> bool:
        """Whether FlashInfer's prefill kernel is compiled; the first call starts the warm-up thread."""
        if self.flashinfer_ready.is_set():
            return True
        if self._warm_up is None:
            pool = batch.kv_pool
            self._warm_up = threading.Thread(target=self._run_warm_up, name="flashinfer-warm-up", daemon=True,
                                             args=(pool.num_kv_heads, pool.head_dim, pool.dtype))
            self._warm_up.start()
        return False

    def _run_warm_up(self, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
        try:
            self.flashinfer.warm_up_ragged_prefill(num_kv_heads, head_dim, dtype)
        except Exception:  # the compile failed: large extends stay on Triton
            logger.exception("FlashInfer prefill warm-up failed; large extends stay on Triton")
            return
        logger.info("FlashInfer prefill kernel ready: large extends without a cached prefix use it from now on")
        self.flashinfer_ready.set()

    def needs_eager(self, batch: ForwardBatch) -> bool:
        """Whether this batch must not replay a plain CUDA graph (cascade decode: see cascade_graph_fits)."""
        return batch.mode.is_decode() and batch.prefix_groups is not None

    # CUDA-graph hooks: plain decode needs no metadata, so capture and replay are the plain path; a cascade
    # graph (the batch carries prefix_groups, empty at capture) reads its plan from the static buffer
    def init_cuda_graph_state(self, max_bs: int) -> None:
        pass

    def init_cascade_graphs(self, max_bs: int, kv_group: int) -> None:
        """Allocate the static plan that cascade graphs of up to max_bs rows read (on the runner's device)."""
        cas = self._cas
        self._kv_group = kv_group
        self._graph_plan = torch.zeros(cas.packed_size(max_bs, cas.graph_tile_capacity(max_bs)),
                                       dtype=torch.int32, device=self._device)

    def cascade_graph_fits(self, groups: PrefixGroups, bs: int) -> bool:
        """Whether a cascade graph of `bs` rows can run this grouping (its tiles fit the graph's capacity)."""
        return (self._graph_plan is not None
                and self._cas.count_tiles(groups.group_rows(), self._kv_group) <= self._cas.graph_tile_capacity(bs))

    def init_forward_metadata_capture(self, batch: ForwardBatch) -> None:
        if batch.mode.is_decode() and batch.prefix_groups is not None:
            self._graph_plan.zero_()  # no tiles: the capture runs the empty grouping
            batch.attn_metadata = _DecodeMeta(batch.prefix_groups, plan=self._static_plan(batch.batch_size))
            return
        self.init_forward_metadata(batch)

    def init_forward_metadata_replay(self, batch: ForwardBatch) -> None:
        groups = batch.prefix_groups
        if not (batch.mode.is_decode() and groups is not None):
            self.init_forward_metadata(batch)
            return
        bs = batch.batch_size
        if self._packed is None or self._packed[0] is not groups or self._packed[1] != bs:
            cas = self._cas
            packed, _, _ = cas.pack_cascade(groups.group_rows(), groups.shared_lens, bs, self._kv_group,
                                            cas.GRAPH_PREFIX_SPLITS, capacity=cas.graph_tile_capacity(bs))
            self._packed = (groups, bs, packed.pin_memory() if self._device.type == "cuda" else packed)
        host = self._packed[2]
        self._graph_plan[: host.numel()].copy_(host, non_blocking=True)
        batch.attn_metadata = _DecodeMeta(groups, plan=self._static_plan(bs))

    def _static_plan(self, bs: int) -> Any:
        cas = self._cas
        cap = cas.graph_tile_capacity(bs)
        return cas.plan_from_packed(self._graph_plan[: cas.packed_size(bs, cap)], bs, cap, cas.GRAPH_PREFIX_SPLITS)

    # -- forward -----------------------------------------------------------------------------------
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
        meta = batch.attn_metadata
        if not isinstance(meta, (_DecodeMeta, _ExtendMeta)):
            self.init_forward_metadata(batch)
            meta = batch.attn_metadata
        if isinstance(meta, _ExtendMeta) and meta.flashinfer is not None:
            return self.flashinfer.run(meta.flashinfer, q, k, v, layer_id, batch, scaling)
        pool = batch.kv_pool
        k_buf, v_buf = pool.get_kv(layer_id)
        if q.dtype != k_buf.dtype:
            q = q.to(k_buf.dtype)
        out = torch.empty_like(q)
        if batch.mode.is_decode():
            self._run_decode(meta, q, k, v, k_buf, v_buf, batch, scaling, out)
        else:
            pool.set_kv(layer_id, batch.out_cache_loc, k, v)
            self._run_extend(meta, q, k_buf, v_buf, batch, scaling, out)
        return out.view(t, -1)

    def _run_decode(self, meta: _DecodeMeta, q, k, v, k_buf, v_buf, batch: ForwardBatch, scaling: float,
                    out: torch.Tensor) -> None:
        # the kernels store this step's k/v into the pool themselves (no separate scatter launches)
        fused = dict(out=out, k_new=k, v_new=v, out_cache_loc=batch.out_cache_loc)
        if meta.groups is None:
            bs, hkv = batch.batch_size, k_buf.shape[1]
            splits = self.num_kv_splits or self._auto_splits(bs, hkv, self._num_sms)
            self._decode(q, k_buf, v_buf, batch.req_to_token, batch.req_pool_indices, batch.seq_lens,
                         scaling, num_splits=splits, min_split=self._min_split(bs, hkv, self._num_sms), **fused)
            return
        if meta.plan is None:
            meta.plan = self._cas.plan_cascade(meta.groups.group_rows(), meta.groups.shared_lens, batch.batch_size,
                                               q.shape[1] // k_buf.shape[1], q.device, num_kv_heads=k_buf.shape[1],
                                               num_sms=self._num_sms)
        self._cascade(q, k_buf, v_buf, batch.req_to_token, batch.req_pool_indices, batch.seq_lens, scaling,
                      meta.plan, num_splits=self.num_kv_splits or self._default_splits,
                      min_split=self._min_split(batch.batch_size, k_buf.shape[1], self._num_sms), **fused)

    def _run_extend(self, meta: _ExtendMeta, q, k_buf, v_buf, batch: ForwardBatch, scaling: float,
                    out: torch.Tensor) -> None:
        m = meta.mixed
        if m is None:
            self._extend(q, k_buf, v_buf, batch.req_to_token, batch.req_pool_indices, batch.extend_prefix_lens,
                         batch.extend_seq_lens, batch.extend_start_loc, meta.max_extend_len, scaling, out=out)
            return
        if meta.max_extend_len:
            self._extend(q, k_buf, v_buf, batch.req_to_token, m.ext_req, m.ext_prefix, m.ext_lens, m.ext_start,
                         meta.max_extend_len, scaling, out=out)
        # their K/V is already in the pool (written above), so plain (unfused) decode
        dec = self._decode(q[m.dec_tokens], k_buf, v_buf, batch.req_to_token, m.dec_req, m.dec_seq, scaling,
                           num_splits=self.num_kv_splits or self._default_splits)
        out[m.dec_tokens] = dec


def _mixed_rows(batch: ForwardBatch, one: list[int], many: list[int]) -> _MixedRows:
    """Index tensors of both kinds of rows, gathered on the device from the batch's own tensors."""
    dev = batch.req_pool_indices.device
    idx = torch.tensor(one + many, dtype=torch.int64)
    idx = idx.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else idx.to(dev)
    d, e = idx[: len(one)], idx[len(one):]
    return _MixedRows(
        dec_tokens=batch.extend_start_loc[d], dec_req=batch.req_pool_indices[d], dec_seq=batch.seq_lens[d],
        ext_req=batch.req_pool_indices[e], ext_prefix=batch.extend_prefix_lens[e], ext_lens=batch.extend_seq_lens[e],
        ext_start=batch.extend_start_loc[e],
    )


def _flashinfer_for_extend(model_runner: Any, wanted: Optional[bool]) -> Any:
    """A FlashInfer backend for large extends, or None (not asked for, no CUDA, not installed, or a
    dtype/head dim it refuses by design: then every extend stays on Triton)."""
    if wanted is False or model_runner is None:
        return None
    if torch.device(getattr(model_runner, "device", "cpu")).type != "cuda":
        return None
    try:
        from sglang.runtime.attention.flashinfer_backend import FlashInferAttentionBackend

        return FlashInferAttentionBackend(model_runner)
    except (ImportError, ValueError) as e:
        if wanted:
            raise
        logger.info("large extends stay on Triton: %s", e)
        return None
