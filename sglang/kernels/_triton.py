"""Importing Triton for the kernels in this package.

Triton decides at decoration time (module import) whether `@triton.jit` compiles for a GPU or runs in
its NumPy interpreter (`TRITON_INTERPRET=1`). On a machine without CUDA nothing can be compiled, so we
default to the interpreter there: the same kernels then run (slowly) on CPU tensors, which is what the
CPU test suite checks. On a CUDA machine the environment is left alone.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: E402
    import triton.language as tl  # noqa: E402

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    HAS_TRITON = False


def require_triton() -> None:
    """Raise a clear error when a Triton kernel is asked for but triton is not installed."""
    if not HAS_TRITON:
        raise ImportError("the triton kernels need the 'triton' package: pip install triton")


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (tests), False when compiled for a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def check_kv_layout(kernel: str, q_heads: int, head_dim: int, k_buffer: torch.Tensor, v_buffer: torch.Tensor) -> None:
    """The pool buffers must be [slots, kv_heads, head_dim] alike, with query heads a multiple of kv heads."""
    hkv = k_buffer.shape[1]
    if k_buffer.shape[2] != head_dim or v_buffer.shape[1:] != k_buffer.shape[1:]:
        raise ValueError(f"{kernel}: k/v buffers {tuple(k_buffer.shape)}/{tuple(v_buffer.shape)} "
                         f"do not match q head_dim {head_dim}")
    if q_heads % hkv:
        raise ValueError(f"{kernel}: {q_heads} query heads is not a multiple of {hkv} kv heads")
