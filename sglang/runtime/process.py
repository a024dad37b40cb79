"""Starting and stopping the runtime's child processes: the scheduler process and the tp worker ranks.

Every process the runtime spawns goes through these helpers (mini-sglang keeps the same in one launch
module), so the rules live in one place:
  - `spawn`: a spawn-context daemon process (CUDA cannot fork), started without re-running `__main__`,
    that ignores SIGINT and SIGTERM: Ctrl-C reaches the whole foreground process group and systemd's
    stop signals the whole cgroup, but shutting down (draining first) is the parent's decision;
  - `stop_process`: the one join → terminate → kill sequence (the kill is what ends an ignoring child);
  - `exit_with_parent`: orphan protection, run inside the child (it leaves when its parent dies).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import types
from typing import Any, Callable, Iterable, Optional

SPAWN = multiprocessing.get_context("spawn")
TERMINATE_WAIT_S = 5.0  # after terminate (SIGTERM) and after kill, how long to wait for the exit
PARENT_POLL_S = 1.0
ORPHAN_GRACE_S = 30.0  # a child told to stop gracefully gets this long before it leaves anyway


def spawn(target: Callable[..., Any], args: tuple, name: str) -> Any:
    """Start `target(*args)` in a spawned daemon process (no `__main__` re-run, see `_start_without_main`)
    that ignores SIGINT/SIGTERM (see the module docstring)."""
    proc = SPAWN.Process(target=_run_child, args=(target, args), name=name, daemon=True)
    _start_without_main(proc)
    return proc


def _run_child(target: Callable[..., Any], args: tuple) -> None:
    """The spawned child's entry: leave the stop signals to the parent, then run the target."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    target(*args)


def _start_without_main(proc: Any) -> None:
    """Start a spawn-context process without re-running the parent's `__main__` in the child.

    spawn normally imports the parent's main script in the child (as `__mp_main__`), which runs an
    unguarded script's top level again (an Engine there would spawn recursively) and costs the import of
    whatever it imports. The child needs nothing from it: its target and arguments are importable by
    name. So `__main__` is hidden from multiprocessing's preparation data while the child starts.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        proc.start()
    finally:
        sys.modules["__main__"] = main


def stop_process(proc: Any, timeout: Optional[float]) -> None:
    """Give a child `timeout` seconds (None: as long as it takes) to exit on its own, then terminate it,
    then kill it."""
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join(TERMINATE_WAIT_S)
    if proc.is_alive():
        proc.kill()
        proc.join(TERMINATE_WAIT_S)


def stop_processes(procs: Iterable[Any], timeout: Optional[float]) -> None:
    for p in procs:
        stop_process(p, timeout)


def exit_with_parent(name: str, before_exit: Optional[Callable[[], None]] = None,
                     also: Optional[threading.Event] = None) -> threading.Thread:
    """In a spawned child: a watchdog thread that ends this process when its parent dies (or `also` is set).

    The parent's death shows as its sentinel becoming ready (at once) or as a changed parent pid (polled).
    With `before_exit` (e.g. the scheduler's stop) the child first gets ORPHAN_GRACE_S to finish on its
    own, then leaves anyway (a step that hangs must not keep an orphan alive)."""
    parent = multiprocessing.parent_process()
    parent_pid = os.getppid()

    def orphaned() -> bool:
        return os.getppid() != parent_pid or (also is not None and also.is_set())

    def watch() -> None:
        while not orphaned():
            if parent is None:
                time.sleep(PARENT_POLL_S)
            elif multiprocessing.connection.wait([parent.sentinel], timeout=PARENT_POLL_S):
                break
        if before_exit is not None:
            before_exit()
            time.sleep(ORPHAN_GRACE_S)
        os._exit(1)

    t = threading.Thread(target=watch, name=f"{name}-watchdog", daemon=True)
    t.start()
    return t


LONG_GC_PAUSE_S = 0.05


def settle_gc(name: str, logger: Any = None) -> None:
    """Once a process is built (model, tokenizer, graphs): move everything alive to the permanent generation
    (`gc.freeze`), so that a full collection while serving no longer walks the model's and tokenizer's
    millions of objects; and log each collection that pauses the process for more than LONG_GC_PAUSE_S
    (the H200 forward timeline of run 8 showed 0.4 s gaps between decode steps with 1023 rows running)."""
    import gc
    import logging

    log = logger or logging.getLogger(__name__)
    gc.collect()
    gc.freeze()
    # a full collection walks every object alive (1024 streaming requests' state: 0.24-0.34 s pauses of the
    # HTTP process on the H200, which stalled the scheduler behind a full output pipe); collect the young
    # generation as usual, the old one far less often
    gen0, _, _ = gc.get_threshold()
    gc.set_threshold(max(gen0, 10_000), 50, 100)
    started: list[float] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pause = time.perf_counter() - started[0]
            if pause > LONG_GC_PAUSE_S:
                log.warning("%s: garbage collection of generation %d paused %.0f ms (%d collected)", name,
                            info.get("generation", -1), pause * 1e3, info.get("collected", 0))

    gc.callbacks.append(watch)
