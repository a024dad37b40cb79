"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (sync and SSE streaming).

Each OpenAI request becomes one native single-prompt, n=1 engine request per output choice (choice
index = prompt index * n + sample index), so streamed choices interleave naturally and every choice
has its own rid to abort when the client disconnects. Logprobs come from the native meta_info.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from sglang.runtime.chat_template import load_chat_template
from sglang.runtime.io_struct import MAX_TOP_LOGPROBS_NUM
from sglang.runtime.server.common import (
    OFFLOAD_CHARS,
    SSE_DONE,
    ClientGone,
    EventStreamResponse,
    HTTPError,
    StreamTracker,
    as_http_error,
    check_schema_depth,
    engine_generate,
    merge_streams,
    new_rid,
    open_streams,
    parse_body,
    run_admission,
    run_or_abort,
    sse,
)
from sglang.runtime.sampling.sampling_params import FIELD_NAMES, native_name
from sglang.runtime.server.metrics import StreamTimer
from sglang.runtime.server.protocol import ChatCompletionRequest, CompletionRequest, OpenAISampling

MAX_TOP_LOGPROBS = MAX_TOP_LOGPROBS_NUM
# Request fields that are SamplingParams fields (under the one rename map) are copied when not None; these
# few need their own handling in _sampling (defaults, list forms, per-choice seeds) or are not per request.
_SPECIAL_FIELDS = frozenset({"max_tokens", "stop", "seed", "logit_bias", "n"})
_SAMPLING_FIELDS = {f: native_name(f) for f in OpenAISampling.model_fields
                    if native_name(f) in FIELD_NAMES and f not in _SPECIAL_FIELDS}


# --------------------------------------------------------------------------- request -> native

def check_model(ctx: Any, name: str) -> None:
    path = ctx.model_path()
    accepted = {ctx.model_name, path, path.rstrip("/").rsplit("/", 1)[-1], ctx.server_args.model_path}
    if name not in accepted:
        raise HTTPError(404, f"The model {name!r} does not exist; this server serves {ctx.model_name!r}.",
                        param="model", code="model_not_found")


def _sampling(req: OpenAISampling, max_tokens: Optional[int]) -> dict[str, Any]:
    if req.n < 1:
        raise HTTPError(400, f"n must be >= 1, got {req.n}", param="n")
    sp: dict[str, Any] = {}
    if max_tokens is not None:
        sp["max_new_tokens"] = max_tokens
    if req.stop is not None:
        sp["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    for field, key in _SAMPLING_FIELDS.items():
        value = getattr(req, field, None)
        if value is not None:
            sp[key] = value
    if isinstance(sp.get("json_schema"), dict):
        sp["json_schema"] = json.dumps(sp["json_schema"])
    check_schema_depth(sp, "json_schema")
    if req.seed is not None:
        sp["seed"] = req.seed
    if req.logit_bias:
        sp["logit_bias"] = dict(req.logit_bias)
    return sp


def _per_choice(prompts: list[dict[str, Any]], sp: dict[str, Any], n: int, base: dict[str, Any],
                rid: Optional[str]) -> list[dict[str, Any]]:
    """Native kwargs per choice; n samples of one prompt get seeds seed, seed+1, ... (distinct, reproducible)."""
    rid = rid or new_rid()
    subs = []
    for p_idx, prompt in enumerate(prompts):
        for j in range(n):
            s = dict(sp)
            if j and "seed" in s:
                s["seed"] = s["seed"] + j
            subs.append({**prompt, **base, "sampling_params": s, "rid": f"{rid}-{p_idx * n + j}"})
    return subs


def _check_batch(ctx: Any, count: int) -> None:
    limit = ctx.server_args.max_batch_size_per_request
    if count > limit:
        raise HTTPError(400, f"the request asks for {count} choices (prompts x n), more than "
                             f"max_batch_size_per_request={limit}", param="n")


def _usage(outs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    metas = [o.get("meta_info") or {} for o in outs]
    # The prompt is counted once per prompt, not once per sample (as OpenAI does).
    prompt = sum(int(m.get("prompt_tokens") or 0) for m in metas[::n])
    cached = sum(int(m.get("cached_tokens") or 0) for m in metas[::n])
    completion = sum(int(m.get("completion_tokens") or 0) for m in metas)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _finish_reason(meta: dict[str, Any]) -> Optional[str]:
    fr = meta.get("finish_reason")
    if fr is None:
        return None
    kind = fr.get("type") if isinstance(fr, dict) else str(fr)
    return {"stop": "stop", "length": "length"}.get(kind, kind)


# --------------------------------------------------------------------------- logprob shapes

def _entries(meta: dict[str, Any], prefix: str, start: int = 0) -> list[tuple[Any, str, list]]:
    lps = meta.get(f"{prefix}_token_logprobs") or []
    tops = meta.get(f"{prefix}_top_logprobs") or []
    out = []
    for k in range(start, len(lps)):
        lp, _tid, text = lps[k]
        top = tops[k] if k < len(tops) and tops[k] else []
        out.append((lp, text if text is not None else "", [(t[0], t[2] if t[2] is not None else "") for t in top]))
    return out


def _completion_logprobs(entries: list[tuple[Any, str, list]], offset: int) -> dict[str, Any]:
    tokens, token_lps, tops, offsets = [], [], [], []
    for lp, text, top in entries:
        tokens.append(text)
        token_lps.append(lp)
        tops.append({t: l for l, t in top} if top else None)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def _chat_logprobs(entries: list[tuple[Any, str, list]]) -> dict[str, Any]:
    content = []
    for lp, text, top in entries:
        content.append({"token": text, "logprob": lp, "bytes": list(text.encode("utf-8")),
                        "top_logprobs": [{"token": t, "logprob": l, "bytes": list(t.encode("utf-8"))}
                                         for l, t in top]})
    return {"content": content}


# --------------------------------------------------------------------------- chat template

def render_chat(ctx: Any, req: ChatCompletionRequest) -> tuple[str, list[str]]:
    """The prompt and the images of its `image_url` parts, in order: each image part becomes the template's
    image token (one per image; the engine expands it to the image's tokens)."""
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    images: list[str] = []
    for i, m in enumerate(messages):  # flatten content parts
        if isinstance(m.get("content"), list):
            parts = []
            for j, part in enumerate(m["content"]):
                if part.get("type") == "image_url":
                    images.append(image_part_url(part, f"messages[{i}].content[{j}].image_url"))
                    parts.append(getattr(ctx.chat_template, "image_token", "<image>"))
                    continue
                if part.get("type") != "text":
                    raise HTTPError(400, f"message content part type {part.get('type')!r} is not supported "
                                         "(text and image_url)", param="messages")
                parts.append(str(part.get("text", "")))
            m["content"] = "".join(parts)
    try:
        text = ctx.chat_template.render(messages, add_generation_prompt=not req.continue_final_message)
    except Exception as exc:  # a jinja template raising on this conversation (e.g. role order)
        raise HTTPError(400, f"could not apply the chat template: {exc}", param="messages") from exc
    return text, images


def image_part_url(part: dict[str, Any], where: str) -> str:
    """An image_url part's image source: a data URL or a local file (the engine decodes it); an http(s) URL
    is a clear 400 here, since this server does not reach the network."""
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise HTTPError(400, f"{where}.url must be a non-empty string", param=where)
    if url.startswith(("http://", "https://")):
        raise HTTPError(400, f"{where}: image URL {url[:80]!r} is not fetched (this server does not reach the "
                             "network); send the image as a data URL (data:image/png;base64,...) or a local path",
                        param=where)
    return url


# --------------------------------------------------------------------------- routes

def register_openai_routes(app: FastAPI, ctx: Any) -> None:
    # The model's jinja template, or the --chat-template override (name | .json | .jinja)
    ctx.chat_template = load_chat_template(ctx.engine.tokenizer, ctx.server_args.chat_template)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": ctx.model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "sglang", "root": ctx.model_path()}]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        check_model(ctx, model_id)
        return {"id": ctx.model_name, "object": "model", "created": int(time.time()), "owned_by": "sglang"}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = await parse_body(request, CompletionRequest)
        check_model(ctx, req.model)
        if req.suffix:
            raise HTTPError(400, "suffix is not supported", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise HTTPError(400, "best_of different from n is not supported", param="best_of")
        if req.logprobs is not None and not 0 <= req.logprobs <= MAX_TOP_LOGPROBS:
            raise HTTPError(400, f"logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {req.logprobs}", param="logprobs")
        p = req.prompt
        if isinstance(p, str):
            prompts = [{"text": p}]
        elif p and all(isinstance(x, int) for x in p):
            prompts = [{"input_ids": list(p)}]
        else:
            prompts = [{"text": x} if isinstance(x, str) else {"input_ids": list(x)} for x in p]
        if not prompts or any(v == [] for pr in prompts for v in pr.values()):
            raise HTTPError(400, "prompt must not be empty", param="prompt")
        _check_batch(ctx, len(prompts) * req.n)
        want_lp = req.logprobs is not None
        base = {"return_logprob": want_lp, "top_logprobs_num": req.logprobs or 0,
                "logprob_start_len": 0 if (want_lp and req.echo) else -1, "return_text_in_logprobs": True}
        subs = _per_choice(prompts, _sampling(req, req.max_tokens), req.n, base, req.rid)
        echo_texts = [_prompt_text(ctx, pr) for pr in prompts] if req.echo else None
        shape = _CompletionShape(req, echo_texts)
        return await _serve(ctx, request, subs, req.n, req.stream, req.stream_options, shape)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = await parse_body(request, ChatCompletionRequest)
        check_model(ctx, req.model)
        if req.tools:
            raise HTTPError(400, "tools / function calling is not supported", param="tools")
        if req.top_logprobs is not None:
            if not req.logprobs:
                raise HTTPError(400, "top_logprobs requires logprobs=true", param="top_logprobs")
            if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
                raise HTTPError(400, f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {req.top_logprobs}",
                                param="top_logprobs")
        _check_batch(ctx, req.n)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        sp = _sampling(req, max_tokens)
        stops = tuple(getattr(ctx.chat_template, "stop_strs", ()) or ())
        if stops:
            sp["stop"] = list(sp.get("stop", [])) + [s for s in stops if s not in sp.get("stop", [])]
        if req.response_format is not None:
            from sglang.runtime.constrained import response_format_to_constraint

            # off the event loop, under the compile budget; a ValueError naming the field -> 400
            spec = await run_admission(response_format_to_constraint, response_format=req.response_format)
            if spec is not None:
                if any(sp.get(k) is not None for k in ("regex", "json_schema", "ebnf")):
                    raise HTTPError(400, "response_format cannot be combined with regex/json_schema/ebnf",
                                    param="response_format")
                if spec.kind == "ebnf":
                    sp["ebnf"] = spec.source  # the engine picks the regex or the exact CFG path itself
                else:
                    sp["regex"] = spec.regex
        base = {"return_logprob": req.logprobs, "top_logprobs_num": req.top_logprobs or 0,
                "logprob_start_len": -1, "return_text_in_logprobs": True}
        text, images = render_chat(ctx, req)
        prompt: dict[str, Any] = {"text": text}
        if images:
            prompt["image_data"] = images if len(images) > 1 else images[0]
        context_len = getattr(ctx.engine, "context_len", None)
        # (with images the prompt's length is known only once they are expanded: the default max_tokens)
        if max_tokens is None and context_len and not images:
            # OpenAI semantics: no max_tokens means "until EOS or the context is full" (as SGLang does)
            ids = await _tokenize(ctx.engine, prompt["text"])
            prompt = {"input_ids": ids}
            room = min(int(context_len), int(getattr(ctx.engine, "pool_size", None) or context_len))
            sp["max_new_tokens"] = max(room - len(ids), 1)  # the KV pool may be smaller than the context
        subs = _per_choice([prompt], sp, req.n, base, req.rid)
        return await _serve(ctx, request, subs, req.n, req.stream, req.stream_options, _ChatShape(req))


async def _tokenize(engine: Any, text: str) -> list[int]:
    """Token ids of a rendered chat; a long one is tokenized in the admission pool, off the event loop,
    and one that surely exceeds the context is refused without tokenizing."""
    limit = engine.max_prompt_chars() if hasattr(engine, "max_prompt_chars") else None
    if limit is not None and len(text) > limit:
        raise HTTPError(400, f"the rendered chat has {len(text)} characters, more than the context length can hold",
                        param="messages")
    if len(text) > OFFLOAD_CHARS:
        return list(await run_admission(engine.tokenizer.encode, text=text))
    return list(engine.tokenizer.encode(text))


def _prompt_text(ctx: Any, prompt: dict[str, Any]) -> str:
    if "text" in prompt:
        return prompt["text"]
    return ctx.engine.tokenizer.decode(prompt["input_ids"])


# --------------------------------------------------------------------------- response shapes

class _CompletionShape:
    obj, chunk_obj, id_prefix = "text_completion", "text_completion", "cmpl-"

    def __init__(self, req: CompletionRequest, echo_texts: Optional[list[str]]) -> None:
        self.req = req
        self.echo_texts = echo_texts
        # Skipping to the latest output merges deltas into one chunk: the same text, but logprobs'
        # text_offset restarts in each chunk, so with logprobs every output gets its own chunk.
        self.coalescible = req.logprobs is None

    def _echo(self, i: int) -> str:
        return self.echo_texts[i // self.req.n] if self.echo_texts is not None else ""

    def _lp(self, i: int, meta: dict[str, Any], start: int, first: bool) -> Optional[dict[str, Any]]:
        if self.req.logprobs is None:
            return None
        entries = _entries(meta, "output", start)
        offset = 0
        if self.req.echo:
            if first:
                entries = _entries(meta, "input") + entries
        else:
            offset = len(self._echo(i))
        return _completion_logprobs(entries, offset)

    def choice(self, i: int, out: dict[str, Any]) -> dict[str, Any]:
        meta = out.get("meta_info") or {}
        return {"index": i, "text": self._echo(i) + out.get("text", ""), "logprobs": self._lp(i, meta, 0, True),
                "finish_reason": _finish_reason(meta)}

    def delta(self, i: int, text: str, meta: dict[str, Any], lp_start: int, first: bool) -> list[dict[str, Any]]:
        if first:
            text = self._echo(i) + text
        return [{"index": i, "text": text, "logprobs": self._lp(i, meta, lp_start, first),
                 "finish_reason": _finish_reason(meta)}]


class _ChatShape:
    obj, chunk_obj, id_prefix = "chat.completion", "chat.completion.chunk", "chatcmpl-"

    def __init__(self, req: ChatCompletionRequest) -> None:
        self.req = req
        self.coalescible = True  # merged deltas concatenate to the same content and logprob entries

    def choice(self, i: int, out: dict[str, Any]) -> dict[str, Any]:
        meta = out.get("meta_info") or {}
        lp = _chat_logprobs(_entries(meta, "output")) if self.req.logprobs else None
        return {"index": i, "message": {"role": "assistant", "content": out.get("text", "")}, "logprobs": lp,
                "finish_reason": _finish_reason(meta)}

    def delta(self, i: int, text: str, meta: dict[str, Any], lp_start: int, first: bool) -> list[dict[str, Any]]:
        lp = _chat_logprobs(_entries(meta, "output", lp_start)) if self.req.logprobs else None
        chunks = []
        if first:
            chunks.append({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                           "finish_reason": None})
        if text or lp and lp["content"]:
            chunks.append({"index": i, "delta": {"content": text}, "logprobs": lp, "finish_reason": None})
        reason = _finish_reason(meta)
        if reason is not None:
            chunks.append({"index": i, "delta": {}, "logprobs": None, "finish_reason": reason})
        return chunks


# --------------------------------------------------------------------------- serving

async def _serve(ctx: Any, request: Request, subs: list[dict[str, Any]], n: int, stream: bool,
                 stream_options: Any, shape: Any) -> Any:
    engine = ctx.engine
    rids = [s["rid"] for s in subs]
    tracker = StreamTracker(engine, rids)
    created = int(time.time())
    resp_id = shape.id_prefix + rids[0].rsplit("-", 1)[0]
    head = {"id": resp_id, "created": created, "model": ctx.model_name}
    if not stream:
        timer = StreamTimer(ctx.metrics)
        try:
            outs = await run_or_abort(request.receive,
                                      asyncio.gather(*(engine_generate(engine, s) for s in subs)), tracker.close)
        except ClientGone:
            return Response(status_code=499)
        except Exception as exc:
            tracker.close()
            raise as_http_error(exc) from exc
        timer.done()
        for o in outs:
            ctx.metrics.observe_finished(o.get("meta_info") or {})
        return JSONResponse({**head, "object": shape.obj, "choices": [shape.choice(i, o) for i, o in enumerate(outs)],
                             "usage": _usage(outs, n)})

    timers = [StreamTimer(ctx.metrics) for _ in subs]
    try:
        streams, first = await open_streams(engine, request, subs, tracker, coalesce=shape.coalescible)
    except ClientGone:
        return Response(status_code=499)
    include_usage = bool(stream_options and stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        sent_text = [0] * len(subs)
        sent_lp = [0] * len(subs)
        started = [False] * len(subs)
        finals: dict[int, dict[str, Any]] = {}
        try:
            async for i, out in merge_streams(streams, first, coalesce=shape.coalescible):
                meta = out.get("meta_info") or {}
                text = out.get("text", "")
                timers[i].chunk(int(meta.get("completion_tokens") or 0))
                delta = text[sent_text[i]:]
                chunks = shape.delta(i, delta, meta, sent_lp[i], not started[i])
                started[i] = True
                sent_text[i] = len(text)
                sent_lp[i] = len(meta.get("output_token_logprobs") or [])
                if tracker.update(rids[i], out):
                    timers[i].done()
                    ctx.metrics.observe_finished(meta)
                    finals[i] = out
                for c in chunks:
                    yield sse({**head, "object": shape.chunk_obj, "choices": [c]})
            if include_usage:
                outs = [finals[i] for i in range(len(subs))]
                yield sse({**head, "object": shape.chunk_obj, "choices": [], "usage": _usage(outs, n)})
        except Exception as exc:  # headers already sent: report in-band
            yield sse(as_http_error(exc).body())
        yield SSE_DONE

    return EventStreamResponse(events(), tracker.close)

