"""The scheduler's inbox: the one piece of scheduler state that other threads touch.

Producers (the engine's caller threads, the scheduler process's receiver thread) `put` messages —
("req", TokenizedRequest), ("abort", rid), ("call", (fn, Future)), ("stop", None) — and the scheduler
thread takes them between forwards, oldest first (`take_all`), so every other part of the scheduler
is touched by one thread only and needs no lock.
"""
from __future__ import annotations

import queue
from typing import Any, Iterator

BLOCK_TIMEOUT_S = 0.5  # an idle scheduler still wakes up this often (to notice a stop flag)


class Inbox:
    def __init__(self) -> None:
        self._queue: "queue.Queue[tuple[str, Any]]" = queue.Queue()

    def put(self, kind: str, payload: Any = None) -> None:
        self._queue.put((kind, payload))

    def empty(self) -> bool:
        return self._queue.empty()

    def take_all(self, block: bool) -> Iterator[tuple[str, Any]]:
        """The queued messages, oldest first, including those put while earlier ones are handled;
        block: wait (up to BLOCK_TIMEOUT_S) for the first one."""
        try:
            msg = self._queue.get(timeout=BLOCK_TIMEOUT_S) if block else self._queue.get_nowait()
        except queue.Empty:
            return
        while True:
            yield msg
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return
