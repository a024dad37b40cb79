"""ServerArgs: every runtime/server knob, with SGLang's flag names, as one frozen dataclass.

The CLI builds it from argparse (`add_cli_args` / `from_cli_args`); `Engine(**kwargs)` builds it
from keyword arguments. Unknown keys are an error that names the key.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Optional

DEFAULT_MODEL = "default"  # resolved by runtime.model_loader.default_model to SmolLM2-135M-Instruct


@dataclass(frozen=True)
class ServerArgs:
    # model and tokenizer
    model_path: str = DEFAULT_MODEL
    tokenizer_path: Optional[str] = None
    load_format: str = "auto"  # auto | safetensors | gguf | dummy
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    context_length: Optional[int] = None
    trust_remote_code: bool = False
    random_seed: int = 0
    served_model_name: Optional[str] = None
    chat_template: Optional[str] = None
    device: str = "auto"  # auto | cpu | cuda

    # memory and scheduling
    max_total_tokens: Optional[int] = None
    mem_fraction_static: float = 0.85
    # None = sized from the KV pool (default_max_running_requests): small models hold thousands of rows
    max_running_requests: Optional[int] = None
    max_prefill_tokens: int = 16384
    chunked_prefill_size: int = 8192  # <= 0 disables chunking
    schedule_policy: str = "lpm"  # lpm | fcfs
    schedule_conservativeness: float = 1.0
    disable_radix_cache: bool = False
    enable_mixed_chunk: bool = False  # running requests decode inside prefill forwards (fewer decode stalls)
    # decode rows sharing a radix-cached prefix read it once (cascade attention; CUDA graphs of its own with
    # the triton backend): off until it is measured end to end on the GPU
    enable_cascade_decode: bool = False

    # kernels / speed
    attention_backend: Optional[str] = None  # torch | triton | flashinfer; None = best for device
    disable_cuda_graph: bool = False
    # None = max_running_requests (capped at MAX_GRAPH_BS): a full decode batch replays a graph too
    cuda_graph_max_bs: Optional[int] = None
    disable_overlap: bool = False
    disable_regex_jump_forward: bool = False
    tp_size: int = 1  # tensor parallel ranks (one process and device each; rank 0 runs the scheduler)
    dist_init_addr: Optional[str] = None  # host:port of the tp process group; None = a free local port
    nnodes: int = 1  # machines the tp ranks span (tp_size / nnodes ranks each); node 0 serves HTTP
    node_rank: int = 0  # this machine's index among nnodes (> 0: it runs only its tp worker ranks)
    dp_size: int = 1  # data parallel scheduler replicas behind one HTTP front (each its own model and cache)
    dp_policy: str = "cache_aware"  # how the front picks a replica: cache_aware | round_robin

    # server
    host: str = "127.0.0.1"
    port: int = 30000
    api_key: Optional[str] = None
    log_level: str = "info"
    max_batch_size_per_request: int = 512  # a /generate batch longer than this is rejected
    stream_interval: int = 1
    # run the scheduler (model runner, KV pool) in a child process instead of a thread: True/False, or
    # None = the default of the entry point (on for `sglang launch-server`, off for `Engine(...)`)
    scheduler_process: Optional[bool] = None
    # on SIGTERM the server refuses new requests (503 + Retry-After) and lets the running ones finish for
    # at most this many seconds, then aborts what is left and exits
    drain_grace_period: float = 30.0

    def __post_init__(self) -> None:
        if self.schedule_policy not in ("lpm", "fcfs"):
            raise ValueError(f"schedule_policy must be 'lpm' or 'fcfs', got {self.schedule_policy!r}")
        if self.load_format not in ("auto", "safetensors", "gguf", "dummy"):
            raise ValueError(f"load_format must be auto|safetensors|gguf|dummy, got {self.load_format!r}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16", "half", "float", "bf16", "fp16", "fp32"):
            raise ValueError(f"dtype {self.dtype!r} is not supported")
        if self.attention_backend not in (None, "torch", "triton", "flashinfer"):
            raise ValueError(f"attention_backend must be torch|triton|flashinfer, got {self.attention_backend!r}")
        if not 0.0 < self.mem_fraction_static <= 1.0:
            raise ValueError(f"mem_fraction_static must be in (0, 1], got {self.mem_fraction_static}")
        if self.max_total_tokens is not None and self.max_total_tokens <= 0:
            raise ValueError(f"max_total_tokens must be positive, got {self.max_total_tokens}")
        for name in ("max_running_requests", "cuda_graph_max_bs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or unset for the default), got {v}")
        if self.tp_size < 1:
            raise ValueError(f"tp_size must be >= 1, got {self.tp_size}")
        self._check_scale_out()
        if self.drain_grace_period < 0:
            raise ValueError(f"drain_grace_period must be >= 0, got {self.drain_grace_period}")

    def _check_scale_out(self) -> None:
        """dp_size / nnodes / node_rank agree with each other and with tp_size."""
        if self.dp_size < 1:
            raise ValueError(f"dp_size must be >= 1, got {self.dp_size}")
        if self.dp_policy not in ("cache_aware", "round_robin"):
            raise ValueError(f"dp_policy must be cache_aware|round_robin, got {self.dp_policy!r}")
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"need nnodes >= 1 and 0 <= node_rank < nnodes, got nnodes={self.nnodes}, "
                             f"node_rank={self.node_rank}")
        if self.nnodes > 1:
            if self.tp_size % self.nnodes:
                raise ValueError(f"tp_size={self.tp_size} must be a multiple of nnodes={self.nnodes} "
                                 "(each node runs tp_size / nnodes ranks)")
            if not self.dist_init_addr:
                raise ValueError("nnodes > 1 needs --dist-init-addr HOST:PORT (node 0's address, the same on every node)")
            if self.dp_size > 1:
                raise ValueError("dp_size > 1 with nnodes > 1 is not supported (run one server per node group "
                                 "and put `sglang router` in front)")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ServerArgs":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown server argument(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "ServerArgs":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        """One `--flag-name` per field, typed from the default; booleans are store_true flags."""
        for f in fields(ServerArgs):
            flags = ["--" + f.name.replace("_", "-"), *_ALIASES.get(f.name, ())]
            default = f.default
            if isinstance(default, bool):
                parser.add_argument(*flags, action="store_true", default=default)
            elif f.name in _TRISTATE_BOOLS:  # --flag / --no-flag; absent = None (the entry point decides)
                parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None)
            elif default is None or isinstance(default, str):
                parser.add_argument(*flags, type=_optional_type(f.name), default=default)
            else:
                parser.add_argument(*flags, type=type(default), default=default)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "ServerArgs":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


MIN_RUNNING_REQUESTS = 256  # the default never goes below the old fixed 256
MAX_RUNNING_REQUESTS = 4096
TOKENS_PER_ROW = 256  # one row per this many KV tokens: rows only cap, the token budget still admits
REQ_TABLE_SHARE = 0.02  # the request->token table (rows x context x 8 bytes) stays under 2 % of the KV bytes
MAX_GRAPH_BS = 4096


def default_max_running_requests(kv_tokens: int, kv_bytes_per_token: int, context_len: int) -> int:
    """Rows that may decode together when max_running_requests is unset: one per TOKENS_PER_ROW tokens
    of KV pool (a 1B model on a 141 GB GPU holds millions of tokens: thousands of short requests fit,
    and decoding them together is what keeps the GPU busy), within [MIN_RUNNING_REQUESTS,
    MAX_RUNNING_REQUESTS], and no more than the request table's memory share allows."""
    by_tokens = kv_tokens // TOKENS_PER_ROW
    by_table = int(REQ_TABLE_SHARE * kv_tokens * kv_bytes_per_token) // max(context_len * 8, 1)
    return min(MAX_RUNNING_REQUESTS, max(MIN_RUNNING_REQUESTS, min(by_tokens, by_table)))


def default_cuda_graph_max_bs(args: ServerArgs, max_running_requests: int) -> int:
    """The largest decode batch to capture: every batch the scheduler may run, unless capped."""
    cap = args.cuda_graph_max_bs if args.cuda_graph_max_bs is not None else MAX_GRAPH_BS
    return max(1, min(cap, max_running_requests))


_INT_OPTIONALS = {"context_length", "max_total_tokens", "max_running_requests", "cuda_graph_max_bs"}
_TRISTATE_BOOLS = {"scheduler_process"}
# SGLang 0.2.x's README spellings (`--tp 2 --dp 2`, `--nccl-init-addr`), accepted next to the field names
_ALIASES = {"tp_size": ("--tp",), "dp_size": ("--dp",), "dist_init_addr": ("--nccl-init-addr",)}


def _optional_type(name: str):
    return int if name in _INT_OPTIONALS else str
