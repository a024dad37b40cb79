"""CudaGraphRunner pieces that do not need a GPU: the captured batch sizes and the refusal of backends
that cannot be captured (graph capture/replay itself runs on the GPU machine: benchmarks/check_kernels.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sglang.runtime.cuda_graph_runner import CudaGraphRunner, capture_batch_sizes


def test_capture_batch_sizes_cover_up_to_max():
    sizes = capture_batch_sizes(160)
    assert sizes[0] == 1 and sizes[-1] == 160
    assert sizes == sorted(set(sizes))
    # every batch size up to the max pads to a captured one at most ~1.5x larger
    import bisect

    for bs in range(1, 161):
        padded = sizes[bisect.bisect_left(sizes, bs)]
        assert bs <= padded <= max(bs + 1, int(bs * 1.5))


def test_capture_batch_sizes_odd_max_is_included():
    assert capture_batch_sizes(5) == [1, 2, 3, 4, 5]
    assert capture_batch_sizes(1) == [1]
    with pytest.raises(ValueError, match="max batch size"):
        capture_batch_sizes(0)


def test_runner_refuses_backend_without_graph_support():
    class NoGraphs:
        supports_cuda_graph = False

    mr = SimpleNamespace(attn_backend=NoGraphs())
    with pytest.raises(ValueError, match="does not support CUDA graphs"):
        CudaGraphRunner(mr)


def test_capture_sizes_reach_thousands_of_rows_with_bounded_padding():
    """Small models decode thousands of rows: the captured sizes go that far, padding a batch at most
    ~25 % above 512 rows, and a default-sized graph max follows max_running_requests."""
    import bisect

    from sglang.runtime.server_args import MAX_GRAPH_BS, ServerArgs, default_cuda_graph_max_bs

    sizes = capture_batch_sizes(3000)
    assert sizes[-1] == 3000 and sizes == sorted(set(sizes))
    for bs in range(513, 3001, 7):
        assert sizes[bisect.bisect_left(sizes, bs)] <= bs * 1.25 + 1, bs
    assert default_cuda_graph_max_bs(ServerArgs(), 3000) == 3000
    assert default_cuda_graph_max_bs(ServerArgs(), 10 ** 6) == MAX_GRAPH_BS
    assert default_cuda_graph_max_bs(ServerArgs(cuda_graph_max_bs=64), 3000) == 64


def test_cascade_batches_replay_the_cascade_graph_only_when_their_grouping_fits():
    """With cascade graphs, a grouped decode batch replays the cascade graph of its padded size when the
    backend says the grouping fits, else the plain graph (its groups dropped: the same attention, prefix
    read per row); without them a grouped batch runs eagerly (can_run is False)."""
    from sglang.runtime.forward_batch import ForwardMode, PrefixGroups

    class Backend:
        def needs_eager(self, batch):
            return batch.prefix_groups is not None

        def cascade_graph_fits(self, groups, bs):
            return len(groups.shared_lens) <= bs // 4

    runner = CudaGraphRunner.__new__(CudaGraphRunner)
    runner.backend, runner.max_bs, runner.cascade = Backend(), 16, True
    runner.graphs = {(4, False): "g", (16, False): "g", (16, True): "g"}
    few = PrefixGroups(rows=[0, 1, 2, 3], indptr=[0, 2, 4], shared_lens=[64, 64])
    many = PrefixGroups(rows=list(range(10)), indptr=[0, 2, 4, 6, 8, 10], shared_lens=[64] * 5)
    batch = SimpleNamespace(mode=ForwardMode.DECODE, batch_size=12, prefix_groups=few)
    assert runner.can_run(batch) and runner._variant(batch, 16)
    batch.prefix_groups = many
    assert runner.can_run(batch) and not runner._variant(batch, 16)
    batch.prefix_groups, batch.batch_size = few, 4  # no cascade graph captured at this size
    assert not runner._variant(batch, 4)
    runner.cascade = False
    assert not runner.can_run(batch)
    batch.prefix_groups = None
    assert runner.can_run(batch) and not runner._variant(batch, 4)
