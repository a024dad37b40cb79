"""The batching executor behind program endpoints, on fake backends (no model): concurrent requests share
engine calls, a cancelled or expired run is answered at once with its engine requests aborted, and a
closing executor answers what runs and refuses what comes."""
from __future__ import annotations

import threading

import pytest
from compiler_fakes import FakeBackend

from sglang.compiler.batching import BatchingExecutor, ProgramClosed
from sglang.compiler.limits import ProgramLimitError, ProgramLimits
from sglang.compiler.lower import compile_source

PROGRAM = '''
def main(question: str = "hi", n: int = 2) {
    user { question }
    fork f[n] as i {
        assistant { gen a(max_tokens=4, temperature=0) }
    }
    return f[0].a
}
'''


class GatedBackend(FakeBackend):
    """Each call waits until `release` is set, or until one of its rids is aborted."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.sent: list[dict] = []  # payloads as they arrive (FakeBackend records a call only once it returns)
        self._aborts = threading.Condition()

    def _call(self, payload):
        self.sent.append(payload)
        self.entered.set()
        rids = payload.get("rid")
        rids = set(rids if isinstance(rids, list) else [rids])
        with self._aborts:
            self._aborts.wait_for(lambda: self.release.is_set() or rids & set(self.aborted))
        return super()._call(payload)

    def abort(self, rid: str) -> None:
        with self._aborts:
            super().abort(rid)
            self._aborts.notify_all()


@pytest.fixture
def plan(tmp_path):
    src = tmp_path / "p.sgl"
    src.write_text(PROGRAM)
    return compile_source(src)


def _prompts(call: dict) -> list[str]:
    return call["text"] if isinstance(call["text"], list) else [call["text"]]


def test_concurrent_requests_share_engine_calls(plan):
    backend = FakeBackend()
    ex = BatchingExecutor(plan, backend, "main", limits=ProgramLimits())
    try:
        with ex.hold():  # a burst of 8 requests, admitted together
            jobs = [ex.submit([{"question": f"question {i}", "n": 2}]) for i in range(8)]
        results = [j.future.result(30).results[0] for j in jobs]
    finally:
        ex.close()
    assert all(r["return"].startswith("g") for r in results)
    # every request's fork branches (8 x 2 gens) went out in one call: one wave for all requests
    gen_calls = [c for c in backend.calls if c["sampling_params"] != {"max_new_tokens": 0} and len(_prompts(c)) == 16]
    assert gen_calls, [len(_prompts(c)) for c in backend.calls]
    assert {p.split("USER:")[1].split("\n")[0] for p in _prompts(gen_calls[0])} == {f"question {i}" for i in range(8)}
    assert len(backend.calls) < 8  # per request, each would need at least one call of its own


def test_results_match_a_run_alone(plan):
    from sglang.compiler.executor import PlanExecutor

    alone = PlanExecutor(plan, FakeBackend()).run("main", {"question": "q", "n": 3})
    ex = BatchingExecutor(plan, FakeBackend(), "main", limits=ProgramLimits())
    try:
        with ex.hold():
            jobs = [ex.submit([{"question": "q", "n": 3}]), ex.submit([{"question": "other", "n": 1}])]
        shared = jobs[0].future.result(30).results[0]
    finally:
        ex.close()
    assert shared["return"] == alone["return"] and shared["variables"] == alone["variables"]


def test_cancel_aborts_the_runs_engine_requests(plan):
    backend = GatedBackend()
    ex = BatchingExecutor(plan, backend, "main", limits=ProgramLimits())
    try:
        job = ex.submit([{"n": 2}])
        assert backend.entered.wait(30)
        ex.cancel(job)  # the client went away
        done = job.future.result(30)
        assert "closed the connection" in str(done.items[0].error)
        sent = {r for c in backend.sent for r in (c["rid"] if isinstance(c["rid"], list) else [c["rid"]])}
        assert sent and sent <= set(backend.aborted)  # every engine request in flight was aborted
    finally:
        backend.release.set()
        ex.close()


def test_wall_time_limit_answers_the_run(plan):
    ex = BatchingExecutor(plan, GatedBackend(), "main", limits=ProgramLimits(max_seconds=0.0))
    try:
        job = ex.submit([{}])
        err = job.future.result(30).items[0].error
        assert isinstance(err, ProgramLimitError) and err.limit == "max_seconds"
    finally:
        ex.close()


def test_close_answers_running_runs_and_refuses_new_ones(plan):
    backend = GatedBackend()
    ex = BatchingExecutor(plan, backend, "main", limits=ProgramLimits())
    job = ex.submit([{"n": 2}])
    assert backend.entered.wait(30)
    ex.close(timeout=30)  # nothing released: only the aborts end the blocked calls
    assert isinstance(job.future.result(0).items[0].error, ProgramClosed)
    assert backend.aborted
    with pytest.raises(ProgramClosed):
        ex.submit([{}])


class RefusingBackend(FakeBackend):
    """Refuses (ValueError, as the engine does for a prompt too long) every prompt that holds 'long'."""

    def _call(self, payload):
        texts = payload["text"] if isinstance(payload["text"], list) else [payload["text"]]
        if any("long" in t for t in texts):
            raise ValueError("text: the prompt has 9000 tokens, the context length is 2048")
        return super()._call(payload)


def test_an_engine_refusal_fails_only_the_request_that_caused_it(plan):
    backend = RefusingBackend()
    ex = BatchingExecutor(plan, backend, "main", limits=ProgramLimits())
    try:
        with ex.hold():  # both in the same engine calls
            bad, good = ex.submit([{"question": "long", "n": 2}]), ex.submit([{"question": "short", "n": 2}])
        bad_item = bad.future.result(30).items[0]
        good_res = good.future.result(30).results[0]
    finally:
        ex.close()
    assert isinstance(bad_item.error, ValueError) and "context length" in str(bad_item.error)
    assert good_res["return"].startswith("g")
