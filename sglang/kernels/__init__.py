"""GPU kernels (Triton) and the FlashInfer wrapper. No project imports: everything here is leaf code."""
