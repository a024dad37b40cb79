"""Continuous-batching scheduler: a short loop (scheduler) over parts with their own state — KV slots
and prefix cache (cache_manager), requests in flight and outputs (request_table), waiting queue and
EXTEND batches (prefill, with schedule_policy), running batch and retraction (decode), sampling
(sample), post-forward processing (process), overlap decoding (overlap); plus Req (req), ForwardBatch
building (batch), response dicts (output) and input logprobs (logprobs)."""
