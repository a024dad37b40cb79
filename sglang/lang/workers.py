"""A shared pool of daemon threads for the interpreter: program bodies of `run_batch` and the op queues of
program states (one `StreamExecutor` drain at a time per executor, any number of executors at once).

Why not a thread per executor (SGLang 0.2.10's design, and ours before): `Thread.start()` blocks its caller
until the new thread holds the GIL. Under a batch of 100+ program threads that is milliseconds per start, and
a fork started one thread per branch in the program thread, so the last branch's request went out only after
n such waits; a worker that exited while its program read a value cost another start on the next op. Here a
submit is a queue put that wakes an idle thread (a thread finished with one executor's ops takes the next
executor's), and a thread starts only when none is idle. Threads idle for `IDLE_S` exit, so a finished batch
leaves none behind, while consecutive phases and runs of a batch reuse them.
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from typing import Callable

logger = logging.getLogger(__name__)

# how long an idle thread waits for work before it exits (long enough to carry a batch from one phase or
# run to the next, short enough that nothing stays parked long after the last program)
IDLE_S = 2.0


class WorkerPool:
    """Runs submitted callables on reused daemon threads, as many at once as are submitted (no bound: a
    drain blocks on the backend, and queueing it behind others would serialize independent programs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ids = itertools.count()
        self._reset()
        # a forked child has none of the parent's threads: counting them as idle would strand its tasks
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Condition()  # notified whenever the counts below change
        self._idle = 0  # threads waiting for a task that no submit has claimed yet
        self._threads = 0

    @property
    def threads(self) -> int:
        """Threads alive now (busy or idle)."""
        with self._lock:
            return self._threads

    @property
    def idle(self) -> int:
        """Threads waiting for work that no submit has claimed."""
        with self._lock:
            return self._idle

    def wait_for(self, counts: Callable[[int, int], bool], timeout: float) -> bool:
        """Block until `counts(threads, idle)` holds (or `timeout` s passed); whether it holds."""
        with self._lock:
            return self._lock.wait_for(lambda: counts(self._threads, self._idle), timeout)

    def submit(self, fn: Callable[[], None]) -> None:
        """Run `fn()` soon on a pool thread (its exceptions are logged). RuntimeError only when no thread can
        be started and none is alive to take the task later."""
        with self._lock:
            start = self._idle == 0
            if start:
                self._threads += 1
            else:
                self._idle -= 1  # that waiting thread (or another one) takes this task
        self._tasks.put(fn)
        if start:
            try:
                threading.Thread(target=self._run, name=f"{self.name}-{next(self._ids)}", daemon=True).start()
            except RuntimeError:  # no thread can be started now (a resource limit)
                with self._lock:
                    self._threads -= 1
                    alive = self._threads
                    self._lock.notify_all()
                if not alive:  # nobody would ever take the task: say so (a running thread takes it when done)
                    raise

    def run_parallel(self, workers: int, body: Callable[[], None]) -> None:
        """Run `body()` on `workers` pool threads at once and return when all have returned (re-raising the
        first exception). They are launched as a tree, each launched body first launching up to two more:
        on a cold pool the thread starts (each blocking its starter until the new thread holds the GIL)
        then overlap instead of queueing one after another in the caller."""
        lock = threading.Lock()
        launched, finished = 1, 0
        errors: list[BaseException] = []
        all_done = threading.Event()

        def node() -> None:
            nonlocal launched, finished
            try:
                for _ in range(2):
                    with lock:
                        more = launched < workers
                        launched += more
                    if more:
                        self.submit(node)
                body()
            except BaseException as exc:  # handed to the caller
                errors.append(exc)
            finally:
                with lock:
                    finished += 1
                    last = finished == workers
                if last:
                    all_done.set()

        self.submit(node)
        all_done.wait()
        if errors:
            raise errors[0]

    def _run(self) -> None:
        while True:
            try:
                fn = self._tasks.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle == 0:  # every waiting thread is claimed by a submit whose task is on its way
                        continue
                    self._idle -= 1
                    self._threads -= 1
                    self._lock.notify_all()
                    return
            try:
                fn()
            except Exception:  # a task reports its own errors; this only keeps the thread alive
                logger.exception("%s: a task raised", self.name)
            del fn  # drop the task (and what it holds) before waiting for the next one
            with self._lock:
                self._idle += 1
                self._lock.notify_all()


# the interpreter's one pool (programs and their op drains)
POOL = WorkerPool("sgl-ops")
