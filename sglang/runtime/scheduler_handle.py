"""How the Engine talks to its scheduler, wherever it runs: the `SchedulerHandle` interface.

Two handles implement it: `ThreadScheduler` (here: ModelRunner + Scheduler in this process, the loop in a
thread) and `ProcessScheduler` (runtime/scheduler_process.py: the same built in a spawned child). The
Engine picks one in its constructor and never asks again which it has. Life of a handle:

    handle = ThreadScheduler(server_args, model, on_outputs)   # a process handle starts its child here
    info = handle.wait_ready(tokenizer)    # {"vocab_size", "context_len", "pool_size", ...}; raises init errors
    handle.submit(req); handle.abort(rid); handle.call("stats").result()
    handle.stop(); handle.join(timeout)    # graceful, then whatever it takes

`on_outputs(batch)` receives each scheduler step's outputs as ONE batch [(rid, out, finished), ...], from
the scheduler thread or the process handle's receiver thread; a plain request's outputs carry its new
text ids instead of text (detokenizer.TEXT_IDS_KEY: the engine's ClientText makes the text).
`build_scheduler` is the one recipe both handles build a scheduler with.
"""
from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Any, Callable, Optional, Protocol

from sglang.runtime import distributed
from sglang.runtime.model_runner import ModelRunner
from sglang.runtime.resolved_model import ResolvedModel
from sglang.runtime.scheduler.req import TokenizedRequest
from sglang.runtime.scheduler.scheduler import Scheduler, start_scheduler_thread
from sglang.runtime.server_args import ServerArgs

OutputBatch = list  # [(rid, response dict, finished), ...]
OutputsCallback = Callable[[OutputBatch], None]


class SchedulerHandle(Protocol):
    """What the Engine needs from a scheduler, in a thread of this process or in a child process."""

    kind: str  # "thread" | "process": only for messages
    runner: Optional[ModelRunner]  # the model runner when it lives in this process, else None
    constraints: Any  # constraint factory for validation at admission (None: constrained decoding is off)

    def wait_ready(self, tokenizer: Any) -> dict[str, Any]: ...

    def submit(self, req: TokenizedRequest) -> None: ...

    def abort(self, rid: str) -> None: ...

    def call(self, method: str, *args: Any) -> "Future[Any]": ...

    def stop(self) -> None: ...

    def join(self, timeout: float = 60.0) -> None: ...

    def is_alive(self) -> bool: ...


class StepOutputs:
    """A scheduler's outputs of one step (its `on_output`), handed on as ONE batch at the step's end
    (its `on_step_end`): one pipe message, one event-loop wake-up, instead of one per token."""

    def __init__(self, deliver: OutputsCallback) -> None:
        self.deliver = deliver
        self.batch: OutputBatch = []  # touched by the scheduler thread only

    def add(self, rid: str, out: dict, finished: bool) -> None:
        self.batch.append((rid, out, finished))

    def flush(self) -> None:
        if self.batch:
            batch, self.batch = self.batch, []
            self.deliver(batch)


def make_constraints(tokenizer: Any, vocab_size: int, server_args: ServerArgs) -> Any:
    """The constrained-decoding hook, when runtime/constrained provides it (see scheduler.py); built
    in the scheduler's process (requests' states) and in the engine's (validation at admission)."""
    try:
        from sglang.runtime import constrained
    except ImportError:
        return None
    make = getattr(constrained, "make_constraint_factory", None)
    return make(tokenizer, vocab_size, server_args) if make is not None else None


def build_scheduler(server_args: ServerArgs, model: ResolvedModel, tokenizer: Any,
                    deliver: OutputsCallback) -> tuple[Scheduler, Any, dict[str, Any]]:
    """ModelRunner + Scheduler (+ constraint factory), each step's outputs going to `deliver` as one
    batch. Returns the scheduler, its constraint factory and the start-up info the Engine validates with."""
    runner = ModelRunner(server_args, model=model)
    outputs = StepOutputs(deliver)
    # the engine makes plain requests' text where their outputs are consumed (detokenizer.ClientText)
    scheduler = Scheduler(server_args, runner, tokenizer, outputs.add, detokenize=False)
    scheduler.on_step_end = outputs.flush
    cfg = runner.model_config
    factory = make_constraints(tokenizer, int(cfg.vocab_size), server_args)
    scheduler.constraint_factory = factory
    info = {"model_path": runner.model_path, "vocab_size": int(cfg.vocab_size), "context_len": int(cfg.context_len),
            "pool_size": int(runner.token_kv_pool.size), "device": str(runner.device),
            "dtype": str(runner.dtype).removeprefix("torch."), "pid": os.getpid()}
    return scheduler, factory, info


class ThreadScheduler:
    """The scheduler in this process: `runner`/`scheduler` are the real objects, the loop runs in a thread.
    Built in `wait_ready`, on the Engine's tokenizer (one tokenizer per process)."""

    kind = "thread"

    def __init__(self, server_args: ServerArgs, model: ResolvedModel, on_outputs: OutputsCallback) -> None:
        self.server_args, self.model, self.on_outputs = server_args, model, on_outputs
        self.scheduler: Optional[Scheduler] = None
        self.runner: Optional[ModelRunner] = None
        self.constraints: Any = None
        self._thread = None

    def wait_ready(self, tokenizer: Any) -> dict[str, Any]:
        try:
            self.scheduler, self.constraints, info = build_scheduler(
                self.server_args, self.model, tokenizer, self.on_outputs)
        except BaseException:
            distributed.destroy_distributed()  # a tp > 1 runner may have joined the process group already
            raise
        self.runner = self.scheduler.runner
        self._thread = start_scheduler_thread(self.scheduler)
        return info

    def submit(self, req: TokenizedRequest) -> None:
        self.scheduler.submit(req)

    def abort(self, rid: str) -> None:
        self.scheduler.abort(rid)

    def call(self, method: str, *args: Any) -> "Future[Any]":
        return self.scheduler.call(method, *args)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float = 60.0) -> None:
        """After stop(): wait for the loop, release the tp workers, and drop the model and pools (so that
        another Engine in this process gets the memory once the caller lets go of them too)."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self.runner is not None:
            self.runner.shutdown()  # tp > 1: the workers' stop message
        self.scheduler = self.runner = self.constraints = None
