"""Response dicts (the native protocol's shape, docs/ARCHITECTURE.md) built from a Req."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from sglang.runtime.scheduler.req import Req


def _texts(tokenizer: Any, ids: Sequence[int]) -> list[Optional[str]]:
    if not ids:
        return []
    return [tokenizer.decode([i]) for i in ids]


def _triples(pairs: Sequence[tuple[Optional[float], int]], tokenizer: Any, with_text: bool) -> list[list[Any]]:
    texts = _texts(tokenizer, [t for _, t in pairs]) if with_text else [None] * len(pairs)
    return [[lp, tid, txt] for (lp, tid), txt in zip(pairs, texts)]


def _tops(tops: Sequence[Optional[list[tuple[float, int]]]], tokenizer: Any, with_text: bool) -> list[Any]:
    return [None if t is None else _triples(t, tokenizer, with_text) for t in tops]


def normalized_prompt_logprob(req: Req) -> float:
    """Mean logprob of the input tokens after the first one asked for (the first has no context of
    its own in the scored span), as SGLang's select() uses it; 0.0 when there is nothing to average."""
    vals = [lp for lp, _ in req.input_token_logprobs[1:] if lp is not None]
    return sum(vals) / len(vals) if vals else 0.0


def make_output(req: Req, tokenizer: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": req.rid,
        "prompt_tokens": len(req.origin_input_ids),
        "completion_tokens": len(req.output_ids),
        "cached_tokens": req.cached_tokens,
        "finish_reason": req.finished_reason.to_json() if req.finished_reason else None,
        "completion_tokens_wo_jump_forward": req.completion_tokens_wo_jump_forward,
    }
    if req.return_logprob:
        t = req.return_text_in_logprobs
        meta["input_token_logprobs"] = _triples(req.input_token_logprobs, tokenizer, t)
        meta["output_token_logprobs"] = _triples(req.output_token_logprobs, tokenizer, t)
        if req.top_logprobs_num > 0:
            meta["input_top_logprobs"] = _tops(req.input_top_logprobs, tokenizer, t)
            meta["output_top_logprobs"] = _tops(req.output_top_logprobs, tokenizer, t)
        else:
            meta["input_top_logprobs"] = [None] * len(req.input_token_logprobs)
            meta["output_top_logprobs"] = [None] * len(req.output_token_logprobs)
        meta["normalized_prompt_logprob"] = normalized_prompt_logprob(req)
    return {"text": req.text, "meta_info": meta}
