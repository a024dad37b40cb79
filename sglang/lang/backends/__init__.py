"""Frontend backends: where a program's gen/select ops are executed.

All but OpenAI speak the native request dicts (docs/ARCHITECTURE.md) and differ only in transport:
`EngineBackend` (in-process Engine) and `RuntimeEndpoint` (HTTP /generate, ours or SGLang's).
"""
from __future__ import annotations

from sglang.lang.backends.base import BaseBackend, BackendError, GenInput  # noqa: F401
