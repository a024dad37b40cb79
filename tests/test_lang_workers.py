"""The interpreter's concurrency (lang/workers.py and its users): a fork's branches and a batch's programs are
in flight against the backend at the same time, at most `num_threads` programs at once; the shared pool
reuses idle threads, lets them go when idle, and hands a task's failure to whoever waits for it.

Concurrency is shown with a backend that blocks each request until N of them have arrived (a barrier with a
generous bound): serialized requests would never reach N and the program would fail. No timing assertions."""
from __future__ import annotations

import threading

import pytest
from lang_fakes import ScriptedBackend

import sglang as sgl
from sglang.lang import workers
from sglang.lang.workers import WorkerPool

BOUND_S = 30.0  # a barrier that never fills breaks after this: the test then fails, it does not hang


class GatheringBackend(ScriptedBackend):
    """Each gen blocks until `parties` gens are in flight together; records the most ever in flight."""

    def __init__(self, parties: int) -> None:
        super().__init__(reply=self._reply)
        self.barrier = threading.Barrier(parties, timeout=BOUND_S)
        self.in_flight = self.most_in_flight = 0
        self.count_lock = threading.Lock()

    def _reply(self, prompt: str, sp: dict) -> str:
        with self.count_lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.barrier.wait()
        finally:
            with self.count_lock:
                self.in_flight -= 1
        return f"<{len(prompt)}>"


def test_a_forks_branches_are_in_flight_together():
    backend = GatheringBackend(parties=6)

    @sgl.function
    def judge(s):
        s += "Answer to judge."
        forks = s.fork(6)
        for i, f in enumerate(forks):
            f += f" dim {i}:" + sgl.gen("j", max_tokens=8)
        return [f["j"] for f in forks]

    state = judge.run(backend=backend, compiled=False)
    assert state.error() is None, state.error()
    assert state.ret_value == [f"<{len(f'Answer to judge. dim {i}:')}>" for i in range(6)]
    assert backend.most_in_flight == 6


def test_the_branches_of_every_program_of_a_batch_are_in_flight_together():
    items, branches = 4, 3
    backend = GatheringBackend(parties=items * branches)

    @sgl.function
    def sot(s, i):
        s += f"Q{i}."
        forks = s.fork(branches)
        for j, f in enumerate(forks):
            f += f" p{j}:" + sgl.gen("p", max_tokens=8)
        return "|".join(f["p"] for f in forks)

    states = sot.run_batch([{"i": i} for i in range(items)], backend=backend, num_threads=items, compiled=False)
    assert [st.error() for st in states] == [None] * items
    assert states[2].ret_value == "|".join(f"<{len(f'Q2. p{j}:')}>" for j in range(branches))
    assert backend.most_in_flight == items * branches


def test_fork_precaches_the_prefix_after_the_parents_last_op_and_before_any_branch():
    backend = ScriptedBackend()

    @sgl.function
    def prog(s):
        s += "Q:" + sgl.gen("a", max_tokens=4) + "!"
        forks = s.fork(2)
        for f in forks:
            f += sgl.gen("b", max_tokens=4)
        return [f["b"] for f in forks]

    prog.run(backend=backend, compiled=False)
    texts = [(r["text"], r["sampling_params"]["max_new_tokens"]) for r in backend.requests]
    assert texts == [("Q:", 4), ("Q:<2>!", 0), ("Q:<2>!", 4), ("Q:<2>!", 4)]


def test_run_batch_runs_num_threads_programs_at_once_and_no_more():
    backend = GatheringBackend(parties=3)

    @sgl.function
    def one(s, i):
        s += f"item {i}:" + sgl.gen("x", max_tokens=8)

    states = one.run_batch([{"i": i} for i in range(9)], backend=backend, num_threads=3, compiled=False)
    assert [st.error() for st in states] == [None] * 9
    assert [st["x"] for st in states] == [f"<{len(f'item {i}:')}>" for i in range(9)]  # in input order
    assert backend.most_in_flight == 3


def test_the_pool_reuses_an_idle_thread():
    pool = WorkerPool("test-reuse")
    names = []
    for _ in range(5):
        done = threading.Event()
        pool.submit(lambda: (names.append(threading.current_thread().name), done.set()))
        assert done.wait(BOUND_S)
        assert pool.wait_for(lambda threads, idle: idle == 1, BOUND_S)  # back to waiting for work
    assert len(set(names)) == 1 and pool.threads == 1


def test_pool_threads_exit_once_idle(monkeypatch):
    monkeypatch.setattr(workers, "IDLE_S", 0.05)
    pool = WorkerPool("test-idle")
    gate = threading.Barrier(3, timeout=BOUND_S)
    pool.run_parallel(3, lambda: gate.wait() and None)  # three bodies at once: three threads
    assert pool.threads == 3
    assert pool.wait_for(lambda threads, idle: threads == 0, BOUND_S)


def test_run_parallel_runs_every_body_and_reraises_a_failure():
    pool = WorkerPool("test-parallel")
    ran, lock = [], threading.Lock()
    gate = threading.Barrier(7, timeout=BOUND_S)  # all seven bodies at once, launched as a tree

    def body() -> None:
        gate.wait()
        with lock:
            ran.append(1)
            if len(ran) == 7:
                raise ValueError("the last body failed")

    with pytest.raises(ValueError, match="the last body failed"):
        pool.run_parallel(7, body)
    assert len(ran) == 7


def test_a_failing_task_leaves_its_thread_working():
    pool = WorkerPool("test-failing")
    pool.submit(lambda: 1 / 0)
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(BOUND_S)


def test_a_forked_child_process_starts_its_own_threads():
    import multiprocessing
    import os

    pool = WorkerPool("test-fork")
    gate = threading.Barrier(2, timeout=BOUND_S)
    pool.run_parallel(2, lambda: gate.wait() and None)  # two threads, idle now

    def child(conn) -> None:  # the parent's idle threads do not exist here
        done = threading.Event()
        pool.submit(done.set)
        conn.send(done.wait(BOUND_S))

    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=child, args=(child_end,))
    proc.start()
    try:
        assert parent_end.poll(BOUND_S * 2) and parent_end.recv() is True
    finally:
        proc.join(BOUND_S)
        if proc.is_alive():
            os.kill(proc.pid, 9)
