"""ModelRunner: loads the model, sizes the KV pools, owns the attention backend, runs forwards.

    runner = ModelRunner(ServerArgs(model_path="default"))
    out = runner.forward(batch)            # LogitsOutput (next_token_logits fp32 [bs, vocab], ...)

The tokenizer is not the runner's business (the engine loads it with runtime.tokenizer.get_tokenizer).
On CUDA, decode batches replay captured CUDA graphs (runtime/cuda_graph_runner.py) unless disabled.
Tensor parallel (tp_size > 1): this runner is one rank (its heads and MLP columns, its KV heads); rank 0
broadcasts each forward's inputs to the worker ranks (runtime/tp_broadcast.py, runtime/tp_worker.py)
before running it. The model comes resolved (runtime/resolved_model.py: folder + config, once at start-up);
a runner built from bare ServerArgs (tests, benchmarks) resolves it itself.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Optional

import torch

from sglang.runtime import distributed
from sglang.runtime.attention import create_attention_backend
from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.layers.logits_processor import LogitsOutput, LogitsProcessor
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool
from sglang.runtime.model_config import parse_dtype
from sglang.runtime.model_loader.loader import load_model
from sglang.runtime.multimodal.feature_cache import FeatureCache
from sglang.runtime.multimodal.inputs import VIDEO
from sglang.runtime.multimodal.tokens import pad_id
from sglang.runtime.resolved_model import ResolvedModel, resolve_model
from sglang.runtime.server_args import ServerArgs, default_max_running_requests
from sglang.runtime.tp_broadcast import broadcast_forward, broadcast_stop

logger = logging.getLogger(__name__)

REQ_POOL_HEADROOM = 8  # extra request rows: requests being admitted while others finish
CONTEXT_HEADROOM = 8  # extra columns per row, so a full-context request can still take its last decode step
CPU_KV_POOL_BYTES = 1 << 30  # default KV pool budget on CPU when max_total_tokens is not given
MIN_KV_TOKENS = 64
# projected image/video features kept by content hash (vision-language models): ~200 llava-1.5 images in bf16
FEATURE_CACHE_BYTES = {"cuda": 1 << 30, "cpu": 256 << 20}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto|cpu|cuda, got {name!r}")
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return parse_dtype(name)


class ModelRunner:
    def __init__(self, server_args: ServerArgs, tp_rank: int = 0, model: Optional[ResolvedModel] = None) -> None:
        self.server_args = server_args
        self.tp_rank, self.tp_size = tp_rank, server_args.tp_size
        self.device = resolve_device(server_args.device)
        if self.device.type == "cuda" and self.device.index is None:
            # one GPU per tp rank: a tp rank uses its node's GPU number local_rank (node r's ranks start at r * tp_size / nnodes)
            local = distributed.local_rank(tp_rank, self.tp_size, server_args.nnodes)
            self.device = torch.device("cuda", local if self.tp_size > 1 else torch.cuda.current_device())
            if self.tp_size > 1:
                torch.cuda.set_device(self.device)
        self.dtype = resolve_dtype(server_args.dtype, self.device)
        model = model if model is not None else resolve_model(server_args)
        self.model_path, self.model_config = model.path, model.config
        if self.model_config.context_len > self.model_config.max_position_embeddings:
            logger.warning(
                "context_length %d exceeds the model's max_position_embeddings %d",
                self.model_config.context_len, self.model_config.max_position_embeddings,
            )

        window = self.model_config.hf_config.get("sliding_window")
        if window and self.model_config.hf_config.get("use_sliding_window", True) and window < self.model_config.context_len:
            logger.warning(
                "the model was trained with a %d-token sliding window; attention here is full, "
                "so outputs past %d tokens differ from the reference", window, window,
            )
        cfg = self.model_config
        if cfg.vision is not None and self.tp_size > 1:
            # the tp forward format (tp_broadcast.py) does not carry image items yet
            raise ValueError("vision-language models run with tp_size=1 only (image inputs are not broadcast)")
        # one cache per model: features differ between models
        self.feature_cache = FeatureCache(FEATURE_CACHE_BYTES[self.device.type]) if cfg.vision is not None else None
        distributed.check_tp_divisible(cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size, self.tp_size)
        if self.tp_size > 1:
            if not server_args.dist_init_addr:
                raise ValueError("tp_size > 1 needs dist_init_addr (the Engine sets it and starts the tp workers)")
            distributed.init_distributed(self.tp_rank, self.tp_size, server_args.dist_init_addr, self.device)
        start = time.perf_counter()
        with distributed.tp_context(self.tp_rank, self.tp_size):
            self.model = load_model(
                self.model_config, self.dtype, self.device, server_args.load_format, server_args.random_seed
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # dummy init is asynchronous; time the real work
        self.load_time_s = time.perf_counter() - start
        logger.info("loaded %s (%s, %s) in %.1f s", self.model_path, self.dtype, self.device, self.load_time_s)
        self.logits_processor = LogitsProcessor(self.model_config.vocab_size)

        self._init_pools()
        self.attn_backend = create_attention_backend(server_args.attention_backend, self)
        self.model.set_attention_backend(self.attn_backend)
        self.cuda_graph_runner = None
        self._init_cuda_graphs()

    # -- memory -----------------------------------------------------------------------------------
    def _init_pools(self) -> None:
        cfg, args = self.model_config, self.server_args
        kv_heads = cfg.num_kv_heads // self.tp_size  # this rank's KV heads
        per_token = TokenKVPool.bytes_per_token(cfg.num_layers, kv_heads, cfg.head_dim, self.dtype)
        self.max_total_num_tokens = self._kv_pool_tokens(per_token)
        if self.tp_size > 1:
            # rank 0's scheduler picks the slots for all ranks: every pool needs the same size (the smallest)
            n = torch.tensor([self.max_total_num_tokens], dtype=torch.int64, device=self.device)
            torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MIN)
            self.max_total_num_tokens = int(n.item())
        self.max_running_requests = args.max_running_requests or default_max_running_requests(
            self.max_total_num_tokens, per_token, cfg.context_len)
        self.req_to_token_pool = ReqToTokenPool(
            self.max_running_requests + REQ_POOL_HEADROOM, cfg.context_len + CONTEXT_HEADROOM, self.device
        )
        self.token_kv_pool = TokenKVPool(
            self.max_total_num_tokens, cfg.num_layers, kv_heads, cfg.head_dim, self.dtype, self.device
        )
        logger.info(
            "KV pool: %d tokens (%.1f MiB); up to %d running requests", self.max_total_num_tokens,
            self.max_total_num_tokens * per_token / 2**20, self.max_running_requests,
        )

    def _kv_pool_tokens(self, per_token: int) -> int:
        cfg, args = self.model_config, self.server_args
        if args.max_total_tokens is not None:
            return int(args.max_total_tokens)
        if self.device.type != "cuda":
            return max(MIN_KV_TOKENS, min(cfg.context_len * 4, 65536, CPU_KV_POOL_BYTES // per_token))
        free, total = torch.cuda.mem_get_info(self.device)
        # mem_fraction_static of the GPU holds weights + KV pool; what is already used counts against it
        budget = total * args.mem_fraction_static - (total - free)
        tokens = int(budget // per_token)
        if tokens < MIN_KV_TOKENS:
            raise RuntimeError(
                f"not enough GPU memory for the KV pool: {budget / 2**30:.2f} GiB left under "
                f"mem_fraction_static={args.mem_fraction_static} ({per_token} bytes per token); "
                "raise mem_fraction_static or set max_total_tokens"
            )
        return tokens

    @property
    def token_to_kv_pool(self) -> TokenKVPool:  # SGLang's name for the same pool
        return self.token_kv_pool

    # -- CUDA graphs ------------------------------------------------------------------------------
    def _init_cuda_graphs(self) -> None:
        if self.device.type != "cuda" or self.server_args.disable_cuda_graph:
            return
        if self.tp_size > 1:  # a replay would skip the broadcast to the workers
            logger.info("tp_size=%d: CUDA graphs are off; decode runs eagerly", self.tp_size)
            return
        if not getattr(self.attn_backend, "supports_cuda_graph", False):
            logger.info("%s does not support CUDA graphs; decode runs eagerly", type(self.attn_backend).__name__)
            return
        from sglang.runtime.cuda_graph_runner import CudaGraphRunner

        start = time.perf_counter()
        runner = CudaGraphRunner(self)
        runner.capture()
        self.cuda_graph_runner = runner
        logger.info("CUDA graph capture took %.1f s", time.perf_counter() - start)

    # -- forward ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: ForwardBatch) -> LogitsOutput:
        if self.cuda_graph_runner is not None and self.cuda_graph_runner.can_run(batch):
            out = self.cuda_graph_runner.replay(batch)
            # the replay's logits are a view of the graph's static output buffer, which the next replay
            # overwrites; a copy ([bs, vocab] fp32, microseconds) keeps results valid for the caller
            out.next_token_logits = out.next_token_logits.clone()
            return out
        self._check_batch(batch)
        if self.tp_size > 1 and self.tp_rank == 0:
            broadcast_forward(batch)  # the workers run the same forward
        self.attn_backend.init_forward_metadata(batch)
        return self.forward_eager(batch)

    def forward_eager(self, batch: ForwardBatch, logits_out: Optional[torch.Tensor] = None) -> LogitsOutput:
        """Model + logits on a batch whose attention metadata is already set (what a CUDA graph captures);
        logits_out: where a DECODE batch's fp32 logits go (the graphs' one shared output buffer)."""
        if batch.mm_items:
            hidden = self._forward_multimodal(batch)
            if batch.return_logprob:  # input logprobs index the vocabulary with the next tokens' ids
                batch = dataclasses.replace(batch, input_ids=self._placeholder_ids(batch))
        else:
            hidden = self.model(batch.input_ids, batch.positions, batch)
        return self.logits_processor(hidden, self.model.lm_head_weight, batch, out=logits_out)

    def _placeholder_ids(self, batch: ForwardBatch) -> torch.Tensor:
        """The batch's ids with each item's hash pad ids (past the vocabulary, the radix key) turned back
        into its placeholder token (image or video), as the prompt's real ids have them."""
        vlm, vocab = self.model_config.vision, self.model_config.vocab_size
        ids = batch.input_ids.clone()
        for item in (item for row in batch.mm_items for item in (row or ())):
            tok = vlm.video_token_id if item.modality == VIDEO else vlm.image_token_id
            ids[ids == pad_id(item.hash, vocab)] = tok
        return ids

    def _forward_multimodal(self, batch: ForwardBatch) -> torch.Tensor:
        """An EXTEND with images: items seen before take their features from the cache (no vision tower);
        the model encodes the rest of the batch's items in one vision-tower call; new features are cached
        and the items' pixels dropped (a request keeps its features until it finishes: retraction and
        later chunks reuse them)."""
        if self.feature_cache is None:
            raise ValueError(f"{self.model_config.architecture} is text-only: it takes no image inputs")
        items = [item for row in batch.mm_items for item in (row or ())]
        self.feature_cache.fill(items)
        hidden = self.model(batch.input_ids, batch.positions, batch, mm_items=batch.mm_items)
        self.feature_cache.store(items)
        for item in items:
            if item.features is not None:
                item.pixel_values = None
        return hidden

    def _check_batch(self, batch: ForwardBatch) -> None:
        n = batch.num_tokens
        if batch.positions.shape[0] != n or batch.out_cache_loc.shape[0] != n:
            raise ValueError(
                f"ForwardBatch: input_ids has {n} tokens but positions has {batch.positions.shape[0]} "
                f"and out_cache_loc {batch.out_cache_loc.shape[0]}"
            )
        if batch.mode.is_decode() and n != batch.batch_size:
            raise ValueError(f"DECODE batch of {batch.batch_size} requests has {n} tokens (must be one each)")

    def shutdown(self) -> None:
        """tp > 1: release the workers (rank 0) and leave the process group; nothing to do at tp 1."""
        if self.tp_size == 1 or not torch.distributed.is_initialized():
            return
        if self.tp_rank == 0:
            try:
                broadcast_stop()  # the workers' stop message
            except Exception as exc:  # a worker died already: the Engine reaps the rest
                logger.warning("tp shutdown broadcast failed: %s", exc)
        distributed.destroy_distributed()

    def get_model_info(self) -> dict:
        return {"model_path": self.model_path, "architecture": self.model_config.architecture,
                "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
                "max_total_num_tokens": self.max_total_num_tokens, "context_len": self.model_config.context_len}
