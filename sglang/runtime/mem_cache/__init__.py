"""KV storage (memory_pool) and the prefix-cache policy over it (radix_cache)."""
