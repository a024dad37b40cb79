"""Token-level FSM: a ByteDFA indexed against a vocabulary (state → allowed token ids), built vectorized.

Build: all DFA states walk the vocabulary's byte trie together, level by level; a (start state, trie node)
pair survives while its byte path stays live in the DFA, and a token is allowed in a state when its whole
byte string does. States are then restricted to those reachable from the start through allowed tokens
and able to finish (accept) through allowed tokens, so a request can never be steered into a state from
which this vocabulary cannot complete the pattern. EOS ids are allowed exactly in accepting states.

Storage: one packed bit row per kept state (`bits [R, ceil(V/8)]`, `row_of[state]`); at run time the
rows are unpacked once into a torch bool table so a mask is a single row copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from sglang.runtime.constrained.errors import ConstraintError, EmptyLanguageError
from sglang.runtime.constrained.regex_fsm import ByteDFA, walk_bytes
from sglang.runtime.constrained.vocab import TokenVocab

MAX_PAIRS = 60_000_000  # (state, allowed token) pairs a build may hold (~0.7 GB of index arrays)
BUILD_CHUNK_BYTES = 64 << 20  # dense rows materialized at a time while packing the bit table
DENSE_TABLE_LIMIT = 256 << 20  # bytes of unpacked bool rows kept in memory; above it rows unpack per use
EAGER_TABLE_LIMIT = 8 << 20  # tables up to this size are unpacked whole on first use (about a millisecond)


@dataclass
class TokenFSM:
    """Compiled constraint for one (pattern, tokenizer). Immutable; shared by all requests using it."""

    pattern: str
    fingerprint: str
    vocab_size: int
    trans: np.ndarray  # int32 [S, 256], state 0 dead
    accepting: np.ndarray  # bool [S]
    start: int
    row_of: np.ndarray  # int32 [S]: mask row of a state, -1 where no token path goes on from it
    bits: np.ndarray  # uint8 [R, ceil(V/8)], little bit order, EOS included in accepting rows
    n_allowed: np.ndarray  # int32 [R]: allowed non-EOS tokens per row
    forced: np.ndarray  # int16 [S]: the only possible next byte of a non-accepting state, else -1
    eos_token_ids: tuple[int, ...]
    _dense: Optional[np.ndarray] = field(default=None, repr=False)  # [R, V] bool, rows filled on first use
    _filled: Optional[np.ndarray] = field(default=None, repr=False)  # bool [R]

    # ----- build -----
    @classmethod
    def build(cls, pattern: str, dfa: ByteDFA, vocab: TokenVocab) -> "TokenFSM":
        org, tok, end = _walk_vocab(dfa, vocab, pattern)
        n = dfa.num_states
        trans = dfa.trans
        if vocab.bytes_are_tokens:
            # Every byte any token contains is itself a token (byte-level BPE), so token paths are exactly
            # the byte paths over that alphabet: drop the other bytes from the DFA and a state is usable
            # iff it can still reach acceptance -- no token-graph search needed.
            trans = dfa.trans.copy()
            trans[:, ~vocab.byte_alphabet] = 0
            reach = _dfa_co_reachable(trans, dfa.accepting)
            if not reach.all():
                keep = reach[end] & reach[org]
                org, tok, end = org[keep], tok[keep], end[keep]
            if not reach[dfa.start]:
                raise EmptyLanguageError(
                    f"pattern {pattern!r}: no sequence of this tokenizer's tokens can complete it "
                    "(its language is empty for this vocabulary)")
        else:
            # accepting states end by EOS, or by must_stop() where no token can follow
            live = _co_reachable(n, org, end, dfa.accepting)
            if not live.all():
                keep = live[end] & live[org]
                org, tok, end = org[keep], tok[keep], end[keep]
            reach = _reachable(n, dfa.start, org, end) if live[dfa.start] else np.zeros(n, bool)
        if not reach[dfa.start]:
            raise EmptyLanguageError(
                f"pattern {pattern!r}: no sequence of this tokenizer's tokens can complete it "
                "(its language is empty for this vocabulary)")
        rows = np.flatnonzero(reach)
        row_of = np.full(n, -1, dtype=np.int32)
        row_of[rows] = np.arange(rows.size, dtype=np.int32)
        if not reach[org].all():
            sel = reach[org]
            org, tok = org[sel], tok[sel]
        V = vocab.size
        prow = row_of[org]
        n_allowed = np.bincount(prow, minlength=rows.size).astype(np.int32)
        accepting_row = np.zeros(rows.size, dtype=bool)
        accepting_row[row_of[np.flatnonzero(dfa.accepting & reach)]] = True
        eos = [e for e in vocab.eos_token_ids if e < V]
        order = np.argsort(prow, kind="stable")
        prow, ptok = prow[order], tok[order]
        bits = np.zeros((rows.size, (V + 7) // 8), dtype=np.uint8)
        # a table that fits the in-memory limit is built whole and kept as the mask-row cache, so the
        # process that compiles a pattern serves its masks without unpacking; bigger ones go by chunks
        keep_dense = rows.size * V <= DENSE_TABLE_LIMIT
        table = np.zeros((rows.size, V), dtype=bool) if keep_dense else None
        step = rows.size if keep_dense else max(1, BUILD_CHUNK_BYTES // max(V, 1))
        for r0 in range(0, rows.size, step):  # bounded memory: a chunk of dense rows at a time
            r1 = min(rows.size, r0 + step)
            a, b = np.searchsorted(prow, [r0, r1])
            dense = table if table is not None else np.zeros((r1 - r0, V), dtype=bool)
            dense[prow[a:b] - r0, ptok[a:b]] = True
            if eos:
                dense[np.ix_(np.flatnonzero(accepting_row[r0:r1]), eos)] = True
            bits[r0:r1] = np.packbits(dense, axis=1, bitorder="little")
        live_out = (trans != 0).sum(axis=1)
        first = (trans != 0).argmax(axis=1)
        forced = np.where((live_out == 1) & ~dfa.accepting, first, -1).astype(np.int16)
        forced[0] = -1
        fsm = cls(pattern=pattern, fingerprint=vocab.fingerprint, vocab_size=V, trans=trans,
                  accepting=dfa.accepting, start=dfa.start, row_of=row_of, bits=bits, n_allowed=n_allowed,
                  forced=forced, eos_token_ids=tuple(vocab.eos_token_ids))
        if table is not None:
            fsm._dense, fsm._filled = table, np.ones(rows.size, dtype=bool)
        return fsm

    # ----- queries used by ConstraintState -----
    def mask_row(self, state: int) -> np.ndarray:
        """Bool [vocab_size] of the tokens allowed in `state` (a view into a shared table: do not modify)."""
        r = int(self.row_of[state])
        if r < 0:
            return np.zeros(self.vocab_size, dtype=np.bool_)
        size = self.bits.shape[0] * self.vocab_size
        if self._dense is None and size <= EAGER_TABLE_LIMIT:  # small: unpack all rows at once
            self._dense = np.unpackbits(self.bits, axis=1, bitorder="little", count=self.vocab_size).view(np.bool_)
            self._filled = np.ones(self.bits.shape[0], dtype=np.bool_)
        elif self._dense is None and size <= DENSE_TABLE_LIMIT:
            # np.empty maps pages lazily: only rows of visited states ever take memory (a first visit pays
            # the unpack plus its page faults; pre-faulting the table was measured slower overall)
            self._dense = np.empty((self.bits.shape[0], self.vocab_size), dtype=np.bool_)
            self._filled = np.zeros(self.bits.shape[0], dtype=np.bool_)
        if self._dense is None:
            return np.unpackbits(self.bits[r], bitorder="little", count=self.vocab_size).view(np.bool_)
        if not self._filled[r]:
            self._dense[r] = np.unpackbits(self.bits[r], bitorder="little", count=self.vocab_size).view(np.bool_)
            self._filled[r] = True
        return self._dense[r]

    def fill_mask(self, state: int, row: torch.Tensor) -> None:
        """row[:V] = allowed tokens of `state`, row[V:] = False."""
        write_mask_row(row, self.mask_row(state))

    def allowed_ids(self, state: int) -> np.ndarray:
        r = int(self.row_of[state])
        if r < 0:
            return np.zeros(0, dtype=np.int64)
        row = np.unpackbits(self.bits[r], bitorder="little", count=self.vocab_size)
        return np.flatnonzero(row)

    def is_allowed(self, state: int, token_id: int) -> bool:
        r = int(self.row_of[state])
        if r < 0 or not 0 <= token_id < self.vocab_size:
            return False
        return bool((self.bits[r, token_id >> 3] >> (token_id & 7)) & 1)

    def walk(self, state: int, data: bytes) -> int:
        return walk_bytes(self.trans, state, data)

    def forced_bytes(self, state: int, limit: int = 4096) -> bytes:
        """The bytes every continuation from `state` must start with (jump-forward text)."""
        out = bytearray()
        f = self.forced
        while len(out) < limit:
            b = int(f[state])
            if b < 0:
                break
            out.append(b)
            state = int(self.trans[state, b])
        return bytes(out)

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.trans.nbytes + self.bits.nbytes + self.row_of.nbytes)

    # ----- serialization (arrays only; the cache wraps them with keys) -----
    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = np.asarray([self.vocab_size, self.start], dtype=np.int64)
        return {"trans": self.trans, "accepting": self.accepting, "row_of": self.row_of, "bits": self.bits,
                "n_allowed": self.n_allowed, "forced": self.forced, "meta": meta,
                "eos": np.asarray(self.eos_token_ids, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, pattern: str, fingerprint: str, arrays: dict[str, np.ndarray]) -> "TokenFSM":
        meta = arrays["meta"]
        return cls(pattern=pattern, fingerprint=fingerprint, vocab_size=int(meta[0]), trans=arrays["trans"],
                   accepting=arrays["accepting"], start=int(meta[1]), row_of=arrays["row_of"],
                   bits=arrays["bits"], n_allowed=arrays["n_allowed"], forced=arrays["forced"],
                   eos_token_ids=tuple(int(x) for x in arrays["eos"]))


def _walk_vocab(dfa: ByteDFA, vocab: TokenVocab, pattern: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (state, token, end state) with the token's bytes live from the state, walking the trie level by
    level for every live state at once (work ∝ live (state, trie node) pairs)."""
    trie = vocab.trie
    trans_flat = dfa.trans.reshape(-1)
    S = dfa.num_states
    org = np.arange(1, S, dtype=np.int32)
    cur = org.copy()
    node = np.zeros(S - 1, dtype=np.int32)
    out_org, out_tok, out_end = [], [], []
    emitted = 0
    for d in range(1, trie.depth + 1):
        if org.size == 0:
            break
        lo = trie.child_lo[d][node]
        cnt = trie.child_hi[d][node] - lo
        total = int(cnt.sum())
        if total == 0:
            break
        rep = np.repeat(np.arange(org.size, dtype=np.int32), cnt)
        child = np.arange(total, dtype=np.int32) + (lo - (np.cumsum(cnt) - cnt)).astype(np.int32)[rep]
        nxt = trans_flat[cur[rep] * 256 + trie.byte[d][child]]
        keep = np.flatnonzero(nxt)
        org, cur, node = org[rep[keep]], nxt[keep], child[keep]
        first = trie.term_first[d][node]
        ends = np.flatnonzero(first >= 0)
        emitted += ends.size
        if emitted > MAX_PAIRS or org.size > 4 * MAX_PAIRS:
            raise ConstraintError(
                f"pattern {pattern[:80]!r} is too large to index for this vocabulary (more than {MAX_PAIRS} "
                "(state, token) pairs); use smaller repetition bounds")
        if ends.size:
            out_org.append(org[ends])
            out_tok.append(first[ends])
            out_end.append(cur[ends])
            if trie.term_multi[d]:  # several tokens with identical bytes: emit the others too
                tlo = trie.term_lo[d][node[ends]]
                for j in np.flatnonzero(trie.term_hi[d][node[ends]] - tlo > 1):
                    extra = trie.term_tokens[d][tlo[j] + 1:trie.term_hi[d][node[ends[j]]]]
                    out_org.append(np.full(extra.size, org[ends[j]], np.int32))
                    out_tok.append(extra.astype(np.int32))
                    out_end.append(np.full(extra.size, cur[ends[j]], np.int32))
    if not out_org:
        z = np.zeros(0, dtype=np.int32)
        return z, z, z
    return np.concatenate(out_org), np.concatenate(out_tok), np.concatenate(out_end)


def _edges_csr(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (src → dst) edges as CSR (bounds over src, targets)."""
    if n <= 4096:  # a dense bool matrix dedupes faster than sorting millions of pairs
        mat = np.zeros((n, n), dtype=bool)
        mat[src, dst] = True
        s, t = np.nonzero(mat)
    else:
        e = np.unique(src.astype(np.int64) * n + dst)
        s, t = e // n, e % n
    return np.searchsorted(s, np.arange(n + 1)), t


def _dfa_co_reachable(trans: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """States of the DFA from which an accepting state is reachable (state 0 excluded)."""
    n = trans.shape[0]
    src = np.repeat(np.arange(n, dtype=np.int64), trans.shape[1])
    live = _co_reachable(n, src, trans.reshape(-1).astype(np.int64), accepting)
    live[0] = False
    return live


def _co_reachable(n: int, org: np.ndarray, end: np.ndarray, final: np.ndarray) -> np.ndarray:
    """States from which some token path reaches a final state."""
    live = final.copy()
    live[0] = False
    if org.size == 0:
        return live
    bounds, preds = _edges_csr(n, end, org)
    stack = [int(s) for s in np.flatnonzero(live)]
    while stack:
        t = stack.pop()
        for s in preds[bounds[t]:bounds[t + 1]]:
            if not live[s]:
                live[s] = True
                stack.append(int(s))
    return live


def _reachable(n: int, start: int, org: np.ndarray, end: np.ndarray) -> np.ndarray:
    reach = np.zeros(n, dtype=bool)
    reach[start] = True
    if org.size == 0:
        return reach
    bounds, succ = _edges_csr(n, org, end)
    stack = [start]
    while stack:
        s = stack.pop()
        for t in succ[bounds[s]:bounds[s + 1]]:
            if not reach[t]:
                reach[t] = True
                stack.append(int(t))
    return reach


def write_mask_row(row: torch.Tensor, allowed: np.ndarray, allowed_t: Optional[torch.Tensor] = None) -> None:
    """row[:V] = allowed (bool [V]), row[V:] = False: the one way every constraint fills a mask row.

    CPU rows are written through numpy (one memcpy): torch's intra-op threading costs milliseconds per
    copy on a loaded 2-core box, more than computing the mask. Device rows take a tensor view of
    `allowed` (`allowed_t` when the caller keeps one: torch warns on views of read-only arrays)."""
    n = allowed.shape[0]
    if row.shape[0] < n:
        raise ValueError(f"mask row has {row.shape[0]} entries, the tokenizer has {n} tokens")
    if row.device.type == "cpu":
        out = row.numpy()
        out[:n] = allowed
        out[n:] = False
        return
    row[:n].copy_(allowed_t if allowed_t is not None else torch.from_numpy(allowed), non_blocking=True)
    if row.shape[0] > n:
        row[n:] = False
