"""Cascade (shared-prefix) decode attention vs plain decode and the dense reference, on the CPU under
TRITON_INTERPRET=1 (a GPU at real sizes via benchmarks/check_kernels.py). Rows of a group really share
their prefix slots in req_to_token, as the radix cache arranges; outputs are NaN-poisoned first."""
from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from sglang.kernels import reference as ref  # noqa: E402
from sglang.kernels.reference import rel_err  # noqa: E402
from sglang.kernels.cascade_decode import cascade_decode_attention, plan_cascade, tile_rows  # noqa: E402
from sglang.kernels.decode_attention import decode_attention  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def shared_pool(prefixes, rows_of, own_lens, hkv, d, dtype, seed=0):
    """prefixes[g] tokens of shared KV; row i copies prefix rows_of[i] (None: no shared prefix) and has
    own_lens[i] slots of its own after it. Returns buffers, req_to_token, row indices, seq lens."""
    g = torch.Generator().manual_seed(seed)
    total = sum(prefixes) + sum(own_lens)
    k_buf = torch.randn(total + 1, hkv, d, generator=g).to(DEV, dtype)
    v_buf = torch.randn(total + 1, hkv, d, generator=g).to(DEV, dtype)
    perm = (torch.randperm(total, generator=g) + 1).tolist()
    shared = []
    for n in prefixes:
        shared.append(perm[:n])
        perm = perm[n:]
    bs = len(rows_of)
    seq = [(prefixes[p] if p is not None else 0) + n for p, n in zip(rows_of, own_lens)]
    r2t = torch.zeros(bs + 3, max(seq) + 2, dtype=torch.int64)
    rows = torch.randperm(bs + 3, generator=g)[:bs]
    for i, (p, n) in enumerate(zip(rows_of, own_lens)):
        slots = (shared[p] if p is not None else []) + perm[:n]
        perm = perm[n:]
        r2t[rows[i], : len(slots)] = torch.tensor(slots)
    return k_buf, v_buf, r2t.to(DEV), rows.to(DEV), seq


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", [(4, 1), (6, 2)])
def test_cascade_decode_matches_plain_decode(dtype, heads):
    (hq, hkv), d = heads, 32
    # group 0: more rows than one prefix tile holds (the tile size differs between the interpreter and a
    # GPU), group 1: 2 rows, 2 ungrouped rows; rows of a group interleave with others in the batch
    n0 = tile_rows(hq // hkv) + 3
    rows_of = [0, 1, None] + [0] * (n0 // 2) + [1, None] + [0] * (n0 - n0 // 2)
    own = [1 + (7 * i) % 41 for i in range(len(rows_of))]
    k_buf, v_buf, r2t, rows, seq = shared_pool([37, 20], rows_of, own, hkv, d, dtype, seed=1)
    groups = [[i for i, p in enumerate(rows_of) if p == g] for g in (0, 1)]
    assert len(groups[0]) > tile_rows(hq // hkv)
    plan = plan_cascade(groups, [37, 20], len(seq), hq // hkv, DEV, splits=2)
    q = torch.randn(len(seq), hq, d).to(DEV, dtype)
    scale = 1 / math.sqrt(d)
    seq_t = torch.tensor(seq).to(DEV)
    out = torch.full_like(q, float("nan"))
    cascade_decode_attention(q, k_buf, v_buf, r2t, rows, seq_t, scale, plan, num_splits=3, out=out)
    plain = decode_attention(q, k_buf, v_buf, r2t, rows, seq_t, scale, num_splits=3)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * len(seq), scale)
    assert not torch.isnan(out).any()
    tol = 1e-5 if dtype == torch.float32 else 1.5e-2
    assert rel_err(out, want) < tol
    assert rel_err(out, plain.float()) < tol


def test_cascade_decode_shorter_declared_prefix_and_fused_write():
    """A group may declare less than the rows really share (the rest is read per row); with k_new/v_new
    the suffix part stores this step's K/V (its slot starts NaN) and attends to them."""
    hq, hkv, d, dtype = 4, 2, 16, torch.bfloat16
    rows_of = [0, 0, 0]
    own = [4, 1, 8]
    k_buf, v_buf, r2t, rows, seq = shared_pool([25], rows_of, own, hkv, d, dtype, seed=2)
    loc = torch.stack([r2t[int(r), n - 1] for r, n in zip(rows, seq)])
    k_new = torch.randn(3, hkv, d).to(DEV, dtype)
    v_new = torch.randn(3, hkv, d).to(DEV, dtype)
    k_buf[loc] = float("nan")
    v_buf[loc] = float("nan")
    plan = plan_cascade([[0, 1, 2]], [10], 3, hq // hkv, DEV)
    q = torch.randn(3, hq, d).to(DEV, dtype)
    out = torch.full_like(q, float("nan"))
    cascade_decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor(seq).to(DEV), d ** -0.5, plan, num_splits=2,
                             out=out, k_new=k_new, v_new=v_new, out_cache_loc=loc)
    assert torch.equal(k_buf[loc], k_new) and torch.equal(v_buf[loc], v_new)
    want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * 3, d ** -0.5)
    assert not torch.isnan(out).any()
    assert rel_err(out, want) < 1.5e-2


def test_plan_cascade_tiles_every_grouped_row_once():
    plan = plan_cascade([[4, 1, 2], [0]], [300, 12], 6, kv_group=tile_rows(1), device="cpu", splits=4)
    per = tile_rows(tile_rows(1))  # one row per tile when kv_group fills the tile
    rows, tiles = plan.rows.tolist(), plan.tiles.tolist()
    assert sorted(rows) == list(range(6))
    covered = sorted(r for off, cnt, _, _ in tiles for r in rows[off: off + cnt])
    assert covered == [0, 1, 2, 4] and all(cnt <= per for _, cnt, _, _ in tiles)  # rows 3, 5: no tile
    assert plan.kv_start.tolist() == [12, 300, 300, 0, 300, 0]
    # each tile splits its prefix at most `splits` ways and never below MIN_SPLIT_TOKENS a split
    assert {(s, n) for _, _, s, n in tiles} == {(300, 2), (12, 1)}
    with pytest.raises(ValueError, match="two groups"):
        plan_cascade([[0, 1], [1]], [5, 5], 2, 1, "cpu")


def test_prefix_splits_fill_the_gpu_within_bounds():
    from sglang.kernels.cascade_decode import MAX_PREFIX_SPLITS, choose_prefix_splits

    # one tile: split the prefix widely; but never below MIN_SPLIT_TOKENS a split; many tiles: enough programs
    assert choose_prefix_splits(1, 4096, num_kv_heads=8, num_sms=132) == MAX_PREFIX_SPLITS
    assert choose_prefix_splits(1, 300, num_kv_heads=8, num_sms=132) == 2
    assert choose_prefix_splits(64, 2048, num_kv_heads=8, num_sms=132) == 1


def test_graph_plan_runs_any_grouping_within_its_capacity():
    """A CUDA graph's plan has a fixed grid (capacity x GRAPH_PREFIX_SPLITS) over one static buffer that
    each step rewrites: groupings of different shapes, and none at all, give plain decode's answer from the
    same launch shapes; stale partials from an earlier step (NaN-poisoned here) never leak in."""
    from sglang.kernels import cascade_decode as cas

    hq, hkv, d = 4, 2, 16
    bs = 9
    cap = cas.graph_tile_capacity(bs)
    static = torch.full((cas.packed_size(bs, cap),), -1, dtype=torch.int32, device=DEV)
    groupings = ([[0, 3, 5, 8], [1, 2]], [[2, 4, 6]], [])
    for step, groups in enumerate(groupings):
        rows_of = [None] * bs
        for g, members in enumerate(groups):
            for r in members:
                rows_of[r] = g
        k_buf, v_buf, r2t, rows, seq = shared_pool([150, 40][: len(groups)] or [1], rows_of,
                                                   [1 + (5 * i) % 7 for i in range(bs)], hkv, d, torch.float32, seed=step)
        assert cas.count_tiles(groups, hq // hkv) <= cap
        packed, _, _ = cas.pack_cascade(groups, [150, 40][: len(groups)], bs, hq // hkv, cas.GRAPH_PREFIX_SPLITS,
                                        capacity=cap)
        static[: packed.numel()].copy_(packed.to(DEV))
        plan = cas.plan_from_packed(static, bs, cap, cas.GRAPH_PREFIX_SPLITS)
        q = torch.randn(bs, hq, d).to(DEV)
        seq_t = torch.tensor(seq).to(DEV)
        out = torch.full_like(q, float("nan"))
        cascade_decode_attention(q, k_buf, v_buf, r2t, rows, seq_t, d ** -0.5, plan, num_splits=2, out=out)
        want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * bs, d ** -0.5)
        assert not torch.isnan(out).any()
        assert rel_err(out, want) < 1e-5, groups
    with pytest.raises(ValueError, match="do not fit"):
        cas.pack_cascade([[i, i + 1] for i in range(0, 2 * cap + 2, 2)], [64] * (cap + 1), 2 * cap + 2, 1, 1,
                         capacity=cap)


class _LaunchKeys:
    """Stands in for a Triton kernel: records, per launch, what Triton compiles a kernel variant for (the
    constexpr and integer arguments it specializes on; tensors by dtype), then runs the real kernel."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        kwargs = getattr(kernel, "kwargs", None)  # the interpreter keeps the decorator's arguments here
        if kwargs is not None:
            names = kwargs.get("do_not_specialize") or ()
        else:  # a compiled JITFunction: indices into its arguments
            names = [kernel.arg_names[i] if isinstance(i, int) else i for i in kernel.do_not_specialize]
        self.free = set(names)
        self.keys: set = set()

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            named = dict(zip(self.kernel.arg_names, args), **kwargs)
            key = []
            for name, v in sorted(named.items()):
                if name in self.free or isinstance(v, float):
                    continue
                key.append((name, v.dtype if isinstance(v, torch.Tensor) else v))
            self.keys.add(tuple(key))
            return self.kernel[grid](*args, **kwargs)

        return launch


def test_one_kernel_variant_serves_every_grouping(monkeypatch):
    """The grouping (tiles, prefix splits) changes as requests join a shared-prefix batch; the kernels must
    not be specialized on it, or each new plan compiles new kernels on the scheduler's thread (the suspect
    of the H200 shared-prefix stall of run 6: every request's first token waited ~65 s)."""
    from sglang.kernels import cascade_decode as cas
    from sglang.kernels import decode_attention as dec

    recorders = {}
    for mod, name in ((cas, "_cascade_prefix_kernel"), (dec, "_decode_stage1_kernel"), (dec, "_decode_stage2_kernel")):
        recorders[name] = _LaunchKeys(getattr(mod, name))
        monkeypatch.setattr(mod, name, recorders[name])
    hq, hkv, d = 4, 2, 16
    plans = ((4, [[0, 1, 2, 3]], 1), (6, [[0, 2], [1, 3, 4]], 3), (5, [[1, 4]], cas.MAX_PREFIX_SPLITS))
    for bs, groups, splits in plans:
        rows_of = [None] * bs
        for g, members in enumerate(groups):
            for r in members:
                rows_of[r] = g
        k_buf, v_buf, r2t, rows, seq = shared_pool([24] * len(groups), rows_of, [1 + i % 3 for i in range(bs)],
                                                   hkv, d, torch.float32, seed=bs)
        r2t = torch.nn.functional.pad(r2t, (0, 64 - r2t.shape[1]))  # one req_to_token width, as in a server
        plan = plan_cascade(groups, [24] * len(groups), bs, hq // hkv, DEV, splits=splits)
        q = torch.randn(bs, hq, d).to(DEV)
        out = cascade_decode_attention(q, k_buf, v_buf, r2t, rows, torch.tensor(seq).to(DEV), d ** -0.5, plan,
                                       num_splits=2)
        want = ref.extend_attention_ref(q, k_buf, v_buf, r2t, rows, [s - 1 for s in seq], [1] * bs, d ** -0.5)
        assert rel_err(out, want) < 1e-5
    for name, rec in recorders.items():
        differ = set.union(*map(set, rec.keys)) - set.intersection(*map(set, rec.keys))
        assert len(rec.keys) == 1, f"{name}: {len(rec.keys)} variants for 3 groupings, by {sorted(differ)}"


def test_prefix_splits_beyond_the_buffers_are_refused():
    from sglang.kernels.cascade_decode import MAX_PREFIX_SPLITS

    with pytest.raises(ValueError, match="prefix splits"):
        plan_cascade([[0, 1]], [8], 2, 1, DEV, splits=MAX_PREFIX_SPLITS + 1)
