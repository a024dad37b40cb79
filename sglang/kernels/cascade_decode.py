"""Shared-prefix ("cascade") decode attention: requests that share a cached prefix read its KV once.

A DECODE batch whose rows fall into groups sharing their first `shared_len` KV slots (same slots in
req_to_token: the radix tree hands every request the tree's own copy of a cached prefix) is attended in
two parts whose partial results are merged by log-sum-exp:
  - prefix: one program per (tile, KV head, prefix split) attends the queries of up to `tile_rows`
    rows of one group (times the KV_GROUP query heads of the KV head) to the group's shared prefix, so a
    prefix K/V block is loaded once for the whole tile and the scores are a real matmul;
  - suffix: the plain split-KV decode kernel, each row from its group's shared_len to its seq_len
    (ungrouped rows from 0).
Both write into one [bs, Hq, num_splits + prefix_splits] set of partial results, which the decode
kernel's stage 2 merges. The result equals plain decode attention up to rounding.

The tiling is built on the host (`pack_cascade`, one small host-to-device copy) into a plan whose launch
grid is either what the grouping needs (eager) or a fixed capacity (`graph_tile_capacity`, a CUDA graph:
the grouping is device data copied into the graph's static plan before each replay; unused tiles are
empty). Rows in no group have no tile: their prefix partials are marked empty before the kernels run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from sglang.kernels._triton import interpreting, next_pow2, require_triton, tl, triton
from sglang.kernels.decode_attention import (DEFAULT_NUM_SPLITS, LOG2E, check_decode_args, launch_split_kv,
                                             merge_splits, split_buffers)

require_triton()

MAX_PREFIX_SPLITS = 8
# the prefix grid of a CUDA-graph plan (fixed at capture; each tile uses up to this many splits)
GRAPH_PREFIX_SPLITS = 4
MIN_SPLIT_TOKENS = 128  # a prefix split shorter than this costs more in merging than it gains
# query rows (row x head) per prefix program: 64 fills a Hopper mma tile with the GQA heads of 16 rows
TILE_QUERIES = 64
TILE_QUERIES_INTERPRETED = 16  # the CPU interpreter: small tiles, so tests cover groups of several tiles
TILE_FIELDS = 4  # (offset into rows, row count, shared prefix length, prefix splits) per tile


def tile_rows(kv_group: int) -> int:
    """Batch rows per prefix tile for `kv_group` query heads per KV head."""
    target = TILE_QUERIES_INTERPRETED if interpreting() else TILE_QUERIES
    return max(1, target // kv_group)


def graph_tile_capacity(bs: int) -> int:
    """Prefix tiles a CUDA-graph plan for `bs` rows holds (its launch grid): groupings needing more (many
    small groups, which save little) are not run by a cascade graph. Unused tiles have no rows and do
    nothing but exit, so the capacity stays a fraction of the batch."""
    return max(4, bs // 4)


@dataclass(frozen=True)
class CascadePlan:
    """Device-side description of a grouped decode batch (built by `plan_cascade` / `pack_cascade`)."""

    rows: torch.Tensor  # int32 [bs]: batch rows, grouped rows first, tile by tile
    tiles: torch.Tensor  # int32 [num_tiles, TILE_FIELDS]
    kv_start: torch.Tensor  # int32 [bs]: where each row's own suffix starts (0 when ungrouped)
    num_tiles: int  # the launch grid's tile dimension (a graph plan: its capacity, unused tiles empty)
    prefix_splits: int  # the launch grid's split dimension (>= every tile's own split count)
    shared_tokens: int = 0  # sum over tiles of shared prefix lengths (what the prefix part reads)


def count_tiles(groups: Sequence[Sequence[int]], kv_group: int) -> int:
    """Prefix tiles `plan_cascade` makes for these groups."""
    per_tile = tile_rows(kv_group)
    return sum(-(-len(g) // per_tile) for g in groups)


def choose_prefix_splits(num_tiles: int, max_shared: int, num_kv_heads: int, num_sms: int) -> int:
    """Prefix splits so that the prefix programs fill the GPU about twice over, each split still long
    enough to be worth its partial result."""
    programs = max(num_tiles * num_kv_heads, 1)
    want = -(-2 * num_sms // programs)
    return max(1, min(want, max_shared // MIN_SPLIT_TOKENS, MAX_PREFIX_SPLITS))


def pack_cascade(groups: Sequence[Sequence[int]], shared_lens: Sequence[int], bs: int, kv_group: int,
                 splits: int, capacity: Optional[int] = None) -> tuple[torch.Tensor, int, int]:
    """The plan as one host int32 tensor: rows [bs], tiles [capacity or num_tiles, TILE_FIELDS], kv_start
    [bs]. Tiles of at most tile_rows(kv_group) rows per group, each with its own split count (<= splits;
    a short prefix is split less). Rows in no group get no tile: their prefix partials stay empty (the
    attention function marks them so) and their suffix starts at 0. Returns (packed, num_tiles, shared
    tokens read)."""
    if not 1 <= splits <= MAX_PREFIX_SPLITS:
        raise ValueError(f"plan_cascade: prefix splits must be in [1, {MAX_PREFIX_SPLITS}], got {splits}")
    per_tile = tile_rows(kv_group)
    order: list[int] = []
    tiles: list[int] = []
    kv_start = [0] * bs
    seen = [False] * bs
    shared_tokens = 0
    for rows, shared in zip(groups, shared_lens):
        shared = int(shared)
        tile_splits = max(1, min(splits, shared // MIN_SPLIT_TOKENS))
        for i in range(0, len(rows), per_tile):
            chunk = rows[i: i + per_tile]
            tiles += [len(order), len(chunk), shared, tile_splits]
            order.extend(chunk)
            shared_tokens += shared
        for r in rows:
            if seen[r]:
                raise ValueError(f"plan_cascade: row {r} is in two groups")
            seen[r] = True
            kv_start[r] = shared
    num_tiles = len(tiles) // TILE_FIELDS
    if capacity is not None:
        if num_tiles > capacity:
            raise ValueError(f"plan_cascade: {num_tiles} tiles do not fit a plan of {capacity}")
        tiles += [0] * (TILE_FIELDS * (capacity - num_tiles))  # empty tiles: no rows, nothing read
    order += [r for r in range(bs) if not seen[r]]
    return torch.tensor(order + tiles + kv_start, dtype=torch.int32), num_tiles, shared_tokens


def plan_from_packed(packed: torch.Tensor, bs: int, num_tiles: int, splits: int,
                     shared_tokens: int = 0) -> CascadePlan:
    """Views of a packed plan (host or device) as a CascadePlan with a grid of num_tiles x splits."""
    end = bs + TILE_FIELDS * num_tiles
    return CascadePlan(rows=packed[:bs], tiles=packed[bs:end].view(num_tiles, TILE_FIELDS),
                       kv_start=packed[end:end + bs], num_tiles=num_tiles, prefix_splits=splits,
                       shared_tokens=shared_tokens)


def packed_size(bs: int, num_tiles: int) -> int:
    return 2 * bs + TILE_FIELDS * num_tiles


def plan_cascade(groups: Sequence[Sequence[int]], shared_lens: Sequence[int], bs: int, kv_group: int,
                 device: torch.device | str, splits: Optional[int] = None, num_kv_heads: int = 8,
                 num_sms: int = 132) -> CascadePlan:
    """An eager plan: as many tiles as the groups need; splits None = `choose_prefix_splits`."""
    if splits is None:
        splits = choose_prefix_splits(count_tiles(groups, kv_group), max((int(s) for s in shared_lens), default=0),
                                      num_kv_heads, num_sms)
    packed, num_tiles, shared_tokens = pack_cascade(groups, shared_lens, bs, kv_group, splits)
    # one copy for all three int arrays (kv_start fits int32: it is a sequence position)
    if torch.device(device).type == "cuda":
        packed = packed.pin_memory().to(device, non_blocking=True)
    else:
        packed = packed.to(device)
    return plan_from_packed(packed, bs, num_tiles, splits, shared_tokens)


# the grid and every tile's split count come from the plan (device data), never from a specialized
# argument: one compiled kernel serves every grouping (each new constexpr value once compiled a new kernel
# on the scheduler's thread, many times while a shared-prefix batch formed), and a CUDA graph replays any
# grouping that fits its tile capacity
@triton.jit
def _cascade_prefix_kernel(
    Q, K, V, MID_O, MID_LSE, REQ_TO_TOKEN, REQ_IDX, ROWS, TILES,
    sm_scale_log2,
    stride_qb, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_r2t,
    stride_mob, stride_moh, stride_mos, stride_lb, stride_lh,
    SPLIT_BASE: tl.constexpr,
    KV_GROUP: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PREC: tl.constexpr,
):
    # one program per (tile, KV head, prefix split); query m of the tile is (row m // KV_GROUP,
    # head m % KV_GROUP of this KV head), so all rows and GQA heads share each loaded K/V block.
    # An empty tile (a graph plan's unused capacity) has no rows: every load and store is masked off.
    t = tl.program_id(0)
    kvh = tl.program_id(1)
    ps = tl.program_id(2)
    off = tl.load(TILES + t * 4).to(tl.int32)
    cnt = tl.load(TILES + t * 4 + 1).to(tl.int32)
    shared = tl.load(TILES + t * 4 + 2).to(tl.int32)
    nsplit = tl.maximum(tl.load(TILES + t * 4 + 3).to(tl.int32), 1)
    # every row of a tile has the same slots for the shared prefix: read them from the first row's
    req = tl.load(REQ_IDX + tl.load(ROWS + off)).to(tl.int64)

    offs_m = tl.arange(0, BLOCK_M)
    r_local = offs_m // KV_GROUP
    m_mask = r_local < cnt
    rows = tl.load(ROWS + off + r_local, mask=m_mask, other=0).to(tl.int64)
    heads = kvh * KV_GROUP + offs_m % KV_GROUP
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    io_mask = m_mask[:, None] & d_mask[None, :]
    q = tl.load(Q + rows[:, None] * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=io_mask,
                other=0.0)
    if UPCAST_DOT:
        q = q.to(tl.float32)

    # splits past the tile's own count get an empty range (lo >= shared): they write an empty partial
    split_len = tl.cdiv(shared, nsplit)
    lo = ps * split_len
    hi = tl.minimum(lo + split_len, shared)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < hi
        slots = tl.load(REQ_TO_TOKEN + req * stride_r2t + offs_n, mask=n_mask, other=0).to(tl.int64)
        k = tl.load(K + slots[:, None] * stride_kt + kvh * stride_kh + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        v = tl.load(V + slots[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :],
                    mask=n_mask[:, None] & d_mask[None, :], other=0.0)
        if UPCAST_DOT:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * sm_scale_log2
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
    # an empty piece (ungrouped row, short prefix) has weight 0 in the merge: lse -inf, values 0
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.math.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    split = SPLIT_BASE + ps
    tl.store(MID_O + rows[:, None] * stride_mob + heads[:, None] * stride_moh + split * stride_mos + offs_d[None, :],
             out, mask=io_mask)
    tl.store(MID_LSE + rows * stride_lb + heads * stride_lh + split, lse, mask=m_mask)


def cascade_decode_attention(
    q: torch.Tensor,  # [bs, Hq, D]
    k_buffer: torch.Tensor,  # [pool_size, Hkv, D]
    v_buffer: torch.Tensor,
    req_to_token: torch.Tensor,
    req_pool_indices: torch.Tensor,  # [bs]
    seq_lens: torch.Tensor,  # [bs], including the current token
    sm_scale: float,
    plan: CascadePlan,
    num_splits: int = DEFAULT_NUM_SPLITS,
    out: torch.Tensor | None = None,
    k_new: torch.Tensor | None = None,  # as in decode_attention: stored into the pool by the suffix part
    v_new: torch.Tensor | None = None,
    out_cache_loc: torch.Tensor | None = None,
    config: tuple[int, int, int] | None = None,  # suffix stage (BLOCK_N, num_warps, num_stages)
    min_split: int = 1,  # suffix stage: fewest keys per split (decode_attention's)
) -> torch.Tensor:
    """Decode attention equal to `decode_attention`, reading each group's shared prefix once per tile.

    The newest token is always in the suffix (a shared prefix is cached KV, so shorter than seq_len),
    hence the fused pool write of k_new/v_new works as in plain decode. Launch shapes depend only on the
    batch size and the plan's grid (num_tiles x prefix_splits), so a CUDA graph can capture it."""
    check_decode_args("cascade_decode_attention", q, k_buffer, v_buffer, num_splits, k_new, v_new, out_cache_loc)
    if not 1 <= plan.prefix_splits <= MAX_PREFIX_SPLITS:
        raise ValueError(f"cascade_decode_attention: prefix_splits must be in [1, {MAX_PREFIX_SPLITS}], "
                         f"got {plan.prefix_splits}")
    bs, hq, d = q.shape
    if plan.rows.shape[0] != bs or plan.kv_start.shape[0] != bs:
        raise ValueError(f"cascade_decode_attention: plan is for {plan.rows.shape[0]} rows, batch has {bs}")
    if out is None:
        out = torch.empty_like(q)
    if bs == 0:
        return out
    # as wide as the most prefix splits, whatever this plan uses: the buffers' strides (kernel arguments)
    # then do not change with the plan either
    mid_o, mid_lse = split_buffers(q, num_splits + MAX_PREFIX_SPLITS)
    # rows in no tile (and splits no tile writes) have empty prefix partials: weight 0 in the merge
    mid_lse[:, :, num_splits:num_splits + plan.prefix_splits].fill_(float("-inf"))
    launch_split_kv(q, k_buffer, v_buffer, req_to_token, req_pool_indices, seq_lens, sm_scale, mid_o, mid_lse,
                    num_splits, k_new=k_new, v_new=v_new, out_cache_loc=out_cache_loc, config=config,
                    kv_start=plan.kv_start, min_split=min_split)
    group = hq // k_buffer.shape[1]
    block_d = next_pow2(d)
    block_m = max(16, next_pow2(tile_rows(group) * group))
    if interpreting():
        block_n, warps, stages = 16, 4, 1
    else:
        block_n, warps, stages = 64, 4, 2
    if plan.num_tiles:
        _cascade_prefix_kernel[(plan.num_tiles, k_buffer.shape[1], plan.prefix_splits)](
            q, k_buffer, v_buffer, mid_o, mid_lse, req_to_token, req_pool_indices, plan.rows, plan.tiles,
            sm_scale * LOG2E,
            q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1),
            v_buffer.stride(0), v_buffer.stride(1), req_to_token.stride(0),
            mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
            SPLIT_BASE=num_splits,
            KV_GROUP=group, BLOCK_M=block_m, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_N=block_n,
            UPCAST_DOT=interpreting(), DOT_PREC="ieee" if q.dtype == torch.float32 else "tf32",
            num_warps=warps, num_stages=stages,
        )
    merge_splits(mid_o, mid_lse, out, num_splits + plan.prefix_splits)
    return out
