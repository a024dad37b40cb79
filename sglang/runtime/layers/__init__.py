"""Model building blocks (norm, rotary, activation, linear with fused-weight loading, attention, logits).

Hot element-wise ops go through `ops.get_op(name, device)`, looked up once per layer at construction,
so GPU kernels replace the torch versions without touching the model code.
"""
