"""Sampling: per-request SamplingParams, the batched SamplingBatchInfo, and the vectorized Sampler."""
from __future__ import annotations

from sglang.runtime.sampling.sampler import Sampler, token_logprobs, top_logprobs
from sglang.runtime.sampling.sampling_batch_info import GREEDY_TEMPERATURE, SamplingBatchInfo, make_generator, position_uniform
from sglang.runtime.sampling.sampling_params import SamplingParams

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
