"""Sampling: per-request SamplingParams, the batched SamplingBatchInfo, and the vectorized Sampler."""
from __future__ import annotations

from .sampler import Sampler, token_logprobs, top_logprobs
from .sampling_batch_info import GREEDY_TEMPERATURE, SamplingBatchInfo, make_generator, position_uniform
from .sampling_params import SamplingParams

__all__ = [
    "GREEDY_TEMPERATURE",
    "Sampler",
    "SamplingBatchInfo",
    "SamplingParams",
    "make_generator",
    "position_uniform",
    "token_logprobs",
    "top_logprobs",
]
