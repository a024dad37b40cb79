"""Choice scoring for `select`: pure functions over per-choice token logprobs.

cond[i]   logprobs of choice i's tokens given the prompt (prompt + choice scored in one batch)
uncond[i] logprobs of the same tokens after only the last prompt tokens (a minimal context)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

METHODS = ("token_length_normalized", "greedy_token_selection", "unconditional_likelihood_normalized")


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
