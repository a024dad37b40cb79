"""OpenAI: a frontend backend for OpenAI-compatible chat/completions APIs (api.openai.com, our /v1).

Chat models receive the program's role messages, so a gen must sit at the start of an assistant
turn. json_schema becomes a `response_format` (structured outputs). What the API cannot do (regex /
dtype-constrained gen, select scoring, top-k/min-p on the real OpenAI) is a BackendError naming the
feature, never a silent approximation.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from sglang.runtime.chat_template import ChatTemplate, get_named
from sglang.lang.backends.base import BackendError, BaseBackend, GenInput
from sglang.lang.gen_rules import NATIVE_GEN_FIELDS, frontend_name

# native sampling_params key -> OpenAI argument: the arguments the OpenAI API itself takes (it spells
# max_new_tokens the frontend way); the other per-gen fields go in extra_body to servers that take them
_DIRECT = {n: frontend_name(n) for n in ("max_new_tokens", "stop", "temperature", "top_p", "frequency_penalty",
                                         "presence_penalty", "seed")}
_EXTRA = tuple(n for n in NATIVE_GEN_FIELDS if n not in _DIRECT and n not in ("regex", "json_schema"))


class OpenAI(BaseBackend):
    name = "openai"

    def __init__(self, model_name: str, is_chat_model: Optional[bool] = None, chat_template: Optional[str] = None,
                 base_url: Optional[str] = None, api_key: Optional[str] = None, allow_extra_params: Optional[bool] = None,
                 **client_kwargs: Any) -> None:
        import openai

        self.model_name = model_name
        self.is_chat_model = ("instruct" not in model_name) if is_chat_model is None else is_chat_model
        # top_k & co. go in extra_body only to servers known to take them (not api.openai.com)
        self.allow_extra_params = (base_url is not None) if allow_extra_params is None else allow_extra_params
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", **client_kwargs)
        self._template = get_named(chat_template or ("chatml" if self.is_chat_model else "default"))

    def chat_template(self) -> ChatTemplate:
        return self._template

    def check_images(self) -> None:
        raise BackendError("openai backend: sgl.image is not supported by this frontend's OpenAI backend")

    def _args(self, sampling_params: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        for key in ("regex", "dtype"):
            if sampling_params.get(key) is not None:
                raise BackendError(f"openai backend cannot do {key}-constrained generation ({key}="
                                   f"{sampling_params[key]!r}); use the engine or RuntimeEndpoint backend")
        if options.get("return_logprob"):
            raise BackendError("openai backend does not return prompt logprobs (return_logprob)")
        args: dict[str, Any] = {"model": self.model_name}
        extra: dict[str, Any] = {}
        for key, value in sampling_params.items():
            if value is None:
                continue
            if key in _DIRECT:
                args[_DIRECT[key]] = value
            elif key in _EXTRA:
                if not self.allow_extra_params:
                    raise BackendError(f"openai backend: the OpenAI API has no {key!r} sampling parameter")
                extra[key] = value
            elif key not in ("n", "json_schema"):
                raise BackendError(f"openai backend: unsupported sampling parameter {key!r}")
        if extra:
            args["extra_body"] = extra
        if sampling_params.get("json_schema") is not None:
            if not self.is_chat_model:
                raise BackendError("openai backend: json_schema needs a chat model (response_format)")
            schema = json.loads(sampling_params["json_schema"])
            args["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema, "strict": True}}
        return args

    def _messages(self, inp: GenInput) -> list[dict[str, str]]:
        if inp.role != "assistant" or inp.role_text:
            raise BackendError("openai chat model: sgl.gen must come right at the start of an assistant turn "
                               "(s += sgl.assistant(sgl.gen(...))); text outside roles cannot be sent")
        return list(inp.messages)

    def generate(self, inp: GenInput, sampling_params: dict[str, Any], options: dict[str, Any]) -> tuple[str, dict]:
        args = self._args(sampling_params, options)
        try:
            if self.is_chat_model:
                resp = self.client.chat.completions.create(messages=self._messages(inp), **args)
                text, finish = resp.choices[0].message.content or "", resp.choices[0].finish_reason
            else:
                resp = self.client.completions.create(prompt=inp.text, **args)
                text, finish = resp.choices[0].text, resp.choices[0].finish_reason
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"openai backend request failed: {type(exc).__name__}: {exc}") from exc
        usage = resp.usage
        meta = {"id": resp.id, "finish_reason": {"type": finish},
                "prompt_tokens": getattr(usage, "prompt_tokens", None),
                "completion_tokens": getattr(usage, "completion_tokens", None)}
        return text, meta

    def generate_stream(self, inp: GenInput, sampling_params: dict[str, Any],
                        options: dict[str, Any]) -> Iterator[tuple[str, Optional[dict]]]:
        args = self._args(sampling_params, options)
        finish = None
        try:
            if self.is_chat_model:
                stream = self.client.chat.completions.create(messages=self._messages(inp), stream=True, **args)
            else:
                stream = self.client.completions.create(prompt=inp.text, stream=True, **args)
            for chunk in stream:
                if not chunk.choices:
                    continue
                c = chunk.choices[0]
                piece = (c.delta.content if self.is_chat_model else c.text) or ""
                finish = c.finish_reason or finish
                if piece:
                    yield piece, None
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"openai backend stream failed: {type(exc).__name__}: {exc}") from exc
        yield "", {"finish_reason": {"type": finish}}

    def select(self, inp: GenInput, choices: list[str], method: str, temperature: float) -> tuple[int, dict]:
        raise BackendError("openai backend cannot do select: scoring choices needs prompt logprobs, which the "
                           "OpenAI API does not return; use the engine or RuntimeEndpoint backend")
