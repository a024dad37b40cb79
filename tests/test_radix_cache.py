"""Radix cache: split, match, insert, LRU eviction, locking, and a model-based random test."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang.runtime.mem_cache.memory_pool import TokenKVPool
from sglang.runtime.mem_cache.radix_cache import NoRadixCache, RadixCache


def make(size: int = 64) -> tuple[TokenKVPool, RadixCache]:
    pool = TokenKVPool(size, num_layers=1, num_kv_heads=1, head_dim=1, dtype=torch.float32, device="cpu")
    return pool, RadixCache(pool)


def put(pool: TokenKVPool, cache: RadixCache, tokens: list[int]) -> torch.Tensor:
    """Allocate slots as a request would, insert, and free the duplicates; returns the tree's slots."""
    prefix, node = cache.match_prefix(tokens)
    new = pool.alloc(len(tokens) - prefix.numel())
    assert new is not None
    cache.inc_lock_ref(node)
    cache.cache_req(tokens, torch.cat([prefix, new]), prefix.numel(), node, finished=True)
    slots, _ = cache.match_prefix(tokens)
    return slots



@pytest.mark.parametrize("diverge", [0, 1, 63, 64, 65, 130, 199])
def test_long_prompt_matches_up_to_the_first_different_token(diverge):
    """Long prompts are compared slice by slice; the match still ends exactly where the tokens differ,
    whether the query is a list or a tuple."""
    pool, cache = make(512)
    base = list(range(1000, 1200))
    s = put(pool, cache, base)
    other = base[:diverge] + [7] + base[diverge + 1:]
    for query in (other, tuple(other)):
        slots, _ = cache.match_prefix(query)
        assert slots.tolist() == s[:diverge].tolist()

def test_match_split_and_sizes():
    pool, cache = make()
    s = put(pool, cache, [1, 2, 3, 4, 5])
    assert cache.evictable_size() == 5 and cache.num_nodes() == 2
    slots, node = cache.match_prefix([1, 2, 3, 9])
    assert slots.tolist() == s[:3].tolist()
    assert cache.num_nodes() == 3  # the edge was split at 3
    assert len(node.key) == 3 and len(next(iter(node.children.values())).key) == 2
    put(pool, cache, [1, 2, 3, 9, 9])
    assert cache.evictable_size() == 7
    assert pool.available_size() + cache.evictable_size() == pool.size
    slots, _ = cache.match_prefix([1, 2, 3, 4, 5, 6])
    assert slots.tolist() == s.tolist()
    assert cache.match_prefix([7])[0].numel() == 0


def test_insert_returns_already_cached_and_duplicates_are_freed():
    pool, cache = make()
    put(pool, cache, [1, 2, 3])
    # a second request computed [1,2,3,4] without having matched (e.g. raced): it owns 4 slots
    own = pool.alloc(4)
    assert cache.insert([1, 2, 3, 4], own) == 3
    pool.free(own[:3])
    assert cache.evictable_size() == 4
    assert pool.available_size() + cache.evictable_size() == pool.size


def test_lru_eviction_order_and_locking():
    pool, cache = make()
    put(pool, cache, [1, 1, 1])
    put(pool, cache, [2, 2, 2])
    put(pool, cache, [3, 3, 3])
    cache.match_prefix([1, 1, 1])  # touch: [2,2,2] is now least recently used
    assert cache.evict(1) == 3
    assert cache.match_prefix([2, 2, 2])[0].numel() == 0
    assert cache.match_prefix([1, 1, 1])[0].numel() == 3

    _, node = cache.match_prefix([3, 3, 3])
    cache.inc_lock_ref(node)
    assert cache.protected_size() == 3 and cache.evictable_size() == 3
    assert cache.evict(100) == 3  # only [1,1,1] could go
    assert cache.match_prefix([3, 3, 3])[0].numel() == 3
    cache.dec_lock_ref(node)
    assert cache.protected_size() == 0 and cache.evictable_size() == 3
    assert cache.evict(100) == 3
    assert pool.available_size() == pool.size and cache.num_nodes() == 1


def test_evicting_a_leaf_exposes_its_parent():
    pool, cache = make()
    put(pool, cache, [5, 6, 7, 8])
    put(pool, cache, [5, 6, 9])  # split: [5,6] -> {[7,8], [9]}
    assert cache.evict(5) == 5  # both leaves, then the parent that became a leaf
    assert cache.num_nodes() == 1 and pool.available_size() == pool.size


def test_lock_on_split_node_is_inherited():
    pool, cache = make()
    put(pool, cache, [1, 2, 3, 4])
    _, node = cache.match_prefix([1, 2, 3, 4])
    cache.inc_lock_ref(node)
    cache.match_prefix([1, 2, 7])  # splits the locked edge
    assert cache.protected_size() == 4 and cache.evict(10) == 0
    cache.dec_lock_ref(node)
    assert cache.evictable_size() == 4


def test_unfinished_cache_req_relocks_and_returns_tree_slots():
    pool, cache = make()
    prefix, node = cache.match_prefix([1, 2, 3, 4])
    cache.inc_lock_ref(node)
    slots = pool.alloc(4)
    new_slots, new_node = cache.cache_req([1, 2, 3, 4], slots, 0, node, finished=False)
    assert new_slots.tolist() == slots.tolist()
    assert cache.protected_size() == 4 and cache.evictable_size() == 0
    cache.dec_lock_ref(new_node)
    assert cache.evictable_size() == 4


def test_no_radix_cache_frees_everything_on_finish():
    pool = TokenKVPool(16, 1, 1, 1, torch.float32, "cpu")
    cache = NoRadixCache(pool)
    prefix, node = cache.match_prefix([1, 2, 3])
    assert prefix.numel() == 0
    slots = pool.alloc(3)
    kept, _ = cache.cache_req([1, 2, 3], slots, 0, node, finished=False)
    assert kept.tolist() == slots.tolist() and pool.available_size() == 13
    cache.cache_req([1, 2, 3], kept, 3, node, finished=True)
    assert pool.available_size() == 16 and cache.evictable_size() == 0


# -- model-based random test ---------------------------------------------------------------------
seqs = st.lists(st.integers(0, 3), min_size=1, max_size=8)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), seqs),
        st.tuples(st.just("match"), seqs),
        st.tuples(st.just("lock"), seqs),
        st.tuples(st.just("unlock"), st.integers(0, 10)),
        st.tuples(st.just("evict"), st.integers(1, 12)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_random_ops_against_a_prefix_dict(operations):
    pool, cache = make(size=400)
    model: dict[tuple[int, ...], int] = {}  # cached prefix -> slot of its last token
    locks: list[tuple[object, tuple[int, ...]]] = []

    def model_match(seq: list[int]) -> list[int]:
        out = []
        for i in range(1, len(seq) + 1):
            if tuple(seq[:i]) not in model:
                break
            out.append(model[tuple(seq[:i])])
        return out

    for op, arg in operations:
        if op == "insert":
            prefix, node = cache.match_prefix(arg)
            assert prefix.tolist() == model_match(arg)
            new = pool.alloc(len(arg) - prefix.numel())
            slots = torch.cat([prefix, new])
            already = cache.insert(arg, slots)
            assert already == prefix.numel()
            for i in range(len(arg)):
                model.setdefault(tuple(arg[: i + 1]), int(slots[i]))
        elif op == "match":
            assert cache.match_prefix(arg)[0].tolist() == model_match(arg)
        elif op == "lock":
            slots, node = cache.match_prefix(arg)
            cache.inc_lock_ref(node)
            locks.append((node, tuple(arg[: slots.numel()])))
        elif op == "unlock" and locks:
            node, _ = locks.pop(arg % len(locks))
            cache.dec_lock_ref(node)
        elif op == "evict":
            before = pool.available_size()
            freed = cache.evict(arg)
            assert pool.available_size() - before == freed
            assert freed >= min(arg, cache.evictable_size() + freed) or cache.evictable_size() == 0
            free_slots = set(pool.free_slots().tolist())
            model = {k: v for k, v in model.items() if v not in free_slots}
        # invariants: prefix-closed model, locked paths intact, accounting exact
        assert all(k[:-1] in model for k in model if len(k) > 1)
        for _, path in locks:
            assert cache.match_prefix(list(path))[0].numel() == len(path)
        assert cache.evictable_size() + cache.protected_size() == len(model)
        assert pool.available_size() + len(model) == pool.size
    for node, _ in locks:
        cache.dec_lock_ref(node)
    assert cache.protected_size() == 0
    cache.evict(10**9)
    assert pool.available_size() == pool.size


def test_pool_frees_join_the_free_list_once_when_an_allocation_needs_them(monkeypatch):
    """A burst of finishing requests frees many slot runs: each free must not copy the whole free list
    (millions of slots); allocation order stays first-freed-first after the never-used slots."""
    from sglang.runtime.mem_cache import memory_pool

    pool = TokenKVPool(10, num_layers=1, num_kv_heads=1, head_dim=1, dtype=torch.float32, device="cpu")
    taken = pool.alloc(10)
    assert taken.tolist() == list(range(1, 11)) and pool.alloc(1) is None
    cats = []
    real_cat = torch.cat
    monkeypatch.setattr(memory_pool.torch, "cat", lambda *a, **k: cats.append(1) or real_cat(*a, **k))
    for run in ([4, 2], [9], [1, 7, 3]):
        pool.free(torch.tensor(run))
    assert cats == [] and pool.available_size() == 6
    assert pool.alloc(4).tolist() == [4, 2, 9, 1] and len(cats) == 1
    assert pool.free_slots().tolist() == [7, 3] and pool.available_size() == 2
    assert pool.alloc(3) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=6),
       st.lists(st.integers(0, 3), max_size=14))
def test_match_len_is_match_prefix_length_without_its_effects(inserted, query):
    """lpm orders the queue by match_len: the same length match_prefix finds, with no edge split (node
    count), no access-time change and no slots gathered."""
    pool, cache = make(256)
    for tokens in inserted:
        put(pool, cache, tokens)
    nodes, stamp = cache.num_nodes(), cache.root.last_access
    got = cache.match_len(query)
    assert cache.num_nodes() == nodes and cache.root.last_access == stamp
    assert got == cache.match_prefix(query)[0].numel()
    assert NoRadixCache(pool).match_len(query) == 0
