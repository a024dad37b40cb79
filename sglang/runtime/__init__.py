"""The serving runtime: model code and loaders, KV pool, radix cache, scheduler, sampling,
constrained decoding, the in-process Engine, the HTTP server and backend clients."""
