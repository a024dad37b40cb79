"""A tokenizer's vocabulary as raw bytes, plus a byte trie of it, for building token-level FSM indexes.

Byte-level BPE tokens (GPT-2 style, SmolLM2, Llama-3, Qwen) are mapped back through the byte→unicode
table to their raw bytes; SentencePiece tokens map "▁" to a space and "<0xAB>" to the byte. Special
tokens (and added tokens flagged special) get no bytes: they are never allowed by a constraint, except
the EOS ids, which are allowed exactly in accepting states.

The fingerprint (sha256 over every token's bytes, the excluded ids and the EOS ids) keys the disk cache
so that a table built for one tokenizer is never used with another.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from sglang.runtime.detokenizer import gpt2_byte_decoder

_BYTE_DECODER = gpt2_byte_decoder()


@dataclass
class VocabTrie:
    """Byte trie of the vocabulary, stored level by level for vectorized walks.

    Level d (1-based) has nodes for each distinct token prefix of length d: `byte[d][n]` is the node's last
    byte, and the children of level-(d-1) node p are level-d nodes `child_lo[d][p] : child_hi[d][p]`.
    `term_lo[d][n] : term_hi[d][n]` index `term_tokens[d]`: the token ids whose bytes end at node n."""

    byte: list[np.ndarray]
    child_lo: list[np.ndarray]
    child_hi: list[np.ndarray]
    term_lo: list[np.ndarray]
    term_hi: list[np.ndarray]
    term_tokens: list[np.ndarray]
    term_first: list[np.ndarray]  # int32 per node: first token ending there, -1 if none
    term_multi: list[bool]  # whether some node of the level ends several tokens

    @property
    def depth(self) -> int:
        return len(self.byte) - 1


@dataclass
class TokenVocab:
    token_bytes: list[bytes]  # b"" for tokens that constraints never produce (special tokens)
    eos_token_ids: tuple[int, ...]
    excluded_ids: frozenset[int]
    fingerprint: str = ""
    _trie: Optional[VocabTrie] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            h = hashlib.sha256()
            h.update(repr((len(self.token_bytes), sorted(self.excluded_ids), sorted(self.eos_token_ids))).encode())
            for b in self.token_bytes:
                h.update(len(b).to_bytes(2, "little"))
                h.update(b)
            self.fingerprint = h.hexdigest()[:32]

    @property
    def size(self) -> int:
        return len(self.token_bytes)

    @property
    def byte_alphabet(self) -> np.ndarray:
        """bool [256]: bytes that occur in some token."""
        got = getattr(self, "_alphabet", None)
        if got is None:
            got = np.zeros(256, dtype=bool)
            got[np.frombuffer(b"".join(self.token_bytes), dtype=np.uint8)] = True
            self._alphabet = got
        return got

    @property
    def bytes_are_tokens(self) -> bool:
        """Whether every byte that occurs in some token is also a single-byte token (true for byte-level
        BPE), so any byte string over the alphabet can be spelled with tokens. Computed once (every token
        table build asks)."""
        got = getattr(self, "_bytes_are_tokens", None)
        if got is None:
            singles = np.zeros(256, dtype=bool)
            singles[[b[0] for b in self.token_bytes if len(b) == 1]] = True
            got = self._bytes_are_tokens = bool(np.all(singles | ~self.byte_alphabet))
        return got

    @property
    def trie(self) -> VocabTrie:
        if self._trie is None:
            self._trie = _build_trie(self.token_bytes)
        return self._trie

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        tb = self.token_bytes
        return b"".join(tb[i] if 0 <= i < len(tb) else b"" for i in ids)

    @classmethod
    def from_tokens(cls, tokens: list[bytes], eos_token_ids: Iterable[int] = (), excluded_ids: Iterable[int] = ()) -> "TokenVocab":
        """A vocabulary given directly as bytes (tests, toy tokenizers)."""
        excluded = frozenset(excluded_ids) | frozenset(eos_token_ids)
        tb = [b"" if i in excluded else bytes(t) for i, t in enumerate(tokens)]
        return cls(token_bytes=tb, eos_token_ids=tuple(sorted(set(eos_token_ids))), excluded_ids=excluded)


def vocab_from_tokenizer(tokenizer: Any, eos_token_ids: Optional[Iterable[int]] = None) -> TokenVocab:
    """The TokenVocab of a Hugging Face tokenizer (memoized on the tokenizer object)."""
    memo_key = tuple(sorted(eos_token_ids)) if eos_token_ids is not None else None
    memo = getattr(tokenizer, "_sglang_constrained_vocab", None)
    if memo is not None and memo[0] == memo_key:
        return memo[1]
    n = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    excluded: set[int] = set(getattr(tokenizer, "all_special_ids", []) or [])
    for tid, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            excluded.add(int(tid))
    if eos_token_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        eos_token_ids = [] if eos is None else [eos]
    eos_set = {int(e) for e in eos_token_ids}
    regular = [t for i, t in enumerate(tokens) if i not in excluded and t is not None]
    byte_level = all(c in _BYTE_DECODER for t in regular[:5000] for c in t)
    tb: list[bytes] = []
    for i, t in enumerate(tokens):
        if i in excluded or i in eos_set or t is None:
            tb.append(b"")
        elif byte_level:
            try:
                tb.append(bytes(_BYTE_DECODER[c] for c in t))
            except KeyError:  # an added (non-special) token written as plain text
                tb.append(t.encode("utf-8"))
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            tb.append(bytes([int(t[3:5], 16)]))
        else:
            tb.append(t.replace("\u2581", " ").encode("utf-8"))
    vocab = TokenVocab(token_bytes=tb, eos_token_ids=tuple(sorted(eos_set)), excluded_ids=frozenset(excluded | eos_set))
    try:
        tokenizer._sglang_constrained_vocab = (memo_key, vocab)
    except Exception:  # noqa: BLE001 - a tokenizer that refuses attributes is simply not memoized
        pass
    return vocab


def _build_trie(token_bytes: list[bytes]) -> VocabTrie:
    ids = [i for i, b in enumerate(token_bytes) if b]
    ids.sort(key=lambda i: token_bytes[i])
    order = np.asarray(ids, dtype=np.int64)
    lens = np.asarray([len(token_bytes[i]) for i in ids], dtype=np.int64)
    n = len(ids)
    lmax = int(lens.max()) if n else 0
    mat = np.full((n, lmax + 1), 256, dtype=np.int16)  # 256 pads past the end
    flat = np.frombuffer(b"".join(token_bytes[i] for i in ids), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lens)
    cols = np.arange(flat.size) - np.repeat(np.cumsum(lens) - lens, lens)
    mat[rows, cols] = flat
    # longest common prefix with the previous token in sorted order
    lcp = np.zeros(n, dtype=np.int64)
    if n > 1:
        diff = mat[1:] != mat[:-1]
        first = np.where(diff.any(axis=1), diff.argmax(axis=1), lmax + 1)
        lcp[1:] = np.minimum(first, np.minimum(lens[1:], lens[:-1]))
    byte = [np.zeros(1, np.int32)]
    term_first, term_multi = [np.full(1, -1, np.int32)], [False]
    child_lo, child_hi = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    term_lo, term_hi, term_tokens = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)], [np.zeros(0, np.int64)]
    prev_id = np.zeros(n, dtype=np.int64)  # node id of each token's prefix at the previous depth
    for d in range(1, lmax + 1):
        has = lens >= d
        new = has & (lcp < d)
        node_id = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        byte.append(mat[starts, d - 1].astype(np.int32))
        parents = prev_id[starts]
        n_prev = len(byte[d - 1])
        child_lo.append(np.searchsorted(parents, np.arange(n_prev), side="left").astype(np.int32))
        child_hi.append(np.searchsorted(parents, np.arange(n_prev), side="right").astype(np.int32))
        ends = np.flatnonzero(lens == d)
        end_nodes = node_id[ends]
        term_tokens.append(order[ends])  # sorted order keeps equal nodes adjacent
        term_lo.append(np.searchsorted(end_nodes, np.arange(len(starts)), side="left"))
        term_hi.append(np.searchsorted(end_nodes, np.arange(len(starts)), side="right"))
        tf = np.full(len(starts), -1, dtype=np.int32)
        tf[end_nodes[::-1]] = order[ends][::-1]  # the first token of each node wins
        term_first.append(tf)
        term_multi.append(bool((term_hi[-1] - term_lo[-1] > 1).any()))
        prev_id = np.where(has, node_id, 0)
    return VocabTrie(byte=byte, child_lo=child_lo, child_hi=child_hi, term_lo=term_lo, term_hi=term_hi,
                     term_tokens=term_tokens, term_first=term_first, term_multi=term_multi)
