"""find_prefix_groups over a real radix tree: groups maximise the KV reads saved, rows of a group really
hold the same slots for the shared length, and nothing is returned when sharing does not pay."""
from __future__ import annotations

import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang.runtime.mem_cache.memory_pool import TokenKVPool
from sglang.runtime.mem_cache.radix_cache import RadixCache
from sglang.runtime.scheduler.prefix_groups import MIN_SHARED_LEN, find_prefix_groups


def tree(size: int = 20000) -> RadixCache:
    pool = TokenKVPool(size, num_layers=1, num_kv_heads=1, head_dim=1, dtype=torch.float32, device="cpu")
    return RadixCache(pool)


def admit(cache: RadixCache, prompt: list[int]):
    """What a running request holds after its prefill: its prompt cached, locked at its last node."""
    prefix, node = cache.match_prefix(prompt)
    new = cache.pool.alloc(len(prompt) - prefix.numel())
    cache.inc_lock_ref(node)
    slots, node = cache.cache_req(prompt, torch.cat([prefix, new]), prefix.numel(), node, finished=False)
    return slots, node


def groups_of(g):
    return sorted((tuple(rows), n) for rows, n in zip(g.group_rows(), g.shared_lens))


def test_groups_by_system_prompt_not_by_common_bos():
    cache = tree()
    rng = random.Random(0)
    bos = [1, 2, 3]  # every prompt starts alike: grouping all rows there would save almost nothing
    systems = [bos + [rng.randrange(10, 10**6) for _ in range(200)] for _ in range(3)]
    prompts, held = [], []
    for i in range(12):
        p = systems[i % 3] + [rng.randrange(10, 10**6) for _ in range(20)]
        prompts.append(p)
        held.append(admit(cache, p))
    seq = [len(p) + 1 for p in prompts]
    g = find_prefix_groups([n for _, n in held], seq, min_saved_share=0.0, min_saved_tokens=0)
    assert groups_of(g) == [((0, 3, 6, 9), 203), ((1, 4, 7, 10), 203), ((2, 5, 8, 11), 203)]
    for rows, n in zip(g.group_rows(), g.shared_lens):  # the contract: same slots for the shared length
        assert all(torch.equal(held[r][0][:n], held[rows[0]][0][:n]) for r in rows)


def test_deeper_subgroup_wins_when_it_saves_more():
    cache = tree()
    base = list(range(100, 100 + 64))
    deep = base + list(range(1000, 1000 + 300))
    prompts = [deep + [5000 + i] * 3 for i in range(3)] + [base + [7000 + i] * 40 for i in range(2)]
    held = [admit(cache, p) for p in prompts]
    g = find_prefix_groups([n for _, n in held], [len(p) + 1 for p in prompts], min_saved_share=0.0,
                           min_saved_tokens=0)
    # one group of 5 at 64 saves 256; the three at 364 save 728 (the other two share only 64: 64 more)
    assert groups_of(g) == [((0, 1, 2), 364), ((3, 4), 64)]


def test_rows_ending_at_an_inner_node_join_its_group():
    cache = tree()
    base = list(range(100, 100 + 80))
    held = [admit(cache, base + [9, 9])]
    held.append(admit(cache, base + [9]))  # ends inside the first prompt's edge: the edge splits there
    held.append(admit(cache, base + [9, 9]))
    g = find_prefix_groups([n for _, n in held], [90, 90, 90], min_saved_share=0.0, min_saved_tokens=0)
    assert groups_of(g) == [((0, 1, 2), 81)]


def test_nothing_when_sharing_does_not_pay():
    cache = tree()
    short = list(range(MIN_SHARED_LEN - 1))
    held = [admit(cache, short + [i] * 5) for i in range(10, 14)]
    nodes = [n for _, n in held]
    assert find_prefix_groups(nodes, [100] * 4, min_saved_share=0.0, min_saved_tokens=0) is None
    assert find_prefix_groups([None, cache.root], [5, 5]) is None
    long = list(range(1000, 1100))
    nodes = [admit(cache, long + [i])[1] for i in range(2)]
    assert find_prefix_groups(nodes, [102, 102], min_saved_share=0.0, min_saved_tokens=0) is not None
    assert find_prefix_groups(nodes, [102, 102], min_saved_share=0.6, min_saved_tokens=0) is None
    assert find_prefix_groups(nodes, [102, 102], min_saved_share=0.0, min_saved_tokens=101) is None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=6), min_size=1, max_size=10))
def test_random_trees_groups_are_exact_and_disjoint(shapes):
    """Prompts over a tiny alphabet share prefixes of every length: each group's rows hold the same
    slots for its shared length, no row is in two groups, and the saving is what the groups claim."""
    cache = tree()
    prompts = [[t for x in s for t in [x] * 40] for s in shapes]  # runs of 40 so shared parts are long
    held = [admit(cache, p) for p in prompts]
    g = find_prefix_groups([n for _, n in held], [len(p) + 1 for p in prompts], min_saved_share=0.0,
                           min_saved_tokens=0)
    if g is None:
        return
    assert len(g.rows) == len(set(g.rows))
    for rows, n in zip(g.group_rows(), g.shared_lens):
        assert len(rows) >= 2 and n >= MIN_SHARED_LEN
        for r in rows:
            assert len(held[r][0]) >= n and torch.equal(held[r][0][:n], held[rows[0]][0][:n])
            assert prompts[r][:n] == prompts[rows[0]][:n]


def test_grouper_reuses_the_grouping_while_the_rows_keep_their_nodes():
    from sglang.runtime.scheduler.prefix_groups import PrefixGrouper

    cache = tree()
    long = list(range(1000, 1200))
    nodes = [admit(cache, long + [i] * 3)[1] for i in range(3)]
    grouper = PrefixGrouper(min_saved_share=0.5, min_saved_tokens=0)
    first = grouper.find(nodes, [204] * 3)
    assert groups_of(first) == [((0, 1, 2), 200)]
    assert grouper.find(nodes, [210] * 3) is first  # same nodes: no new tree walk
    assert grouper.find(nodes, [1000] * 3) is None  # rows grew long: sharing saves under half the reads
    assert grouper.find(nodes[:1], [204]) is None  # the batch changed: recomputed (one row shares nothing)
