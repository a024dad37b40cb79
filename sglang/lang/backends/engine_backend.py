"""EngineBackend: the in-process Engine as a frontend backend (no HTTP; the default for local runs)."""
from __future__ import annotations

from typing import Any, Iterator

from sglang.runtime.chat_template import ChatTemplate, load_chat_template
from sglang.lang.backends.base import BackendError, NativeBackend


class EngineBackend(NativeBackend):
    """Wraps `sglang.Engine` (or anything with its `generate(**native_request)`)."""

    name = "engine"

    def __init__(self, engine: Any = None, **engine_kwargs: Any) -> None:
        if engine is None:
            from sglang.runtime.engine import Engine

            engine = Engine(**engine_kwargs)
        elif engine_kwargs:
            raise TypeError("pass either an Engine or Engine keyword arguments, not both")
        self.engine = engine
        self._template: ChatTemplate | None = None

    def _call(self, payload: dict[str, Any]) -> Any:
        try:
            return self.engine.generate(**payload)
        except ValueError:
            raise  # a bad request: the engine's message names the field
        except Exception as exc:
            raise BackendError(f"engine failed: {type(exc).__name__}: {exc}") from exc

    def _call_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return iter(self.engine.generate(**payload, stream=True))

    def abort(self, rid: str) -> None:
        """Abort an engine request by the rid its payload carried (a finished one is ignored)."""
        self.engine.abort(rid)

    def check_images(self) -> None:
        if getattr(self.engine, "is_multimodal", False):
            return
        path = self.get_server_args().get("model_path", "the model")
        raise BackendError(f"model {path!r} is text-only: sgl.image / sgl.video need a vision-language model")

    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            override = self.get_server_args().get("chat_template")
            self._template = load_chat_template(getattr(self.engine, "tokenizer", None), override)
        return self._template

    def flush_cache(self) -> bool:
        return self.engine.flush_cache() is not False

    def get_server_args(self) -> dict[str, Any]:
        args = self.engine.get_server_args()
        if isinstance(args, dict):
            return dict(args)
        return args.to_dict() if hasattr(args, "to_dict") else dict(vars(args))

    def shutdown(self) -> None:
        self.engine.shutdown()
