"""The eager interpreter: program state (`s`) and its stream executor.

Each `ProgramState` owns a `StreamExecutor` whose ops run in order against the backend on a thread of
the shared pool (lang/workers.py), so `s += sgl.gen(...)` returns at once and Python code runs ahead
until it reads a value (`s["x"]` waits for the op that defines x). Arbitrary Python control flow works
because every op runs with concrete values. `fork(n)` has the parent pre-cache the shared prefix right
after its last op (on the parent's own drain, not after a hand-off back to the program thread), waits
for it, and copies the state into n new executors whose ops run concurrently.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Iterator, Optional

from sglang.lang.backends.base import VIDEO_TOKEN, BaseBackend, GenInput
from sglang.lang.gen_rules import LOGPROB_OPTIONS, typed_regex
from sglang.lang.ir import Gen, Image, Loc, RoleBegin, RoleEnd, Select, Text, VarRef, Video, defines
from sglang.lang.primitives import SglExpr, StateBase, StateGroup, caller_loc
from sglang.lang.speculative import CompletionSpec, chat_block_eligible, run_chat_block
from sglang.lang.workers import POOL


class ProgramError(RuntimeError):
    """An op of a program failed; the message names the program, the op's variable and source line."""


class _End:
    pass


class _CachePrefix:
    """fork's pre-cache of the text so far, queued as the parent's last op (see ProgramState.fork)."""


class StreamExecutor:
    def __init__(self, backend: BaseBackend, program: str, default_sampling: dict[str, Any],
                 options: dict[str, Any], stream: bool = False, spec_tokens: Optional[int] = None) -> None:
        self.backend, self.program = backend, program
        self.spec_tokens = spec_tokens  # @sgl.function(num_api_spec_tokens=...)
        self.spec = CompletionSpec(spec_tokens) if spec_tokens and not getattr(backend, "is_chat_model", False) \
            else None
        self.default_sampling, self.options, self.stream = dict(default_sampling), dict(options), stream
        self.text_ = ""
        self.messages_: list[dict[str, str]] = []
        self.images_: list[str] = []
        self.videos_: list[tuple[str, int]] = []  # (path, num_frames)
        self.variables: dict[str, Any] = {}
        self.meta_info: dict[str, Any] = {}
        self.role: Optional[str] = None
        self.role_begin_pos = 0
        self.error_: Optional[BaseException] = None
        self.pending: collections.Counter[str] = collections.Counter()
        self.stream_pieces: list[tuple[Optional[str], str]] = []
        self.finished = False
        self.cond = threading.Condition()
        self.queue: collections.deque[tuple[Any, Optional[Loc]]] = collections.deque()
        self.draining = False  # a pool thread is running (or about to run) this executor's ops
        self._template = None

    # -- user thread side
    def submit(self, expr: SglExpr, loc: Optional[Loc]) -> None:
        with self.cond:
            for op, op_loc in zip(expr.ops, expr.locs):
                name = defines(op)
                if name is not None:
                    self.pending[name] += 1
                self.queue.append((op, op_loc or loc))
            self.finished = False
            self._ensure_worker()
            self.cond.notify_all()

    def end(self) -> None:
        self._submit_internal(_End())

    def cache_prefix_async(self) -> None:
        """Queue a pre-cache of the text as it will be after the ops queued so far (fork waits for it)."""
        self._submit_internal(_CachePrefix())

    def _submit_internal(self, op: Any) -> None:
        with self.cond:
            self.queue.append((op, None))
            self._ensure_worker()
            self.cond.notify_all()

    def _ensure_worker(self) -> None:  # with self.cond held
        if not self.draining:
            self.draining = True
            POOL.submit(self._drain)

    def sync(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: not self.queue and not self._busy)
        self.raise_error()

    def raise_error(self) -> None:
        if self.error_ is not None:
            raise self.error_

    def get_var(self, name: str, loc: Optional[Loc] = None) -> Any:
        with self.cond:
            self.cond.wait_for(lambda: self.pending[name] == 0 or self.error_ is not None)
            if self.pending[name] > 0:  # the program failed before (re)defining it: no stale value
                self.raise_error()
            if name in self.variables:
                return self.variables[name]
            self.raise_error()
        self.sync()  # list what is really defined so far
        where = f" at {loc}" if loc else ""
        known = ", ".join(sorted(self.variables)) or "none"
        raise ProgramError(f"program {self.program!r}: variable {name!r} is read{where} but no gen/select before "
                           f"it defines it (defined: {known})")

    def set_var(self, name: str, value: Any) -> None:
        with self.cond:
            self.variables[name] = value

    # -- worker side
    _busy = False

    def _drain(self) -> None:
        """Run queued ops in order until the queue is empty (on a pool thread); submit() queues another
        drain when more ops come."""
        while True:
            with self.cond:
                if not self.queue:
                    self.draining = False
                    return
                op, loc = self.queue.popleft()
                self._busy = True
            try:
                if isinstance(op, _End):
                    with self.cond:
                        self.finished = True
                    continue
                if self.error_ is None:
                    self._execute(op, loc)
            except Exception as exc:  # stored; raised where the user reads state
                self.error_ = self._wrap(exc, op, loc)
            finally:
                with self.cond:
                    name = defines(op) if not isinstance(op, (_End, _CachePrefix)) else None
                    if name is not None:
                        self.pending[name] -= 1
                    self._busy = False
                    self.cond.notify_all()

    def _wrap(self, exc: Exception, op: Any, loc: Optional[Loc]) -> ProgramError:
        what = type(op).__name__.lower()
        name = getattr(op, "name", None) if isinstance(op, (Gen, Select)) else None
        desc = f"{what} {name!r}" if name else what
        where = f" at {loc}" if loc else ""
        err = ProgramError(f"program {self.program!r}: {desc}{where} failed: {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return err

    def _append(self, text: str, var: Optional[str] = None) -> None:
        with self.cond:
            self.text_ += text
            if self.stream and text:
                self.stream_pieces.append((var, text))
                self.cond.notify_all()

    def template(self) -> Any:
        if self._template is None:
            self._template = self.backend.chat_template()
        return self._template

    def gen_input(self) -> GenInput:
        role_text = self.text_[self.role_begin_pos:] if self.role else ""
        return GenInput(self.text_, list(self.messages_), list(self.images_), self.role, role_text,
                        videos=list(self.videos_))

    def _execute(self, op: Any, loc: Optional[Loc]) -> None:
        if isinstance(op, Text):
            if self.spec is not None:
                self.spec.fill(op.value)
            self._append(op.value)
        elif isinstance(op, Gen):
            self._gen(op)
        elif isinstance(op, Select):
            choices = list(op.choices)
            index, meta = self.backend.select(self.gen_input(), choices, op.choices_method, op.temperature)
            self._append(choices[index], op.name)
            self._define(op.name, choices[index], meta)
        elif isinstance(op, RoleBegin):
            if self.role is not None:
                raise ValueError(f"role {op.role!r} begins inside role {self.role!r}")
            self._append(self.template().role_begin(op.role))
            self.role, self.role_begin_pos = op.role, len(self.text_)
            if op.role == "assistant" and self.spec_tokens and getattr(self.backend, "is_chat_model", False):
                self._speculate_chat_block()
        elif isinstance(op, RoleEnd):
            if self.role != op.role:
                raise ValueError(f"role {op.role!r} ends but the open role is {self.role!r}")
            content = self.text_[self.role_begin_pos:]
            self._append(self.template().role_end(op.role))
            self.messages_.append({"role": op.role, "content": content})
            self.role = None
        elif isinstance(op, Image):
            self.backend.check_images()
            self.images_.append(op.src.value)
            self._append(self.template().image_token)
        elif isinstance(op, Video):
            self.backend.check_images()
            self.videos_.append((op.src.value, op.num_frames))
            self._append(VIDEO_TOKEN)
        elif isinstance(op, VarRef):
            self._append(str(self.variables[op.name]))
        elif isinstance(op, _CachePrefix):
            if self.text_:
                try:  # branches then share the prefix KV instead of racing to prefill it
                    self.backend.cache_prefix(self.text_)
                except Exception:  # only an optimization: the branches' own requests report real errors
                    pass
        else:
            raise TypeError(f"the eager interpreter cannot execute {type(op).__name__} ops")

    def _gen(self, op: Gen) -> None:
        sampling = dict(self.default_sampling)
        sampling.update(op.sampling_params())
        if op.dtype is not None and sampling.get("regex") is None:
            sampling["regex"] = typed_regex(op.dtype)
        options = dict(self.options)
        options.update({k: getattr(op, k) for k in LOGPROB_OPTIONS if getattr(op, k) is not None})
        inp = self.gen_input()
        speculated = None if self.spec is None or self.stream else self.spec.gen(self, op, sampling, options)
        if speculated is not None:
            text, meta = speculated
            self._append(text, op.name)
        elif self.stream:
            pieces, meta = [], {}
            for piece, m in self.backend.generate_stream(inp, sampling, options):
                if piece:
                    pieces.append(piece)
                    self._append(piece, op.name)
                if m is not None:
                    meta = m
            text = "".join(pieces)
        else:
            text, meta = self.backend.generate(inp, sampling, options)
            self._append(text, op.name)
        self._define(op.name, text, meta)

    def _speculate_chat_block(self) -> None:
        """With a chat model, run an already-submitted `sgl.assistant(text + gens)` block as one call."""
        with self.cond:
            ops = [op for op, _ in self.queue]
            end = next((i for i, op in enumerate(ops) if isinstance(op, (RoleEnd, RoleBegin))), None)
            if end is None or not isinstance(ops[end], RoleEnd) or not chat_block_eligible(ops[:end]):
                return  # not a complete, plain block yet: execute op by op
            block = [self.queue.popleft()[0] for _ in range(end)]
        sampling = dict(self.default_sampling)
        sampling.update(next(op for op in block if isinstance(op, Gen)).sampling_params())
        try:
            for op, text in run_chat_block(self, block, sampling, int(self.spec_tokens)):
                self._append(text, getattr(op, "name", None) if isinstance(op, Gen) else None)
                if isinstance(op, Gen):
                    self._define(op.name, text, {"speculative": True})
        finally:
            with self.cond:
                for op in block:
                    if isinstance(op, Gen) and op.name is not None:
                        self.pending[op.name] -= 1
                self.cond.notify_all()

    def _define(self, name: Optional[str], value: Any, meta: dict[str, Any]) -> None:
        if name is not None:
            with self.cond:
                self.variables[name] = value
                self.meta_info[name] = meta

    def copy_from(self, other: "StreamExecutor") -> None:
        self.text_, self.messages_, self.images_ = other.text_, list(other.messages_), list(other.images_)
        self.videos_ = list(other.videos_)
        self.variables, self.meta_info = dict(other.variables), dict(other.meta_info)
        self.role, self.role_begin_pos, self._template = other.role, other.role_begin_pos, other._template

    def text_iter(self, var_name: Optional[str] = None) -> Iterator[str]:
        i = 0
        while True:
            with self.cond:
                self.cond.wait_for(lambda: len(self.stream_pieces) > i or self.finished or self.error_ is not None)
                pieces = self.stream_pieces[i:]
                i = len(self.stream_pieces)
                done = (self.finished or self.error_ is not None) and i == len(self.stream_pieces)
            for var, piece in pieces:
                if var_name is None or var == var_name:
                    yield piece
            if done and not pieces:
                self.raise_error()
                return


class ProgramState(StateBase):
    """`s` inside an `@sgl.function`: append with `+=`, read variables with `s["name"]`."""

    def __init__(self, executor: StreamExecutor) -> None:
        self.stream_executor = executor
        self.ret_value: Any = None

    def _append(self, expr: SglExpr, loc: Optional[Loc]) -> None:
        self.stream_executor.submit(expr, loc)

    def __getitem__(self, name: str) -> Any:
        return self.stream_executor.get_var(name, caller_loc())

    get_var = __getitem__

    def __setitem__(self, name: str, value: Any) -> None:
        self.stream_executor.set_var(name, value)

    set_var = __setitem__

    def __contains__(self, name: str) -> bool:
        self.stream_executor.sync()
        return name in self.stream_executor.variables

    def get_meta_info(self, name: str) -> Any:
        self.stream_executor.get_var(name, caller_loc())
        return self.stream_executor.meta_info.get(name)

    def text(self) -> str:
        self.stream_executor.sync()
        return self.stream_executor.text_

    def messages(self) -> list[dict[str, str]]:
        self.stream_executor.sync()
        return list(self.stream_executor.messages_)

    def sync(self) -> "ProgramState":
        self.stream_executor.sync()
        return self

    def error(self) -> Optional[BaseException]:
        with self.stream_executor.cond:
            self.stream_executor.cond.wait_for(lambda: not self.stream_executor.queue
                                               and not self.stream_executor._busy)
        return self.stream_executor.error_

    def variables(self) -> dict[str, Any]:
        self.stream_executor.sync()
        return dict(self.stream_executor.variables)

    def text_iter(self, var_name: Optional[str] = None) -> Iterator[str]:
        if not self.stream_executor.stream:
            yield self.text() if var_name is None else str(self[var_name])
            return
        yield from self.stream_executor.text_iter(var_name)

    async def text_async_iter(self, var_name: Optional[str] = None) -> Any:
        """`async for piece in state.text_async_iter()`: text_iter without blocking the event loop."""
        import asyncio

        it = self.text_iter(var_name)
        done = object()
        while True:
            piece = await asyncio.to_thread(next, it, done)
            if piece is done:
                return
            yield piece

    def fork(self, size: int = 1) -> "ProgramStateGroup":
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"fork size must be a positive int, got {size!r}")
        ex = self.stream_executor
        if size > 1:
            ex.cache_prefix_async()
        ex.sync()
        children = []
        for _ in range(size):
            child = StreamExecutor(ex.backend, ex.program, ex.default_sampling, ex.options, ex.stream, ex.spec_tokens)
            child.copy_from(ex)
            children.append(ProgramState(child))
        return ProgramStateGroup(children, self)

    def copy(self) -> "ProgramState":
        return self.fork(1)[0]

    def __repr__(self) -> str:  # no sync: safe to print while running or after a failure
        return f"ProgramState({self.stream_executor.text_!r})"


class ProgramStateGroup(StateGroup):
    """The result of `s.fork(n)`: index it, iterate it, `+=` to all, `join()` back into the parent."""

    def __init__(self, states: list[ProgramState], parent: ProgramState) -> None:
        super().__init__(states, parent)
        self.fork_text_len = len(parent.stream_executor.text_)
        self.fork_vars = dict(parent.stream_executor.variables)

    def join(self, mode: str = "gather_variable") -> None:
        for s in self.states:
            s.sync()
        if mode == "gather_variable":
            names = {k for s in self.states for k, v in s.stream_executor.variables.items()
                     if k not in self.fork_vars or self.fork_vars[k] is not v}
            for k in sorted(names):
                self.parent.stream_executor.set_var(k, [s.stream_executor.variables.get(k) for s in self.states])
        elif mode == "concate_and_append":
            text = "".join(s.stream_executor.text_[self.fork_text_len:] for s in self.states)
            self.parent += text
        else:
            raise ValueError(f"join mode must be 'gather_variable' or 'concate_and_append', got {mode!r}")

