"""Continuous-batching scheduler: requests (req), admission policy (schedule_policy), KV bookkeeping
and batch building (batch), the loop (scheduler), response dicts (output)."""
