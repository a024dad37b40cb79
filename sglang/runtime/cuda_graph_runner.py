"""CUDA graphs for the decode step.

A decode step of a small batch is hundreds of tiny kernel launches; replaying a captured graph removes
the CPU launch cost. One graph is captured per batch size in `capture_batch_sizes(...)`; a batch is
padded up to the next captured size. Padded entries use request row 0, sequence length 1 and KV slot 0
(the pool's pad slot, never handed out), so they read valid memory and write nothing that matters.

With --enable-cascade-decode and a backend that offers `init_cascade_graphs`, a second graph per batch size
(from CASCADE_MIN_BS rows) runs shared-prefix (cascade) decode: captured with an empty grouping, it replays
any grouping the backend says fits (`cascade_graph_fits`); one that does not fit replays the plain graph
without its groups (same result, the prefix read per row).

All graphs share one memory pool, one set of static input buffers and one logits output buffer
(`logits_out`), so the memory cost is that of the largest batch. The attention backend must be graph safe: it gets
`init_cuda_graph_state(max_bs)` once, `init_forward_metadata_capture(batch)` before each capture and
`init_forward_metadata_replay(batch)` (host side, outside the graph) before each replay.

What is captured is `model_runner.forward_eager(batch)` (the runner's non-graph path) when it exists,
else `model_runner.model(input_ids, positions, batch)`; its result is a tensor or an object whose
`next_token_logits` tensor is the graph's output.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
from typing import Any, Callable

import torch

from sglang.runtime.forward_batch import ForwardBatch, ForwardMode, PrefixGroups
from sglang.runtime.server_args import default_cuda_graph_max_bs

logger = logging.getLogger(__name__)

CASCADE_MIN_BS = 8  # below this, rows sharing a prefix save too little to pay for a second graph
_EMPTY_GROUPS = PrefixGroups(rows=[], indptr=[0], shared_lens=[])

# dense where padding costs most (small batches), then 128 apart to 1024, then 256 apart (a step of
# a thousand rows is bound by the GPU, so a little padding there costs little)
_SIZES = ([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320, 384,
           448, 512] + list(range(640, 1025, 128)) + list(range(1280, 4097, 256)))


def capture_batch_sizes(max_bs: int) -> list[int]:
    """The batch sizes to capture: dense at small sizes (padding costs most there), sparser above."""
    if max_bs < 1:
        raise ValueError(f"cuda graph max batch size must be >= 1, got {max_bs}")
    sizes = [s for s in _SIZES if s <= max_bs]
    if sizes[-1] != max_bs:
        sizes.append(max_bs)
    return sizes


class CudaGraphRunner:
    def __init__(self, model_runner: Any, max_bs: int | None = None) -> None:
        self.mr = model_runner
        self.backend = model_runner.attn_backend
        if not getattr(self.backend, "supports_cuda_graph", False):
            raise ValueError(f"{type(self.backend).__name__} does not support CUDA graphs; use --disable-cuda-graph")
        args = model_runner.server_args
        self.req_to_token_pool = model_runner.req_to_token_pool
        self.kv_pool = model_runner.token_to_kv_pool
        running = getattr(model_runner, "max_running_requests", None) or args.max_running_requests
        limit = min(default_cuda_graph_max_bs(args, running or self.req_to_token_pool.size),
                    self.req_to_token_pool.size)
        self.batch_sizes = capture_batch_sizes(max_bs or limit)
        self.max_bs = self.batch_sizes[-1]
        dev = torch.device(model_runner.device)
        self.device = dev
        self.input_ids = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        self.positions = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        self.req_pool_indices = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        self.seq_lens = torch.ones(self.max_bs, dtype=torch.int64, device=dev)
        self.out_cache_loc = torch.zeros(self.max_bs, dtype=torch.int64, device=dev)
        fwd = getattr(model_runner, "forward_eager", None)
        self._forward: Callable[[ForwardBatch], Any] = fwd or (lambda b: model_runner.model(b.input_ids, b.positions, b))
        # every graph writes its logits into one [max_bs, vocab] fp32 buffer: a graph's own output would stay
        # allocated for good (~1.2 GB per graph of 2373 rows at a 128k vocabulary; ~9 GB over all the sizes,
        # twice that with cascade graphs: memory the KV pool sizing never saw, found as an OOM on the H200)
        self.logits_out: torch.Tensor | None = None
        lm_head = getattr(getattr(model_runner, "model", None), "lm_head_weight", None)
        if fwd is not None and isinstance(lm_head, torch.Tensor):
            self.logits_out = torch.empty((self.max_bs, lm_head.shape[0]), dtype=torch.float32, device=dev)
            self._forward = lambda b: fwd(b, logits_out=self.logits_out[: b.batch_size])
        self.graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}  # (batch size, cascade)
        self.outputs: dict[tuple[int, bool], Any] = {}
        self.cascade = bool(getattr(args, "enable_cascade_decode", False)) and hasattr(self.backend, "init_cascade_graphs")
        if self.cascade:
            cfg = model_runner.model_config
            self.backend.init_cascade_graphs(self.max_bs, kv_group=cfg.num_heads // cfg.num_kv_heads)
        init_state = getattr(self.backend, "init_cuda_graph_state", None)
        if init_state is not None:
            try:
                init_state(self.max_bs, max_total_slots=self.kv_pool.size + self.max_bs)
            except TypeError:
                init_state(self.max_bs)

    # -- batches over the static buffers --------------------------------------------------------
    def _static_batch(self, bs: int, seq_lens_cpu: list[int] | None) -> ForwardBatch:
        return ForwardBatch(
            mode=ForwardMode.DECODE, batch_size=bs,
            input_ids=self.input_ids[:bs], positions=self.positions[:bs],
            req_pool_indices=self.req_pool_indices[:bs], seq_lens=self.seq_lens[:bs],
            out_cache_loc=self.out_cache_loc[:bs], req_to_token=self.req_to_token_pool.req_to_token,
            kv_pool=self.kv_pool, seq_lens_cpu=seq_lens_cpu,
        )

    @staticmethod
    def _logits(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.next_token_logits

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture one graph per batch size (the model runner calls this once after construction)."""
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        # largest first: smaller graphs then fit in the memory the largest one already reserved
        for bs in reversed(self.batch_sizes):
            for cascade in ((False, True) if self.cascade and bs >= CASCADE_MIN_BS else (False,)):
                batch = self._static_batch(bs, [1] * bs)
                batch.prefix_groups = _EMPTY_GROUPS if cascade else None
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm up: autotuning, lazy module init, allocator growth
                        self.backend.init_forward_metadata_capture(batch)
                        self._forward(batch)
                    self.backend.init_forward_metadata_capture(batch)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, stream=stream):
                        out = self._forward(batch)
                self.graphs[bs, cascade] = graph
                self.outputs[bs, cascade] = out
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        logger.info("captured CUDA graphs for decode batch sizes %s", self.batch_sizes)

    # -- replay ---------------------------------------------------------------------------------
    def can_run(self, batch: ForwardBatch) -> bool:
        # decode logits do not depend on return_logprob (logprobs come from the sampler), so no check on it
        # a cascade batch runs eagerly unless cascade graphs exist (then it replays one of them, see replay)
        return (batch.mode.is_decode() and 0 < batch.batch_size <= self.max_bs and bool(self.graphs)
                and (self.cascade or not self.backend.needs_eager(batch)))

    def _variant(self, batch: ForwardBatch, pbs: int) -> bool:
        """Whether to replay the cascade graph of size pbs for this batch."""
        groups = batch.prefix_groups
        return (self.cascade and groups is not None and (pbs, True) in self.graphs
                and self.backend.cascade_graph_fits(groups, pbs))

    def replay(self, batch: ForwardBatch) -> Any:
        bs = batch.batch_size
        pbs = self.batch_sizes[bisect.bisect_left(self.batch_sizes, bs)]
        if pbs != bs:  # padding entries: row 0, length 1, pad slot 0
            self.req_pool_indices[bs:pbs].zero_()
            self.seq_lens[bs:pbs].fill_(1)
            self.out_cache_loc[bs:pbs].zero_()
            self.input_ids[bs:pbs].zero_()
            self.positions[bs:pbs].zero_()
        self.input_ids[:bs].copy_(batch.input_ids, non_blocking=True)
        self.positions[:bs].copy_(batch.positions, non_blocking=True)
        self.req_pool_indices[:bs].copy_(batch.req_pool_indices, non_blocking=True)
        self.seq_lens[:bs].copy_(batch.seq_lens, non_blocking=True)
        self.out_cache_loc[:bs].copy_(batch.out_cache_loc, non_blocking=True)
        # host lengths only when the caller has them: a .tolist() here would wait for the GPU, and the
        # triton backend needs none (flashinfer's planner reads them, falling back to the device copy)
        seq_cpu = None if batch.seq_lens_cpu is None else list(batch.seq_lens_cpu) + [1] * (pbs - bs)
        static = self._static_batch(pbs, seq_cpu)
        cascade = self._variant(batch, pbs)
        static.prefix_groups = batch.prefix_groups if cascade else None  # padding rows are in no group
        self.backend.init_forward_metadata_replay(static)
        self.graphs[pbs, cascade].replay()
        out = self.outputs[pbs, cascade]
        logits = self._logits(out)[:bs]
        if isinstance(out, torch.Tensor):
            return logits
        if dataclasses.is_dataclass(out):
            return dataclasses.replace(out, next_token_logits=logits)
        out.next_token_logits = logits  # pragma: no cover - non-dataclass result objects
        return out
