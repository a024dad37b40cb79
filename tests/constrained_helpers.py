"""Shared helpers of the constrained-decoding tests: the SmolLM2 tokenizer (loaded once per process),
random strings of a DFA's language, and an oracle for "is this text a prefix of the language"."""
from __future__ import annotations

import functools
import random
import re

import numpy as np

from sglang.runtime.constrained.regex_fsm import ByteDFA

# SGLang README's "character" regex (the compile-time target) and the unescaped IPv4 regex
CHARACTER_REGEX = (
    r"""\{\n"""
    + r"""    "name": "[\w\d\s]{1,16}",\n"""
    + r"""    "house": "(Gryffindor|Slytherin|Ravenclaw|Hufflepuff)",\n"""
    + r"""    "blood status": "(Pure-blood|Half-blood|Muggle-born)",\n"""
    + r"""    "occupation": "(student|teacher|auror|ministry of magic|death eater|order of the phoenix)",\n"""
    + r"""    "wand": \{\n"""
    + r"""        "wood": "[\w\d\s]{1,16}",\n"""
    + r"""        "core": "[\w\d\s]{1,16}",\n"""
    + r"""        "length": [0-9]{1,2}\.[0-9]{0,2}\n"""
    + r"""    \},\n"""
    + r"""    "alive": "(Alive|Deceased)",\n"""
    + r"""    "patronus": "[\w\d\s]{1,16}",\n"""
    + r"""    "bogart": "[\w\d\s]{1,16}"\n"""
    + r"""\}"""
)
_OCT = r"(25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
IPV4_UNESCAPED = f"{_OCT}.{_OCT}.{_OCT}.{_OCT}"


@functools.lru_cache(maxsize=None)
def smol_tokenizer(path: str):
    from sglang.runtime.tokenizer import get_tokenizer

    return get_tokenizer(path)


@functools.lru_cache(maxsize=None)
def smol_vocab(path: str):
    from sglang.runtime.constrained.vocab import vocab_from_tokenizer

    return vocab_from_tokenizer(smol_tokenizer(path))


def distance_to_accept(dfa: ByteDFA) -> np.ndarray:
    """Bytes needed from each state to reach acceptance (large for dead)."""
    n = dfa.num_states
    dist = np.where(dfa.accepting, 0, 10**9)
    dist[0] = 10**9
    succ = [np.unique(row) for row in dfa.trans]
    changed = True
    while changed:  # Bellman-Ford over the few distinct successors of each state
        changed = False
        for s in range(1, n):
            best = int(dist[succ[s]].min()) + 1
            if best < dist[s]:
                dist[s] = best
                changed = True
    return dist


def random_match(dfa: ByteDFA, rng: random.Random, soft_len: int = 40) -> bytes:
    """A random string of the DFA's language: random live bytes, heading for acceptance past soft_len."""
    dist = getattr(dfa, "_test_dist", None)
    if dist is None:
        dist = dfa._test_dist = distance_to_accept(dfa)
    s, out = dfa.start, bytearray()
    while True:
        live = np.flatnonzero(dfa.trans[s] != 0)
        if dfa.accepting[s] and (rng.random() < 0.15 or len(out) >= soft_len or live.size == 0):
            return bytes(out)
        if len(out) >= soft_len:  # walk the shortest way home
            live = live[dist[dfa.trans[s, live]] == dist[dfa.trans[s, live]].min()]
        b = int(live[rng.randrange(len(live))])
        out.append(b)
        s = int(dfa.trans[s, b])


def is_prefix(pattern: str, text: str) -> bool:
    """Oracle from the third-party `regex` module: can `text` be extended into a full match?"""
    import regex

    return regex.fullmatch(pattern, text, flags=regex.ASCII, partial=True) is not None


def full(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text, flags=re.ASCII) is not None
