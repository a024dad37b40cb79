"""One batching executor per served program function: concurrent requests share its streams' batches.

`BatchingExecutor` is a `PlanExecutor` that never finishes: a thread of its own runs the executor's
scheduler (advance every runnable stream, send what became ready as one batched call, resume each
stream when its own response is back) over the items of every request admitted so far, and admits
new requests between steps. So the gens of two HTTP requests that arrive together (and of their forks
and selects) go to the engine in one call, as the items of one `sglang run` batch do.

Each request (`submit`) is a `ProgramJob`: its items, and a future resolved once every item is
answered. An item is answered when its main stream returns or one of its streams fails; then its
streams still running are dropped and its engine requests in flight aborted. `cancel` (the client went
away) and `close` (SIGTERM) answer items early the same way, with the error given. Every item runs
under the executor's `ProgramLimits`; its wall-time limit is enforced here, by the scheduler's clock.

`PerRequestExecutor` has the same interface but runs one fresh `PlanExecutor` per request (what the
program endpoints did before; kept as the benchmark's baseline arm).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from sglang.lang.sgl.errors import SglRuntimeError
from sglang.compiler.args import bind_args
from sglang.compiler.dispatch import Dispatcher
from sglang.compiler.executor import ItemRun, PlanExecutor
from sglang.compiler.limits import ProgramLimitError, ProgramLimits, WorkMeter
from sglang.compiler.plan import Plan

EventFn = Callable[[int, dict[str, Any]], None]
IDLE_TICK_S = 1.0  # the scheduler thread's longest sleep while it waits (deadlines are checked on waking)


class ProgramClosed(RuntimeError):
    """The executor is shutting down: the request was refused or its run aborted (the server answers 503)."""


@dataclass
class ProgramJob:
    """One request's items; `future` resolves to this job once every item is answered."""

    items: list[ItemRun]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    results: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    cancel_error: Optional[BaseException] = None


def backend_abort(backend: Any) -> Optional[Callable[[str], None]]:
    """The backend's way to abort an engine request by rid, if it has one."""
    abort = getattr(backend, "abort", None)
    return abort if callable(abort) else None


class BatchingExecutor(PlanExecutor):
    """Runs every request for one function of `plan` in one scheduler (see the module docstring)."""

    def __init__(self, plan: Plan, backend: Any, function: str, *, limits: Optional[ProgramLimits] = None,
                 observe: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        super().__init__(plan, backend, limits=limits)
        self._fplan = plan.function(function)
        self.function = self._fplan.name
        self._observe = observe
        self._abort = backend_abort(backend)
        self._lock = threading.Lock()
        self._inbox: list[ProgramJob] = []
        self._wake: concurrent.futures.Future = concurrent.futures.Future()
        self._closing: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._held = 0  # while > 0, submitted requests wait in the inbox (see hold)

    # ---------------- called from the server's threads
    def submit(self, rows: list[dict[str, Any]], on_event: Optional[EventFn] = None,
               stream_tokens: bool = False) -> ProgramJob:
        """Admit one request (its argument rows checked now: SglRuntimeError names a bad one, and
        ProgramLimitError a request of more items than max_streams)."""
        meter = WorkMeter(self.limits)  # shared: the limits bound the request, whatever its number of items
        meter.start_items(len(rows))
        items = [self.new_item(i, bind_args(self._fplan, row), on_event, stream_tokens, meter)
                 for i, row in enumerate(rows)]
        job = ProgramJob(items)
        job.future.set_running_or_notify_cancel()  # answered only by the scheduler (an awaiting task's cancel must not)
        with self._lock:
            if self._closing is not None:
                raise ProgramClosed("the server is shutting down and accepts no new programs")
            self._inbox.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"sgl-program-{self.function}", daemon=True)
                self._thread.start()
        self._poke()
        return job

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Admit the requests submitted inside this block together, when it ends (a burst's first steps
        then share their engine calls deterministically)."""
        with self._lock:
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
            self._poke()

    def cancel(self, job: ProgramJob, error: Optional[BaseException] = None) -> None:
        """Answer the job's items now with `error` (default: the client went away); no-op once answered."""
        if not job.future.done():
            job.cancel_error = error or SglRuntimeError("the client closed the connection")
            self._poke()

    def close(self, error: Optional[BaseException] = None, timeout: float = 30.0) -> None:
        """Refuse new requests, answer the running ones with `error`, abort their engine requests, and
        wait (at most `timeout`) for the scheduler thread to end."""
        with self._lock:
            self._closing = error or ProgramClosed("the server is shutting down; the program was aborted")
            thread = self._thread
        self._poke()
        if thread is not None:
            thread.join(timeout)

    def _poke(self) -> None:
        with self._lock:
            if not self._wake.done():
                self._wake.set_result(None)

    # ---------------- the scheduler thread
    def _take_inbox(self) -> tuple[list[ProgramJob], Optional[BaseException], concurrent.futures.Future]:
        with self._lock:
            if not self._held or self._closing is not None:
                jobs, self._inbox = self._inbox, []
            else:
                jobs = []
            if self._wake.done():
                self._wake = concurrent.futures.Future()
            return jobs, self._closing, self._wake

    def _run(self) -> None:
        live: list[ProgramJob] = []
        try:
            self._schedule_forever(live)
        except BaseException as exc:  # a bug here must not leave requests waiting forever
            with self._lock:
                self._closing = self._closing or ProgramClosed(f"the program executor failed: {exc!r}")
                live += self._inbox
                self._inbox = []
            for job in live:
                if not job.future.done():
                    job.future.set_exception(exc)
            raise

    def _schedule_forever(self, live: list[ProgramJob]) -> None:
        dispatcher = Dispatcher(self.backend, self.stats, observe=self._observe)
        ready: collections.deque = collections.deque()
        waiting: list = []
        # main tasks by id, holding them so that no other task can reuse the id while their item runs
        mains: dict[int, tuple[Any, ItemRun]] = {}
        try:
            while True:
                jobs, closing, wake = self._take_inbox()
                for job in jobs:
                    live.append(job)
                    for it in job.items:
                        task = self._main_task(it, self._fplan)
                        mains[id(task)] = (task, it)
                        ready.append((task, it, None))
                self._answer_early(live, closing)
                self._drop_closed(ready, waiting)
                blocked = [b for b in self._advance(ready, waiting, mains, None) if not self._dropped(b)]
                if blocked:
                    dispatcher.submit([(b, self._tag(b[1], b[2])) for b in blocked])
                live[:] = self._finish_jobs(live)
                for key in [k for k, (_, it) in mains.items() if it.closed]:
                    del mains[key]
                if closing is not None and not live and not dispatcher.busy:
                    return
                if ready:
                    continue
                if not dispatcher.busy and waiting:  # nothing in flight can release them
                    self._fail_stuck(waiting)
                    continue
                for (task, item, req), responses in self._wait(dispatcher, live, wake):
                    for r in req if isinstance(req, list) else [req]:
                        item.rids.discard(r.payload.get("rid"))
                    self._resume(task, item, req, responses, ready)
        finally:
            dispatcher.close()

    def _wait(self, dispatcher: Dispatcher, live: list[ProgramJob], wake: concurrent.futures.Future) -> list:
        """Responses back (or [] on a new request, a cancel, or the nearest deadline)."""
        now = time.monotonic()
        deadlines = [it.meter.deadline for job in live for it in job.items if not it.closed]
        timeout = max(0.0, min([IDLE_TICK_S] + [d - now for d in deadlines]))
        if dispatcher.busy:
            return dispatcher.wait(timeout=timeout, wake=wake)
        concurrent.futures.wait([wake], timeout=timeout)
        return []

    def _tag(self, item: ItemRun, req: Any) -> list[Any]:
        """The blocked stream's requests, each with a rid (so the item's engine work can be aborted)."""
        reqs = req if isinstance(req, list) else [req]
        for r in reqs:
            r.payload["rid"] = rid = uuid.uuid4().hex
            item.rids.add(rid)
        return reqs

    def _item_ended(self, item: ItemRun, bar: Any) -> None:
        self._close_item(item)

    def _close_item(self, item: ItemRun, error: Optional[BaseException] = None) -> None:
        if item.closed:
            return
        if error is not None and item.error is None:
            item.error = error
        item.closed = True
        item.main.done = True
        if item.rids and self._abort is not None:  # branches still running: their outputs are unused
            for rid in list(item.rids):
                try:
                    self._abort(rid)
                except Exception:  # an already-finished rid
                    pass

    def _answer_early(self, live: list[ProgramJob], closing: Optional[BaseException]) -> None:
        """Close the items of cancelled jobs, of every job when closing, and of runs past their deadline."""
        now = time.monotonic()
        for job in live:
            error = closing or job.cancel_error
            for it in job.items:
                if error is not None:
                    self._close_item(it, error)
                elif not it.closed and now > it.meter.deadline:
                    self._close_item(it, ProgramLimitError("max_seconds", f"the program ran longer than "
                                                                          f"{it.meter.limits.max_seconds:g} s"))

    @staticmethod
    def _dropped(entry: tuple) -> bool:
        task, item = entry[0], entry[1]
        if item.closed:
            task.close()
        return item.closed

    def _drop_closed(self, ready: collections.deque, waiting: list) -> None:
        keep = [e for e in ready if not self._dropped(e)]
        ready.clear()
        ready.extend(keep)
        waiting[:] = [w for w in waiting if not self._dropped(w)]

    def _fail_stuck(self, waiting: list) -> None:
        for task, item, _ in waiting:
            self._close_item(item, SglRuntimeError("a stream waits for a branch that never finishes"))
            task.close()
        waiting.clear()

    def _finish_jobs(self, live: list[ProgramJob]) -> list[ProgramJob]:
        still = []
        for job in live:
            if all(it.closed for it in job.items):
                job.results = [self.output(it) for it in job.items]
                job.future.set_result(job)
            else:
                still.append(job)
        return still


class PerRequestExecutor:
    """The baseline: a fresh PlanExecutor per request, in a thread of its own (no sharing between requests)."""

    def __init__(self, plan: Plan, backend: Any, function: str, *, limits: Optional[ProgramLimits] = None,
                 observe: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.plan, self.backend, self.function, self.limits = plan, backend, function, limits

    def submit(self, rows: list[dict[str, Any]], on_event: Optional[EventFn] = None,
               stream_tokens: bool = False) -> ProgramJob:
        ex = PlanExecutor(self.plan, self.backend, limits=self.limits)
        fplan = self.plan.function(self.function)
        job = ProgramJob([ex.new_item(i, bind_args(fplan, r), on_event) for i, r in enumerate(rows)])
        job.future.set_running_or_notify_cancel()

        def work() -> None:
            try:
                items = ex.execute(self.function, rows, on_event=on_event)
                job.items = items
                job.results = [ex.output(it) for it in items]
                job.future.set_result(job)
            except BaseException as e:  # reported to the waiting request
                job.future.set_exception(e)

        threading.Thread(target=work, daemon=True).start()
        return job

    def cancel(self, job: ProgramJob, error: Optional[BaseException] = None) -> None:
        pass  # the baseline cannot cancel (what the endpoints did before)

    def close(self, error: Optional[BaseException] = None, timeout: float = 30.0) -> None:
        pass
