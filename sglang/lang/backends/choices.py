"""Choice scoring for `select`, written once for the eager interpreter and the plan executor.

`score_choices` is the whole select protocol as a generator: it yields lists of single-prompt native
request dicts and is sent their outputs, so each executor drives it with its own transport (the
interpreter's backend sends a list as one batched call; the plan executor merges it into its wave).

1. prefill the prompt once (`max_new_tokens=0`: its KV stays in the radix cache; a batch of items that
   share a long prefix computes it once, by the scheduler's in-batch prefix rule);
2. score `prompt + choice` for every choice in ONE batch from 2 tokens before the prompt's end
   (`logprob_start_len`): only those rows' logprobs are computed and only they miss the cache. The
   window's first 2 entries are prompt positions; when every choice has the same token ids there, they
   are the prompt's own tokens and the choice's tokens follow them. When the choices disagree there
   (a choice's first characters merged with the prompt's last token), the bare prompt is scored once
   more from the same position and each choice's tokens start where its ids leave the prompt's. That
   extra request joins the scoring batch up front when a merge is likely (`merge_likely`: a prompt
   ending in whitespace), else it is a third call only for a select whose choices disagree;
3. for `unconditional_likelihood_normalized`, score each choice's scoring-window token ids alone (the
   <= 2 prompt tokens before it and the choice itself), as SGLang's RuntimeEndpoint does.

The decision (`decide`) is a pure function of the logprobs:
cond[i]   logprobs of choice i's tokens given the prompt
uncond[i] logprobs of the same tokens after only the last prompt tokens (a minimal context)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional, Sequence

from sglang.lang.gen_rules import CHOICES_METHODS as METHODS
from sglang.lang.gen_rules import select_problems

PREFILL = {"max_new_tokens": 0, "temperature": 0.0}  # score / cache only: no token is generated

# yields lists of native request dicts (one prompt each), is sent their outputs, returns (index, meta)
Scoring = Generator[list[dict[str, Any]], list[dict[str, Any]], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Decision:
    index: int
    scores: list[float]  # the method's score of every choice (higher is better)
    normalized_logprobs: list[float]  # mean token logprob of every choice (all methods)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _argmax(scores: Sequence[float]) -> int:
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:  # first wins ties, as the choices' order is the user's preference
            best = i
    return best


def decide(method: str, cond: Sequence[Sequence[float]], uncond: Optional[Sequence[Sequence[float]]] = None) -> Decision:
    if method not in METHODS:
        raise ValueError(f"choices_method must be one of {', '.join(METHODS)}, got {method!r}")
    if not cond:
        raise ValueError("select needs at least one choice")
    norm = [_mean(c) for c in cond]
    if method == "token_length_normalized":
        return Decision(_argmax(norm), norm, norm)
    if method == "greedy_token_selection":
        return Decision(_greedy(cond, norm), [c[0] if c else -math.inf for c in cond], norm)
    if uncond is None:
        raise ValueError("unconditional_likelihood_normalized needs the unconditional logprobs")
    scores = [n - _mean(u) for n, u in zip(norm, uncond)]
    return Decision(_argmax(scores), scores, norm)


def _greedy(cond: Sequence[Sequence[float]], norm: Sequence[float]) -> int:
    """Keep the choices whose token is most likely at each position, position by position; a choice
    shorter than the others continues with its mean logprob (so a prefix choice is not favoured)."""
    alive = list(range(len(cond)))
    longest = max(len(c) for c in cond)
    for pos in range(longest):
        vals = {i: (cond[i][pos] if pos < len(cond[i]) else norm[i] if cond[i] else -math.inf) for i in alive}
        top = max(vals.values())
        alive = [i for i in alive if vals[i] == top]
        if len(alive) == 1:
            break
    return alive[0]


def score_choices(text: str, choices: Sequence[str], method: str, temperature: float = 0.0) -> Scoring:
    """The select protocol for prompt `text` (see the module docstring); returns (chosen index, meta_info)."""
    choices = list(choices)
    problems = select_problems(choices, method, temperature)
    if problems:
        raise ValueError(problems[0])
    (prefix,) = yield [{"text": text, "sampling_params": dict(PREFILL)}]
    prefix_len = int(prefix["meta_info"]["prompt_tokens"])
    start = max(prefix_len - 2, 0)
    reqs = [_scoring_request(text + c, start) for c in choices]
    bare_first = merge_likely(text, choices)
    outs = yield ([_scoring_request(text, start)] + reqs) if bare_first else reqs
    windows = [_entries(o) for o in outs[len(outs) - len(choices):]]
    base = [e[1] for e in _entries(outs[0])] if bare_first else agreed_prompt_ids(windows, prefix_len - start)
    if base is None:  # a choice merged with the prompt's end: the prompt's own ids at those positions
        (bare,) = yield [_scoring_request(text, start)]
        base = [e[1] for e in _entries(bare)]
    cond_entries = [after_common(w, base) for w in windows]
    uncond_entries = None
    if method == "unconditional_likelihood_normalized":
        uncond_entries = yield from _unconditional(windows, cond_entries)
    decision = decide(method, _values(cond_entries), None if uncond_entries is None else _values(uncond_entries))
    meta = {"choices": choices, "choices_method": method, "scores": decision.scores,
            "normalized_prompt_logprobs": decision.normalized_logprobs, "input_token_logprobs": cond_entries,
            "unconditional_token_logprobs": uncond_entries, "prefix_tokens": prefix_len}
    return decision.index, meta


def _scoring_request(text: str, start: int) -> dict[str, Any]:
    """A prefill-only request for the input logprobs of `text`'s tokens from position `start` on."""
    return {"text": text, "sampling_params": dict(PREFILL), "return_logprob": True, "logprob_start_len": start}


def _unconditional(windows: list[list], cond_entries: list[list]) -> Generator[Any, Any, list[list]]:
    """Each choice's tokens scored after only its window's (<= 2) prompt tokens: a minimal context, so even
    a one-token choice gets an unconditional logprob. A choice with no tokens scores nothing."""
    nonempty = [i for i, es in enumerate(cond_entries) if es]
    uouts = (yield [{"input_ids": [int(e[1]) for e in windows[i]], "sampling_params": dict(PREFILL),
                     "return_logprob": True, "logprob_start_len": 0} for i in nonempty]) if nonempty else []
    out: list[list] = [[] for _ in cond_entries]
    for i, o in zip(nonempty, uouts):
        entries = _entries(o)
        out[i] = [list(e) for e in entries[len(entries) - len(cond_entries[i]):]]
    return out


def run_scoring(scoring: Scoring, send: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> tuple[int, dict]:
    """Drive `score_choices` synchronously: `send(requests)` returns one output per request."""
    try:
        reqs = next(scoring)
        while True:
            reqs = scoring.send(send(reqs))
    except StopIteration as stop:
        return stop.value


def after_common(entries: list, base_ids: list[int]) -> list[list[Any]]:
    """A choice's logprob entries after the token ids it shares with the bare prompt's entries."""
    k = 0
    while k < len(entries) and k < len(base_ids) and entries[k][1] == base_ids[k]:
        k += 1
    return [list(e) for e in entries[k:]]


def merge_likely(text: str, choices: Sequence[str]) -> bool:
    """Whether a choice probably merges with the prompt's last token: the prompt ends in whitespace and a
    choice does not start with it (BPE vocabularies carry a space on the next word's token: "A: " + "yes"
    tokenizes as "A", ":", " yes"). Then the bare prompt joins the scoring batch at once, which saves the
    round trip of finding the disagreement first."""
    return text[-1:].isspace() and any(not c[:1].isspace() for c in choices)


def agreed_prompt_ids(windows: list[list], prompt_positions: int) -> Optional[list[int]]:
    """The token ids at the windows' first `prompt_positions` entries (prompt positions) when every
    choice's window has exactly those ids there and a token after them; None when they differ, which
    only a choice merging with the prompt's end can cause. When all choices merge identically the merged
    token counts as prompt: it is one token with one logprob (same context) in every choice."""
    if any(len(w) <= prompt_positions for w in windows):
        return None
    heads = {tuple(e[1] for e in w[:prompt_positions]) for w in windows}
    return list(heads.pop()) if len(heads) == 1 else None


def _entries(out: dict[str, Any]) -> list:
    return out["meta_info"].get("input_token_logprobs") or []


def _values(entries: list[list]) -> list[list[float]]:
    return [[e[0] for e in es if e[0] is not None] for es in entries]
