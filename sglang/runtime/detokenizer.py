"""Incremental detokenization and stop-string matching, per request, cheap per token.

- `IncrementalDetokenizer.append(ids) -> str`: the new text those ids add. A token that ends inside
  a multi-byte UTF-8 character yields "" until the character completes, so the concatenation of
  all deltas (plus `flush()`) equals `tokenizer.decode(all_ids, skip_special_tokens=...)`.
  Byte-level BPE tokenizers (GPT-2 style, e.g. SmolLM2, Llama-3, Qwen2) take a fast path: a table
  of each token's bytes fed to an incremental UTF-8 decoder (O(1) per token, no tokenizer call).
  Other tokenizers use a sliding window of a few tokens that is decoded twice (offsets as in
  HF text-generation-inference), with a few prompt tokens as left context. (Limit: a byte-fallback
  decoder re-renders a whole run of byte tokens as U+FFFD once the run turns invalid, so garbage
  byte runs may stream differently from the final decode; valid text always matches.)
- `StopChecker.feed(delta) -> (safe_text, matched)`: finds the stop string that completes first,
  even across token boundaries, and holds back any tail that may still become a stop string, so a
  stop string is never streamed and then retracted. Only the held tail is searched.
- `DecodeStream`: both, for one request, driven by its SamplingParams. `catch_up(output_ids)` feeds
  whatever of a request's output the stream has not consumed yet, so a request without stop strings
  is detokenized in bulk only when its text is needed (an output goes out), not token by token.
- Off the scheduler (`ClientText`): for a request whose text does not decide when it stops, the scheduler
  may send, instead of text, the output ids it has not sent yet (`TEXT_IDS_KEY` in the output dict,
  `DecodeStream.hand_off`); the engine's `ClientText` turns them into the same text where the output is
  consumed (the caller's thread), so the scheduler's step does no string work for it at all.
"""
from __future__ import annotations

import codecs
import functools
import logging
import weakref
from typing import Any, Optional, Sequence

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"


# ---------------------------------------------------------------------- byte-level token table
@functools.lru_cache(maxsize=1)
def gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes->printable-unicode map used by ByteLevel pre-tokenizers (shared with
    constrained/vocab.py; do not mutate the returned dict)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class _ByteTable:
    """Per token id: its bytes and whether it is special (skipped with skip_special_tokens)."""

    def __init__(self, token_bytes: list[bytes], special: frozenset[int]) -> None:
        self.token_bytes = token_bytes
        self.special = special


def _build_byte_table(tokenizer: Any) -> Optional[_ByteTable]:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    import json

    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # a tokenizer we cannot introspect: use the generic path
        return None
    if decoder.get("type") != "ByteLevel":
        return None
    byte_dec = gpt2_byte_decoder()
    vocab = backend.get_vocab(with_added_tokens=True)
    size = max(vocab.values(), default=-1) + 1
    table = [b""] * size
    for tok, i in vocab.items():
        # as the ByteLevel decoder does: map chars back to bytes; a token with a char outside the
        # alphabet (an added token such as "<|im_end|>" with spaces/unicode) is taken as UTF-8 text
        if all(c in byte_dec for c in tok):
            table[i] = bytes(byte_dec[c] for c in tok)
        else:
            table[i] = tok.encode("utf-8")
    special = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
    special.update(getattr(tokenizer, "all_special_ids", []) or [])
    bt = _ByteTable(table, frozenset(special))
    # self-check against the real decoder; any mismatch means this tokenizer is not plain byte-level
    probe = list(range(0, size, max(size // 300, 1)))[:300] + sorted(special)[:20]
    for skip in (False, True):
        expect = tokenizer.decode(probe, skip_special_tokens=skip)
        got = b"".join(table[i] for i in probe if not (skip and i in bt.special)).decode("utf-8", "replace")
        if got != expect:
            logger.info("byte-level fast path disabled for this tokenizer (self-check mismatch)")
            return None
    return bt


# id(tokenizer) -> (weak ref to it, its table); the entry goes away with the tokenizer
_TABLES: dict[int, tuple[Any, Optional[_ByteTable]]] = {}


def _byte_table_for(tokenizer: Any) -> Optional[_ByteTable]:
    key = id(tokenizer)
    entry = _TABLES.get(key)
    if entry is not None and entry[0]() is tokenizer:
        return entry[1]
    table = _build_byte_table(tokenizer)
    try:
        ref = weakref.ref(tokenizer, lambda _r, k=key: _TABLES.pop(k, None))
    except TypeError:  # not weak-referenceable: do not cache (ids could be reused)
        return table
    _TABLES[key] = (ref, table)
    return table


# ---------------------------------------------------------------------- incremental detokenizer
class IncrementalDetokenizer:
    # window of left context for the generic path (how many tokens are re-decoded each step)
    CONTEXT_TOKENS = 5

    def __init__(
        self,
        tokenizer: Any,
        prompt_ids: Optional[Sequence[int]] = None,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
        *,
        fast: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # only slow (Python) HF tokenizers honour this; carried for SGLang parity
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.text = ""  # everything returned so far
        self.num_tokens = 0
        self._table = _byte_table_for(tokenizer) if fast else None
        if self._table is not None:
            self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        else:
            ctx = list(prompt_ids[-self.CONTEXT_TOKENS:]) if prompt_ids else []
            self._ids: list[int] = ctx
            self._prefix_offset = 0
            self._read_offset = len(ctx)

    @property
    def fast(self) -> bool:
        return self._table is not None

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def append(self, ids: Sequence[int]) -> str:
        """Feed new token ids; return the text they complete (possibly "")."""
        self.num_tokens += len(ids)
        if self._table is not None:
            tb, special, skip = self._table.token_bytes, self._table.special, self.skip_special_tokens
            n = len(tb)
            data = b"".join(tb[i] if 0 <= i < n else b"" for i in ids if not (skip and i in special))
            delta = self._utf8.decode(data)
        else:
            self._ids.extend(ids)
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            full = self._decode(self._ids[self._prefix_offset :])
            # hold back while the window ends inside a character (decodes to U+FFFD)
            if len(full) <= len(prefix) or full.endswith(_REPLACEMENT):
                return ""
            delta = full[len(prefix) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """At the end of generation: whatever is still held (an incomplete character decodes to U+FFFD)."""
        if self._table is not None:
            delta = self._utf8.decode(b"", final=True)
        else:
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            full = self._decode(self._ids[self._prefix_offset :])
            delta = full[len(prefix) :]
            self._prefix_offset = self._read_offset = len(self._ids)
        self.text += delta
        return delta


# ---------------------------------------------------------------------- stop strings
class StopChecker:
    """Stop strings over a stream of text deltas, linear in the text: per stop string a KMP
    automaton whose state is the longest prefix of that string ending the text so far. The held
    tail is the longest such state, so memory and time do not grow with (stop string length)^2."""

    REGEX_WINDOW = 256  # how far back a stop_regex match may start

    def __init__(self, stop: Sequence[str] = (), no_stop_trim: bool = False, stop_regex: Sequence[str] = ()) -> None:
        if any(s == "" for s in stop):
            raise ValueError("stop strings must not be empty")
        self.stop = tuple(stop)
        self.no_stop_trim = no_stop_trim
        self._fail = [_prefix_function(s) for s in self.stop]
        self._state = [0] * len(self.stop)
        # imported here: loading the constrained package loads its vocab module, which imports this one
        from sglang.runtime.constrained.stop_regex import compile_stop_regex

        self._regexes = [compile_stop_regex(r) for r in stop_regex]  # linear time, unlike `re`
        self._held = ""
        self._recent = ""  # last REGEX_WINDOW emitted chars, for stop_regex only
        self.matched: Optional[str] = None

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    @property
    def watching(self) -> bool:
        """Whether any stop string or pattern can still end the text."""
        return bool(self.stop or self._regexes) and not self.stopped

    @property
    def held(self) -> str:
        return self._held

    def _advance(self, delta: str, base: int, armed: bool) -> Optional[tuple[int, int, str]]:
        """Run the automata over delta; the first completed stop string as (end, start, s) in
        buffer coordinates (delta starts at `base`); ties at one char go to the longest string.
        Unarmed, completions are passed over (the text before min_new_tokens cannot stop)."""
        stops, fails, state = self.stop, self._fail, self._state
        for j, c in enumerate(delta):
            done = -1
            for i, s in enumerate(stops):
                st = state[i]
                while st and s[st] != c:
                    st = fails[i][st - 1]
                if s[st] == c:
                    st += 1
                if st == len(s):
                    if done < 0 or len(s) > len(stops[done]):
                        done = i
                    st = fails[i][st - 1]
                state[i] = st
            if done >= 0 and armed:
                end = base + j + 1
                return end, end - len(stops[done]), stops[done]
        return None

    def feed(self, delta: str, armed: bool = True) -> tuple[str, Optional[str]]:
        """Returns (text safe to emit now, matched stop string or pattern, or None).
        `armed=False`: stop strings completed in this delta do not count (SGLang checks no stop
        condition before min_new_tokens); the text still goes through the automata."""
        if self.stopped:
            return "", None
        buf = self._held + delta
        best = self._advance(delta, len(self._held), armed) if self.stop else None  # (end, start, stop)
        if self._regexes:
            hit = self._scan_regexes(delta, armed)
            if hit is not None and (best is None or hit[:2] < best[:2]):
                best = hit
        if best is not None:
            end, start, matched = best
            self.matched = matched
            self._held = ""
            return (buf[:end] if self.no_stop_trim else buf[: max(start, 0)]), matched
        hold = max(self._state, default=0)  # the longest partial stop string ending the text
        self._held = buf[len(buf) - hold :] if hold else ""
        out = buf[: len(buf) - hold]
        if self._regexes:
            self._recent = (self._recent + out)[-self.REGEX_WINDOW :]
        return out, None

    def _scan_regexes(self, delta: str, armed: bool) -> Optional[tuple[int, int, str]]:
        """Walk every pattern's automaton over delta (each character once, armed or not, so a match may
        span deltas); the first match ending in delta as (end, start, pattern) in buffer coordinates.
        Patterns see recent emitted text for the start, but get no hold-back: a match that starts in
        already-streamed text can only be trimmed from here on (start < 0)."""
        base = len(self._held)
        text = self._recent + self._held + delta
        w = len(self._recent)
        for j, c in enumerate(delta):
            found: Optional[tuple[int, int, str]] = None
            for rx in self._regexes:
                if not rx.advance(c) or not armed:
                    continue
                start = rx.match_start(text, w + base + j + 1)
                if start is not None and (found is None or start - w < found[1]):
                    found = (base + j + 1, start - w, rx.pattern)
            if found is not None:
                return found
        return None

    def flush(self) -> str:
        """Generation ended for another reason: the held tail is plain text after all."""
        out, self._held = self._held, ""
        return out


def _prefix_function(s: str) -> list[int]:
    """KMP: pi[k] = length of the longest proper prefix of s[:k+1] that is also its suffix."""
    pi = [0] * len(s)
    for k in range(1, len(s)):
        j = pi[k - 1]
        while j and s[k] != s[j]:
            j = pi[j - 1]
        if s[k] == s[j]:
            j += 1
        pi[k] = j
    return pi


class DecodeStream:
    """One request's output text: detokenizer + stop strings, per its SamplingParams.

    Feed every sampled token through `append`, EXCEPT a token that finished the request as a stop
    token / EOS when stop trimming applies (not no_stop_trim): its text is not part of the output.
    `text` is always the text a client may see; `finish()` releases the held tail.
    """

    def __init__(self, tokenizer: Any, params: Any, prompt_ids: Optional[Sequence[int]] = None) -> None:
        self.detok = IncrementalDetokenizer(
            tokenizer, prompt_ids, params.skip_special_tokens, params.spaces_between_special_tokens
        )
        self.stops = StopChecker(params.stop, params.no_stop_trim, getattr(params, "stop_regex", ()))
        self.min_new_tokens = getattr(params, "min_new_tokens", 0)
        self.text = ""
        self.consumed = 0  # output tokens taken into account (fed, or skipped as a trimmed stop token)
        # whether the text decides when the request ends: then it must be fed every token, as sampled
        self.needs_every_token = self.stops.watching

    @property
    def matched(self) -> Optional[str]:
        return self.stops.matched

    def append(self, ids: Sequence[int]) -> tuple[str, Optional[str]]:
        """(new visible text, matched stop string or None). After a match, further ids are ignored.
        Before min_new_tokens ids have been appended, stop strings do not match (as in SGLang)."""
        if self.stops.stopped:
            return "", None
        delta = self.detok.append(ids)
        out, matched = self.stops.feed(delta, armed=self.detok.num_tokens >= self.min_new_tokens)
        self.text += out
        return out, matched

    def catch_up(self, output_ids: Sequence[int], end: Optional[int] = None) -> Optional[str]:
        """Feed output_ids[consumed:end] (end: all) in one call; the stop string it completes, or None.
        One call over many tokens costs about one token's overhead on the byte-level fast path."""
        end = len(output_ids) if end is None else end
        if end <= self.consumed:
            return None
        new = output_ids[self.consumed : end]
        self.consumed = end
        return self.append(new)[1]

    def skip(self) -> None:
        """Consume the next output token without its text (a stop token that is trimmed)."""
        self.consumed += 1

    def hand_off(self, output_ids: Sequence[int], end: Optional[int] = None) -> list[int]:
        """The ids of output_ids[consumed:end] (end: all) for another stream to decode (ClientText), taken
        as consumed here without any decoding. Only for a stream that no stop string watches."""
        end = len(output_ids) if end is None else end
        if end <= self.consumed:
            return []
        new = output_ids[self.consumed : end]  # a slice of the request's list: already a copy
        self.consumed = end
        return new

    def finish(self) -> str:
        """The request ended (length / stop token / abort): release held text."""
        if self.stops.stopped:
            return ""
        out, matched = self.stops.feed(self.detok.flush())
        if matched is None:
            out += self.stops.flush()
        self.text += out
        return out


# output-dict key under which the scheduler sends a request's new text ids instead of its text (ClientText)
TEXT_IDS_KEY = "text_ids"


class ClientText:
    """One request's output text made from the ids the scheduler handed off (see the module docstring):
    `fill(out)` feeds out's TEXT_IDS_KEY ids, sets out["text"] (cumulative, as the scheduler would) and
    drops the key. Outputs must be filled in order; one whose text the scheduler made passes unchanged."""

    def __init__(self, tokenizer: Any, params: Any, prompt_ids: Optional[Sequence[int]] = None) -> None:
        self.stream = DecodeStream(tokenizer, params, prompt_ids)

    def fill(self, out: dict) -> dict:
        ids = out.pop(TEXT_IDS_KEY, None)
        if ids is None:
            return out
        if ids:
            self.stream.append(ids)
        reason = out["meta_info"]["finish_reason"]
        if reason is not None and reason["type"] != "abort":  # as the scheduler: an abort keeps its held text
            self.stream.finish()
        out["text"] = self.stream.text
        return out
