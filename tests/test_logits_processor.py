"""LogitsProcessor's input logprobs: every request's wanted rows are projected together (and in chunks
that cross request boundaries), yet each request gets exactly its own rows, as a per-request
log_softmax over the vocabulary would give them."""
import torch

from sglang.runtime.forward_batch import ForwardBatch, ForwardMode
from sglang.runtime.layers import logits_processor as lp_mod
from sglang.runtime.layers.logits_processor import LogitsProcessor

VOCAB, HIDDEN = 50, 8


def _batch(ext_lens, lp_starts, tops):
    g = torch.Generator().manual_seed(0)
    n = sum(ext_lens)
    ids = torch.randint(0, VOCAB, (n,), generator=g)
    z = torch.zeros(len(ext_lens), dtype=torch.int64)
    return ForwardBatch(ForwardMode.EXTEND, len(ext_lens), ids, torch.arange(n), z, z, ids, torch.zeros(1), None,
                        extend_seq_lens_cpu=list(ext_lens), extend_logprob_start_lens_cpu=list(lp_starts),
                        return_logprob=True, top_logprobs_nums=list(tops))


def _reference(hidden, lm_head, batch, i):
    """Request i's (token logprobs, top values, top ids) computed on its own rows alone."""
    lens = batch.extend_seq_lens_cpu
    st, e, s = sum(lens[:i]), lens[i], max(batch.extend_logprob_start_lens_cpu[i], 0)
    rows = torch.log_softmax((hidden[st + s: st + e - 1] @ lm_head.t()).float(), dim=-1)
    nxt = batch.input_ids[st + s + 1: st + e]
    k = batch.top_logprobs_nums[i]
    top = rows.topk(k, dim=-1) if k else None
    return rows.gather(1, nxt[:, None]).squeeze(1), top


def _check(ext_lens, lp_starts, tops, monkeypatch=None, rows_per_chunk=None):
    if rows_per_chunk is not None:
        monkeypatch.setattr(lp_mod, "_ROWS_PER_CHUNK", rows_per_chunk)
    batch = _batch(ext_lens, lp_starts, tops)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(sum(ext_lens), HIDDEN, generator=g)
    lm_head = torch.randn(VOCAB, HIDDEN, generator=g)
    out = LogitsProcessor(VOCAB)(hidden, lm_head, batch)
    for i, (e, s, k) in enumerate(zip(ext_lens, lp_starts, tops)):
        if max(s, 0) >= e:
            assert out.input_token_logprobs[i] is None and out.input_top_logprobs[i] is None
            continue
        want, top = _reference(hidden, lm_head, batch, i)
        torch.testing.assert_close(out.input_token_logprobs[i], want)
        if k == 0:
            assert out.input_top_logprobs[i] is None
        else:
            vals, ids = out.input_top_logprobs[i]
            assert vals.shape == (len(want), k) and ids.shape == (len(want), k)
            torch.testing.assert_close(vals, top.values)
            assert torch.equal(ids, top.indices)


def test_each_request_gets_its_own_rows():
    # a start past the chunk (no logprobs), a one-token tail (no rows), a start at 0, mixed top-k
    _check([7, 5, 3, 9, 1], [2, 5, 2, 0, 0], [0, 3, 0, 2, 0])


def test_chunks_crossing_request_boundaries(monkeypatch):
    _check([7, 5, 3, 9, 4], [1, 0, 2, 3, 0], [1, 0, 4, 0, 2], monkeypatch, rows_per_chunk=4)


def test_no_request_wants_a_row():
    batch = _batch([3, 2], [3, 1], [0, 0])
    out = LogitsProcessor(VOCAB)(torch.randn(5, HIDDEN), torch.randn(VOCAB, HIDDEN), batch)
    assert out.input_token_logprobs[0] is None and out.input_token_logprobs[1].numel() == 0
    assert out.input_top_logprobs == [None, None]
    assert out.next_token_logits.shape == (2, VOCAB)


def test_decode_logits_go_into_the_given_buffer():
    """CUDA graphs of every batch size share one output buffer: a DECODE batch's logits are written into
    `out` (the same fp32 values as without it) and the result is that buffer, not a new tensor."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(3, HIDDEN, generator=g).to(torch.bfloat16)
    lm_head = torch.randn(VOCAB, HIDDEN, generator=g).to(torch.bfloat16)
    z = torch.zeros(3, dtype=torch.int64)
    batch = ForwardBatch(ForwardMode.DECODE, 3, z, z, z, z + 1, z, torch.zeros(1), None)
    shared = torch.full((5, VOCAB), float("nan"))
    got = LogitsProcessor(VOCAB)(hidden, lm_head, batch, out=shared[:3]).next_token_logits
    want = LogitsProcessor(VOCAB)(hidden, lm_head, batch).next_token_logits
    assert got.data_ptr() == shared.data_ptr() and got.dtype == torch.float32
    assert torch.equal(got, want) and torch.isnan(shared[3:]).all()
