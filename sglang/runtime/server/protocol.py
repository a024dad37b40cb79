"""Pydantic request models of the HTTP server: SGLang 0.2.x's native `/generate` and OpenAI's `/v1/*`.

The models check shapes and JSON types only (a wrong type is a 400 naming the field); the engine checks
meanings (`SamplingParams.from_dict` / `.verify`: unknown sampling key, ranges, prompt length).
Unknown top-level fields are rejected so a typo does not silently do nothing.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- native API

class GenerateRequest(_Strict):
    """SGLang 0.2.x `GenerateReqInput` as JSON."""

    text: Optional[Union[StrictStr, list[StrictStr]]] = None
    input_ids: Optional[Union[list[StrictInt], list[list[StrictInt]]]] = None
    sampling_params: Optional[Union[dict[str, Any], list[dict[str, Any]]]] = None
    rid: Optional[Union[StrictStr, list[StrictStr]]] = None
    return_logprob: Optional[Union[StrictBool, list[StrictBool]]] = None
    logprob_start_len: Optional[Union[StrictInt, list[StrictInt]]] = None
    top_logprobs_num: Optional[Union[StrictInt, list[StrictInt]]] = None
    return_text_in_logprobs: StrictBool = False
    stream: StrictBool = False
    # vision-language models: per prompt an image (path, data URL, base64) or a list; a batch: one entry per prompt
    image_data: Optional[Any] = None
    video_data: Optional[Any] = None  # LLaVA-NeXT-Video: [path, num_frames] or {"path", "num_frames"}, or a list

    def batch_size(self) -> int:
        """Number of prompts (1 for a single prompt)."""
        if isinstance(self.text, list):
            return len(self.text)
        if self.input_ids and isinstance(self.input_ids[0], list):
            return len(self.input_ids)
        return 1

    def is_batch(self) -> bool:
        return isinstance(self.text, list) or bool(self.input_ids and isinstance(self.input_ids[0], list))


class AbortRequest(_Strict):
    rid: StrictStr


# --------------------------------------------------------------------------- OpenAI API

class StreamOptions(_Strict):
    include_usage: StrictBool = False


class OpenAISampling(_Strict):
    """Fields shared by completions and chat completions, plus SGLang's extensions (extra_body)."""

    model: StrictStr
    max_tokens: Optional[StrictInt] = None
    temperature: Optional[StrictFloat] = None
    top_p: Optional[StrictFloat] = None
    n: StrictInt = 1
    stop: Optional[Union[StrictStr, list[StrictStr]]] = None
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    seed: Optional[StrictInt] = None
    presence_penalty: Optional[StrictFloat] = None
    frequency_penalty: Optional[StrictFloat] = None
    logit_bias: Optional[dict[str, StrictFloat]] = None
    user: Optional[StrictStr] = None
    # SGLang extensions
    top_k: Optional[StrictInt] = None
    min_p: Optional[StrictFloat] = None
    repetition_penalty: Optional[StrictFloat] = None
    min_tokens: Optional[StrictInt] = None
    ignore_eos: Optional[StrictBool] = None
    stop_token_ids: Optional[list[StrictInt]] = None
    skip_special_tokens: Optional[StrictBool] = None
    no_stop_trim: Optional[StrictBool] = None
    regex: Optional[StrictStr] = None
    json_schema: Optional[Union[StrictStr, dict[str, Any]]] = None
    ebnf: Optional[StrictStr] = None
    rid: Optional[StrictStr] = None


class CompletionRequest(OpenAISampling):
    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
    max_tokens: Optional[StrictInt] = 16  # OpenAI's documented default for /v1/completions
    logprobs: Optional[StrictInt] = None  # number of top logprobs per token (0..20)
    echo: StrictBool = False
    best_of: Optional[StrictInt] = None
    suffix: Optional[StrictStr] = None


class ChatMessage(BaseModel):
    # Content may be a string or a list of parts ({"type": "text", "text": ...}); other keys pass
    # through to the chat template (e.g. "name").
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Optional[Union[StrictStr, list[dict[str, Any]]]] = None


class ChatCompletionRequest(OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = None
    logprobs: StrictBool = False
    top_logprobs: Optional[StrictInt] = None
    response_format: Optional[dict[str, Any]] = None  # checked by runtime.constrained
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[StrictBool] = None
    continue_final_message: StrictBool = False
