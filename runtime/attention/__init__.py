"""Attention backends over the token KV pool: torch (reference), triton, flashinfer."""
