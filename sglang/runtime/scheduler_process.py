"""The scheduler in its own process (SGLang's layout: tokenizer/HTTP process + scheduler process).

In one process the HTTP event loop and the scheduler thread fight for one GIL; here the parent keeps
tokenization, validation and HTTP, and a spawned child (CUDA cannot fork) owns the ModelRunner, the
Scheduler and its constraint factory, built by scheduler_handle.build_scheduler as in-process.
`ProcessScheduler` (parent side) is a `SchedulerHandle` (runtime/scheduler_handle.py), like the in-process
`ThreadScheduler`. The child is started and stopped by runtime/process.py. One duplex pipe carries everything:

    parent → child: ("req", TokenizedRequest) | ("abort", rid) | ("call", (id, method, args)) | ("stop", None)
    child → parent: ("ready", info) | ("error", exc, traceback) | ("out", [(rid, out, finished), ...])
                    | ("result", id, ok, value | exc)

Outputs go as ONE message per scheduler step (Scheduler.on_step_end), not one per token. The child
exits when told to stop, when the pipe reaches EOF, or when its parent dies (process.exit_with_parent).
"""
from __future__ import annotations

import itertools
import logging
import pickle
import sys
import threading
import traceback
from concurrent.futures import Future
from typing import Any

from sglang.runtime.process import SPAWN, exit_with_parent, settle_gc, spawn, stop_process
from sglang.runtime.resolved_model import ResolvedModel
from sglang.runtime.scheduler.req import TokenizedRequest
from sglang.runtime.scheduler_handle import OutputsCallback, build_scheduler, make_constraints
from sglang.runtime.server_args import ServerArgs
from sglang.runtime.tokenizer import get_tokenizer

logger = logging.getLogger(__name__)

# A process whose scheduler thread shares the GIL with another busy thread (the HTTP loop, or the child's
# pipe receiver) would otherwise wait up to the default 5 ms switch interval each time it wants the GIL
# back (e.g. after every CUDA sync); 0.5 ms bounds that wait at a small cost in switching overhead.
SWITCH_INTERVAL_S = 0.0005


class SchedulerProcessDied(RuntimeError):
    pass


class ProcessScheduler:
    """Parent side of the scheduler process (a SchedulerHandle). `on_outputs(batch)` runs in a receiver thread.

    The constructor starts the child and returns at once (the caller may load its tokenizer meanwhile);
    `wait_ready(tokenizer)` returns the child's init info or raises its init error (same type and message),
    then builds this process's constraint factory (validation at admission) on the caller's tokenizer.
    """

    kind = "process"
    runner = None  # the model lives in the child

    def __init__(self, server_args: ServerArgs, model: ResolvedModel, on_outputs: OutputsCallback) -> None:
        self._server_args = server_args
        self._conn, child_conn = SPAWN.Pipe(duplex=True)
        self._on_outputs = on_outputs
        self._send_lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._ids = itertools.count()
        self.constraints: Any = None
        self.proc = spawn(run_scheduler_process, (server_args, model, child_conn, logging.getLogger().getEffectiveLevel()),
                          name="sglang-scheduler")
        child_conn.close()  # only the child holds its end now: its death is our EOF
        self.info: dict[str, Any] = {}
        self._receiver = threading.Thread(target=self._receive, name="sglang-scheduler-receiver", daemon=True)

    # -- startup ----------------------------------------------------------------------------------
    def wait_ready(self, tokenizer: Any) -> dict[str, Any]:
        try:
            self.info = self._wait_ready()
        except BaseException:
            stop_process(self.proc, 0)
            self._conn.close()
            raise
        self._receiver.start()
        self.constraints = make_constraints(tokenizer, int(self.info["vocab_size"]), self._server_args)
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
        stop_process(self.proc, timeout if self.info else 0)  # still booting: nothing to finish gracefully
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


# ------------------------------------------------------------------------------------------- child

def _portable(exc: BaseException) -> BaseException:
    """exc itself when it survives pickling (the parent then raises the same type and message)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def run_scheduler_process(server_args: ServerArgs, model: ResolvedModel, conn: Any,
                          log_level: int = logging.WARNING) -> None:
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
        tokenizer = get_tokenizer(server_args.tokenizer_path or model.path)
        scheduler, factory, info = build_scheduler(server_args, model, tokenizer, lambda batch: send(("out", batch)))
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

    settle_gc("scheduler process", logger)
    threading.Thread(target=receive, name="sglang-scheduler-inbox", daemon=True).start()
    # the parent died (or its pipe broke): stop, and leave anyway if a step hangs
    exit_with_parent("sglang-scheduler", before_exit=scheduler.stop, also=broken)
    send(("ready", info))
    try:
        scheduler.run_forever()
    finally:
        scheduler.runner.shutdown()  # tp > 1: the workers' stop message
        conn.close()
