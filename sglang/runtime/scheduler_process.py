"""The scheduler in its own process (SGLang's layout: tokenizer/HTTP process + scheduler process).

In one process the HTTP event loop and the scheduler thread fight for one GIL; here the parent keeps
tokenization, validation and HTTP, and a spawned child (CUDA cannot fork) owns the ModelRunner, the
Scheduler and its constraint factory. `SchedulerClient` (parent side) has the surface the Engine uses
from an in-process `Scheduler`: `submit`, `abort`, `call(method_name, *args) -> Future`, `stop`, plus
`is_alive()`/`join()`. One duplex pipe carries everything:

    parent → child: ("req", TokenizedRequest) | ("abort", rid) | ("call", (id, method, args)) | ("stop", None)
    child → parent: ("ready", info) | ("error", exc, traceback) | ("out", [(rid, out, finished), ...])
                    | ("result", id, ok, value | exc)

Outputs go as ONE message per scheduler step (Scheduler.on_step_end), not one per token. The child
exits when told to stop, when the pipe reaches EOF (the parent died), or when its parent pid changes.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import pickle
import sys
import threading
import time
import traceback
import types
from concurrent.futures import Future
from typing import Any, Callable

from sglang.runtime.scheduler.req import TokenizedRequest
from sglang.runtime.server_args import ServerArgs

logger = logging.getLogger(__name__)

OutputBatch = list  # [(rid, response dict, finished), ...]

# A process whose scheduler thread shares the GIL with another busy thread (the HTTP loop, or the child's
# pipe receiver) would otherwise wait up to the default 5 ms switch interval each time it wants the GIL
# back (e.g. after every CUDA sync); 0.5 ms bounds that wait at a small cost in switching overhead.
SWITCH_INTERVAL_S = 0.0005


class SchedulerProcessDied(RuntimeError):
    pass


class SchedulerClient:
    """Parent side of the scheduler process. `on_outputs(batch)` runs in a receiver thread.

    The constructor starts the child and returns at once (the caller may load its tokenizer meanwhile);
    `wait_ready()` returns the child's init info or raises its init error (same type and message).
    """

    def __init__(self, server_args: ServerArgs, on_outputs: Callable[[OutputBatch], None]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._on_outputs = on_outputs
        self._send_lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._ids = itertools.count()
        self._closed = False
        self.proc = ctx.Process(target=run_scheduler_process, args=(server_args, child_conn, os.getpid(), logging.getLogger().getEffectiveLevel()),
                                name="sglang-scheduler", daemon=True)
        _start_without_main(self.proc)
        child_conn.close()  # only the child holds its end now: its death is our EOF
        self.info: dict[str, Any] = {}
        self._receiver = threading.Thread(target=self._receive, name="sglang-scheduler-receiver", daemon=True)

    # -- startup ----------------------------------------------------------------------------------
    def wait_ready(self) -> dict[str, Any]:
        try:
            self.info = self._wait_ready()
        except BaseException:
            end_process(self.proc, 0)
            self._conn.close()
            raise
        self._receiver.start()
        return self.info

    def _wait_ready(self) -> dict[str, Any]:
        # no timeout: loading a large model takes as long as it takes; a dead child is noticed at once
        while True:
            try:
                if self._conn.poll(0.1):
                    msg = self._conn.recv()
                    if msg[0] == "ready":
                        return msg[1]
                    if msg[0] == "error":
                        _, exc, tb = msg
                        self.proc.join(timeout=10)
                        if hasattr(exc, "add_note"):  # Python >= 3.11
                            exc.add_note(f"(raised in the scheduler process)\n{tb}")
                        raise exc
                    continue
            except EOFError:
                pass
            if not self.proc.is_alive():
                self.proc.join(timeout=1)
                raise SchedulerProcessDied(f"the scheduler process exited (code {self.proc.exitcode}) "
                                           "before it was ready; see its log above")

    # -- the Scheduler surface --------------------------------------------------------------------
    def _send(self, msg: tuple) -> None:
        with self._send_lock:
            self._conn.send(msg)

    def submit(self, req: TokenizedRequest) -> None:
        try:
            self._send(("req", req))
        except (OSError, ValueError) as exc:  # closed pipe: the waiter sees is_alive() False
            raise SchedulerProcessDied(f"the scheduler process is gone: {exc}") from None

    def abort(self, rid: str) -> None:
        try:
            self._send(("abort", rid))
        except (OSError, ValueError):
            pass  # nothing left to abort

    def call(self, method: str, *args: Any) -> "Future[Any]":
        """Run `Scheduler.<method>(*args)` in the scheduler thread of the child."""
        fut: Future = Future()
        cid = next(self._ids)
        self._futures[cid] = fut
        try:
            self._send(("call", (cid, method, args)))
        except (OSError, ValueError) as exc:
            self._futures.pop(cid, None)
            fut.set_exception(SchedulerProcessDied(f"the scheduler process is gone: {exc}"))
        if not self.is_alive():  # the receiver is gone: nobody would ever resolve it
            self._fail_futures()
        return fut

    def stop(self) -> None:
        try:
            self._send(("stop", None))
        except (OSError, ValueError):
            pass

    def is_alive(self) -> bool:
        """True while outputs can still arrive (the receiver reads until the child's EOF)."""
        return self._receiver.is_alive()

    def join(self, timeout: float = 60.0) -> None:
        """After stop(): wait for the child to exit (killing it if it does not), then for the receiver."""
        end_process(self.proc, timeout if self.info else 0)  # still booting: nothing to finish gracefully
        if self._receiver.is_alive():
            self._receiver.join(timeout=10)
        self._conn.close()


    # -- receiving --------------------------------------------------------------------------------
    def _receive(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            try:
                if msg[0] == "out":
                    self._on_outputs(msg[1])
                elif msg[0] == "result":
                    _, cid, ok, value = msg
                    fut = self._futures.pop(cid, None)
                    if fut is not None:
                        (fut.set_result if ok else fut.set_exception)(value)
            except Exception:  # a bad callback must not stop delivery to everyone else
                logger.exception("scheduler client: handling %r failed", msg[0])
        self._fail_futures()

    def _fail_futures(self) -> None:
        for cid in list(self._futures):
            fut = self._futures.pop(cid, None)
            if fut is not None and not fut.done():
                fut.set_exception(SchedulerProcessDied("the scheduler process exited"))


def end_process(proc: Any, timeout: float) -> None:
    """Give a child `timeout` seconds to exit on its own, then terminate it, then kill it."""
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


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


# ------------------------------------------------------------------------------------------- child

def _portable(exc: BaseException) -> BaseException:
    """exc itself when it survives pickling (the parent then raises the same type and message)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class StepOutputs:
    """A scheduler's outputs of one step (its `on_output`), handed on as ONE batch at the step's end
    (its `on_step_end`): one pipe message, one event-loop wake-up, instead of one per token."""

    def __init__(self, deliver: Callable[[OutputBatch], None]) -> None:
        self.deliver = deliver
        self.batch: OutputBatch = []  # touched by the scheduler thread only

    def add(self, rid: str, out: dict, finished: bool) -> None:
        self.batch.append((rid, out, finished))

    def flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            self.deliver(batch)


def build_scheduler(server_args: ServerArgs, deliver: Callable[[OutputBatch], None]) -> tuple[Any, Any, dict]:
    """ModelRunner + tokenizer + Scheduler (+ constraint factory), each step's outputs going to
    `deliver` as one batch; the in-process Engine and the scheduler process both build it here."""
    from sglang.runtime.engine import _constraint_factory
    from sglang.runtime.model_runner import ModelRunner
    from sglang.runtime.scheduler.scheduler import Scheduler
    from sglang.runtime.tokenizer import get_tokenizer

    runner = ModelRunner(server_args)
    tokenizer = get_tokenizer(server_args.tokenizer_path or runner.model_path)
    outputs = StepOutputs(deliver)
    scheduler = Scheduler(server_args, runner, tokenizer, outputs.add)
    scheduler.on_step_end = outputs.flush
    cfg = runner.model_config
    factory = _constraint_factory(tokenizer, int(cfg.vocab_size), server_args)
    scheduler.constraint_factory = factory
    info = {"model_path": runner.model_path, "vocab_size": int(cfg.vocab_size), "context_len": int(cfg.context_len),
            "pool_size": int(runner.token_kv_pool.size), "device": str(runner.device),
            "dtype": str(runner.dtype).removeprefix("torch."), "pid": os.getpid()}
    return scheduler, factory, info


def run_scheduler_process(server_args: ServerArgs, conn: Any, parent_pid: int, log_level: int = logging.WARNING) -> None:
    """Entry point of the spawned child; logs as verbosely as the parent's root logger."""
    logging.basicConfig(level=log_level, format="[%(asctime)s %(name)s] %(message)s")
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # see SWITCH_INTERVAL_S: the receiver thread shares the GIL
    send_lock = threading.Lock()
    broken = threading.Event()

    def send(msg: tuple) -> None:
        if broken.is_set():
            return
        try:
            with send_lock:
                conn.send(msg)
        except (OSError, ValueError):  # the parent is gone: stop serving
            broken.set()

    try:
        scheduler, factory, info = build_scheduler(server_args, lambda batch: send(("out", batch)))
    except BaseException as exc:
        send(("error", _portable(exc), traceback.format_exc()))
        conn.close()
        sys.exit(1)

    def reply(cid: int, fut: Future) -> None:
        exc = fut.exception()
        send(("result", cid, exc is None, fut.result() if exc is None else _portable(exc)))

    def receive() -> None:
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                break
            if kind == "req":
                if factory is not None:
                    try:  # compile (or load) the constraint here, not in the scheduler thread
                        factory.prepare(payload.sampling_params)
                    except Exception:
                        pass  # the parent validated it already; the scheduler rejects it if it still fails
                scheduler.submit(payload)
            elif kind == "abort":
                scheduler.abort(payload)
            elif kind == "call":
                cid, method, args = payload
                scheduler.call(method, *args).add_done_callback(lambda f, cid=cid: reply(cid, f))
            elif kind == "stop":
                break
        scheduler.stop()

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid or broken.is_set():
                scheduler.stop()
                time.sleep(30.0)  # a graceful stop failed (a step hangs?): leave anyway
                os._exit(1)

    threading.Thread(target=receive, name="sglang-scheduler-inbox", daemon=True).start()
    threading.Thread(target=watchdog, name="sglang-scheduler-watchdog", daemon=True).start()
    send(("ready", info))
    try:
        scheduler.run_forever()
    finally:
        scheduler.runner.shutdown()  # tp > 1: the workers' stop message
        conn.close()
