"""Router tree and policies, without HTTP: the approximate prefix tree agrees with a brute-force model
of what was routed where (property tests), eviction bounds it, and the policies pick as documented."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sglang.runtime.router.policy import (CacheAwarePolicy, RoundRobinPolicy, is_imbalanced, least_loaded,
                                          make_policy)
from sglang.runtime.router.tree import PrefixTree

WORKERS = ("w0", "w1", "w2")
keys = st.text(alphabet="abc", min_size=1, max_size=12)
token_keys = st.lists(st.integers(0, 3), min_size=1, max_size=10).map(tuple)
ops = st.lists(st.tuples(st.one_of(keys, token_keys), st.sampled_from(WORKERS)), max_size=40)


def _lcp(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@settings(max_examples=200, deadline=None)
@given(ops, st.one_of(keys, token_keys))
def test_match_is_longest_common_prefix_with_what_each_worker_was_sent(inserts, query):
    tree = PrefixTree()
    for key, w in inserts:
        tree.insert(key, w)
        tree.check_invariants()
    expected = {}
    for key, w in inserts:
        n = _lcp(key, query)
        if n:
            expected[w] = max(expected.get(w, 0), n)
    assert tree.match(query) == expected


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(0, 15))
def test_evict_bounds_the_size_and_forgets_least_recent_keys_first(inserts, bound):
    tree = PrefixTree()
    for key, w in inserts:
        tree.insert(key, w)
    last_key = {w: key for key, w in inserts}
    for w in WORKERS:
        before = tree.size(w)
        freed = tree.evict(w, bound)
        tree.check_invariants()
        assert tree.size(w) == max(0, before - freed) and tree.size(w) <= bound
        # the newest key of a worker that still fits survives whole: eviction goes oldest leaf first
        if w in last_key and len(last_key[w]) <= tree.size(w):
            assert tree.match(last_key[w]).get(w) == len(last_key[w])


@settings(max_examples=100, deadline=None)
@given(ops, st.sampled_from(WORKERS))
def test_remove_worker_forgets_only_that_worker(inserts, gone):
    tree = PrefixTree()
    for key, w in inserts:
        tree.insert(key, w)
    others = {w: tree.size(w) for w in WORKERS if w != gone}
    tree.remove_worker(gone)
    tree.check_invariants()
    assert tree.size(gone) == 0
    assert {w: tree.size(w) for w in others} == others
    for key, _ in inserts:
        assert gone not in tree.match(key)


def test_list_and_tuple_keys_are_the_same_key():
    tree = PrefixTree()
    tree.insert([1, 2, 3], "a")
    assert tree.match((1, 2, 9)) == {"a": 2} and tree.match([1, 2, 3, 4]) == {"a": 3}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(keys, st.dictionaries(st.sampled_from(WORKERS), st.integers(0, 60), min_size=1)),
                min_size=1, max_size=30))
def test_cache_aware_picks_an_offered_worker_and_the_least_loaded_when_imbalanced(requests):
    policy = CacheAwarePolicy(cache_threshold=0.5, balance_abs_threshold=8, balance_rel_threshold=1.5)
    for key, loads in requests:
        before = {w: n for w, n in policy.tree.match(key).items() if w in loads}
        d = policy.select(key, loads)
        assert d.worker in loads and d.matched == before.get(d.worker, 0)
        if is_imbalanced(loads, 8, 1.5):
            assert d.reason == "imbalanced" and loads[d.worker] == min(loads.values())
        elif d.reason == "cache_hit":  # the longest match, long enough
            assert d.matched == max(before.values()) and d.matched >= 0.5 * len(key)
        else:
            assert d.reason == "least_loaded" and loads[d.worker] == min(loads.values())
            assert not before or max(before.values()) < 0.5 * len(key)
        assert policy.tree.match(key)[d.worker] == len(key)  # recorded for the chosen worker


def test_size_counts_shared_prefix_once_per_worker():
    tree = PrefixTree()
    tree.insert("system prompt: question one", "a")
    tree.insert("system prompt: question two", "a")
    tree.insert("system prompt: other", "b")
    assert tree.size("a") == len("system prompt: question one") + len("two")
    assert tree.size("b") == len("system prompt: other")
    assert tree.match("system prompt: question three") == {"a": len("system prompt: question t"),
                                                             "b": len("system prompt: ")}


def test_cache_aware_keeps_a_prefix_group_on_one_worker_and_spreads_groups():
    policy = CacheAwarePolicy(cache_threshold=0.5)
    loads = {"w0": 0, "w1": 0}
    groups = {g: f"group {g} shared system prompt " * 4 for g in range(4)}
    chosen: dict[int, set[str]] = {g: set() for g in groups}
    for i in range(5):
        for g, prefix in groups.items():
            d = policy.select(f"{prefix} question {i}", loads)
            chosen[g].add(d.worker)
            assert d.reason == ("least_loaded" if i == 0 else "cache_hit")
    assert all(len(ws) == 1 for ws in chosen.values())
    # a new group goes to the worker with the smaller routed history, so groups alternate
    assert [next(iter(chosen[g])) for g in range(4)] == ["w0", "w1", "w0", "w1"]


def test_cache_aware_below_threshold_goes_to_least_loaded():
    policy = CacheAwarePolicy(cache_threshold=0.9)
    policy.select("abcdefghij", {"w0": 0, "w1": 0})        # w0 (tie, first)
    d = policy.select("abcdeXXXXX", {"w0": 3, "w1": 1})     # 50% match on w0 < 0.9
    assert (d.worker, d.reason, d.matched) == ("w1", "least_loaded", 0)


def test_cache_aware_imbalance_overrides_cache_hits():
    policy = CacheAwarePolicy(cache_threshold=0.5, balance_abs_threshold=4, balance_rel_threshold=1.5)
    policy.select("shared prefix 1", {"w0": 0, "w1": 0})
    assert policy.select("shared prefix 2", {"w0": 4, "w1": 0}).reason == "cache_hit"   # diff 4: not > 4
    d = policy.select("shared prefix 3", {"w0": 10, "w1": 2})
    assert (d.worker, d.reason) == ("w1", "imbalanced")
    # the imbalanced route is recorded too: w1 now also matches the group
    assert policy.tree.match("shared prefix 3")["w1"] == len("shared prefix 3")


def test_cache_aware_ignores_workers_that_are_not_offered():
    policy = CacheAwarePolicy()
    policy.select("long shared prefix", {"w0": 0, "w1": 0})
    d = policy.select("long shared prefix again", {"w1": 0})  # w0 is down or excluded on retry
    assert d.worker == "w1"


def test_cache_aware_bounds_the_tree_per_worker():
    policy = CacheAwarePolicy(max_tree_size=50)
    for i in range(20):
        policy.select(f"{i:03d}" + "x" * 20, {"w0": 0})
    assert policy.tree.size("w0") <= 50


def test_round_robin_cycles_over_offered_workers():
    policy = RoundRobinPolicy()
    picks = [policy.select("k", {"a": 5, "b": 0, "c": 9}).worker for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_helpers_and_factory():
    assert least_loaded({"a": 2, "b": 1, "c": 1}) == "b"
    assert least_loaded({"a": 1, "b": 1}, {"a": 10, "b": 3}) == "b"
    assert is_imbalanced({"a": 40, "b": 1}, 32, 1.0001)
    assert not is_imbalanced({"a": 30, "b": 1}, 32, 1.0001)
    assert not is_imbalanced({"a": 40}, 32, 1.0001)
    assert make_policy("round_robin").name == "round_robin"
    assert make_policy("cache_aware", cache_threshold=0.3).cache_threshold == 0.3
    with pytest.raises(ValueError, match="unknown routing policy"):
        make_policy("random")
    with pytest.raises(ValueError):
        CacheAwarePolicy(cache_threshold=1.5)
    with pytest.raises(ValueError):
        CacheAwarePolicy(balance_rel_threshold=0.5)


def _burst(groups: int, per_group: int, seed: int) -> list[tuple[int, tuple[int, ...]]]:
    """bench_serving's generated shared prefix, small: (group, token ids), shuffled as it sends them."""
    import random

    rng = random.Random(seed)
    out = []
    for g in range(groups):
        system = tuple(rng.randrange(100, 30000) for _ in range(64))
        out += [(g, system + tuple(rng.randrange(100, 30000) for _ in range(4))) for _ in range(per_group)]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("groups,seed", [(8, 0), (64, 1), (64, 2), (256, 3)])
def test_a_burst_of_groups_is_split_evenly_and_each_group_stays_on_one_worker(groups, seed):
    """Every request of the burst arrives before any finishes (rate inf): loads only grow."""
    policy = CacheAwarePolicy()
    loads = {"w0": 0, "w1": 0}
    by_group: dict[int, list] = {}
    for g, key in _burst(groups, 16, seed):
        d = policy.select(key, loads)
        loads[d.worker] += 1
        by_group.setdefault(g, []).append(d)
    assert abs(loads["w0"] - loads["w1"]) <= policy.balance_abs_threshold + 1
    for decisions in by_group.values():
        assert decisions[0].reason == "least_loaded"          # the group's first request: no match yet
        if all(d.reason != "imbalanced" for d in decisions):  # the rest follow it unless balance trips
            assert {d.worker for d in decisions} == {decisions[0].worker}
    split = sum(len({d.worker for d in ds}) > 1 for ds in by_group.values())
    assert split <= 1 + groups // 16  # the balance threshold trips rarely on a random arrival order
    # new groups alternate, so the workers hold about as many groups each
    first = [ds[0].worker for ds in by_group.values()]
    assert abs(first.count("w0") - first.count("w1")) <= max(2, groups // 8)
