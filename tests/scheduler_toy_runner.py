"""A toy model runner for scheduler tests: exact, instant, and it reads its context from the KV pool.

Each forward writes (token id, position) of every new token as its K into the token pool, then
computes each request's logits from the K of its WHOLE sequence read back through req_to_token. So a
scheduler that hands a request the wrong cached slots, or forgets to write one, produces a different
token (or trips the position check) — exactly the bugs the cache/retraction logic could have.

`toy_logits(tokens)` is the reference: what the model "means" for a token sequence.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from sglang.runtime.forward_batch import ForwardBatch
from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool

VOCAB = 64
EOS = 1
ALPHABET = "EOabcdefghijklmnopqrstuvwxyzABCDFGHIJKLMNPQRSTUVWXYZ0123456789 .!"  # id 1 (O) = eos
assert len(ALPHABET) >= VOCAB


def toy_logits(tokens: list[int]) -> torch.Tensor:
    """fp32 [VOCAB]: a peaked distribution whose argmax depends on every token and its position."""
    h = 0
    for i, t in enumerate(tokens):
        h = (h * 31 + (t + 1) * (i + 7)) % 1000003
    target = 2 + h % (VOCAB - 2)  # never EOS by argmax, so greedy runs to max_new_tokens
    ranks = (torch.arange(VOCAB) - target) % VOCAB
    return -0.25 * ranks.float() + 0.01 * ((h >> 5) % 7)


def toy_greedy(prompt: list[int], n: int) -> list[int]:
    toks = list(prompt)
    for _ in range(n):
        toks.append(int(toy_logits(toks).argmax()))
    return toks[len(prompt):]


class ToyTokenizer:
    eos_token_id = EOS
    all_special_ids = [EOS]

    def decode(self, ids, skip_special_tokens: bool = True, **_) -> str:
        return "".join(ALPHABET[i] for i in ids if not (skip_special_tokens and i == EOS))

    def encode(self, text: str, **_) -> list[int]:
        return [ALPHABET.index(c) for c in text]


@dataclass
class ToyOutput:
    next_token_logits: torch.Tensor
    input_token_logprobs: list | None = None
    input_top_logprobs: list | None = None


class ToyRunner:
    def __init__(self, pool_size: int = 4096, max_reqs: int = 64, context_len: int = 1024) -> None:
        self.device = torch.device("cpu")
        self.model_config = SimpleNamespace(vocab_size=VOCAB, context_len=context_len, eos_token_ids=(EOS,))
        self.req_to_token_pool = ReqToTokenPool(max_reqs, context_len, "cpu")
        self.token_kv_pool = TokenKVPool(pool_size, 1, 1, 2, torch.float32, "cpu")
        self.batches: list[tuple[str, int, list[int]]] = []  # (mode, bs, seq_lens) per forward

    def forward(self, batch: ForwardBatch) -> ToyOutput:
        k = torch.stack([batch.input_ids.float(), batch.positions.float()], dim=1).view(-1, 1, 2)
        self.token_kv_pool.set_kv(0, batch.out_cache_loc, k, k)
        kbuf = self.token_kv_pool.get_kv(0)[0]
        seq_lens = batch.seq_lens.tolist()
        self.batches.append((batch.mode.name, batch.batch_size, seq_lens))
        rows, seqs = [], []
        for i, n in enumerate(seq_lens):
            slots = batch.req_to_token[batch.req_pool_indices[i], :n]
            kv = kbuf[slots, 0]
            assert kv[:, 1].tolist() == list(range(n)), "KV positions out of order: wrong slots"
            toks = [int(t) for t in kv[:, 0].tolist()]
            seqs.append(toks)
            rows.append(toy_logits(toks))
        out = ToyOutput(torch.stack(rows))
        if batch.return_logprob:
            out.input_token_logprobs, out.input_top_logprobs = [], []
            for i, toks in enumerate(seqs):
                e, p = batch.extend_seq_lens_cpu[i], batch.extend_prefix_lens_cpu[i]
                s = batch.extend_logprob_start_lens_cpu[i]
                k = (batch.top_logprobs_nums or [0] * batch.batch_size)[i]
                if s >= e:
                    out.input_token_logprobs.append(None)
                    out.input_top_logprobs.append(None)
                    continue
                lps = [torch.log_softmax(toy_logits(toks[: p + j + 1]), -1) for j in range(s, e - 1)]
                out.input_token_logprobs.append(
                    torch.tensor([float(lp[toks[p + j + 1]]) for lp, j in zip(lps, range(s, e - 1))])
                )
                if k:
                    tops = [lp.topk(k) for lp in lps]
                    out.input_top_logprobs.append(
                        (torch.stack([t.values for t in tops]) if tops else torch.empty(0, k),
                         torch.stack([t.indices for t in tops]) if tops else torch.empty(0, k, dtype=torch.int64))
                    )
                else:
                    out.input_top_logprobs.append(None)
        return out


def reference_input_logprobs(prompt: list[int], start: int) -> list:
    """[(logprob | None, token)] for prompt positions start.. as the scheduler should report them."""
    out = []
    for p in range(start, len(prompt)):
        if p == 0:
            out.append((None, prompt[0]))
        else:
            out.append((float(torch.log_softmax(toy_logits(prompt[:p]), -1)[prompt[p]]), prompt[p]))
    return out
