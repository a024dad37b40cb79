"""Cache-aware request routing over several serving replicas ("workers").

`tree` (approximate prefix tree of routed keys per worker) ← `policy` (which worker for a key) ←
`workers` (worker interface, HTTP workers, health-checked registry) ← `router` (`Router`: route, retry,
load accounting; usable as a library) ← `app` (the HTTP front, `sglang router`).
"""
