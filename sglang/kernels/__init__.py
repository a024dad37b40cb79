"""Triton GPU kernels (attention, norm, rotary, activation, KV indices) and their plain-torch references.

The bottom layer: modules here import only torch, Triton and each other. FlashInfer is not wrapped here;
its backend lives in `sglang/runtime/attention/flashinfer_backend.py`.
"""
