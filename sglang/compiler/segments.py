"""Partial compilation: a program the tracer cannot follow runs as compiled segments batched across items.

Where a function reads a generated value in Python (`if s["action"] == " Finish": break`, a tool called
on a generated argument), one plan cannot describe it. Here each item's Python body runs once, in its
own thread, on a `SegmentState` that *records* what is appended (text, gen, select, roles) instead of
executing it. A read (`s["x"]` of a variable a recorded op defines, `s.text()`, `x in s`, a join, a
fork) is a segment boundary: the item hands the ops recorded since its last boundary, on every stream it
owns (its main state and fork branches), to the coordinator and blocks. When every live item is blocked
or finished, the coordinator groups the recorded segments of all items by shape (the ops with their text
lifted out as arguments: react_agent's items at the same step share one), compiles each shape once
(IR -> passes -> plan, cached per function), runs each group as ONE batched `PlanExecutor.execute`
seeded with each stream's state so far (the groups of one round side by side), binds the results (text,
variables, meta info, messages) and wakes the items, which read real values and continue in Python.

So a read sees exactly what the interpreter's blocking read sees, and the body's own Python (tools,
side effects) runs once per item. A read used only to interpolate text is a boundary too (the value is
real: Python may do anything with it), which is why the whole-function trace is tried first (jit.py).
Forks: the parent's recorded ops run first (the interpreter syncs before a fork too), then each branch is
a stream of its own whose segments batch with every other stream at the same boundary.

An item fails here (its Python raised, a segment did not compile, e.g. a read inside an open role or an
image, or the backend failed): the caller runs it again in the interpreter, so errors read the same.
"""
from __future__ import annotations

import concurrent.futures
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

from sglang.lang.ir import Arg, IRFunction, Image, Text, Video, canonicalize
from sglang.lang.ir.ops import JOIN_MODES, defines
from sglang.lang.primitives import SglExpr, StateBase, StateGroup
from sglang.compiler.executor import PlanExecutor
from sglang.compiler.lower import plan_for_ir
from sglang.compiler.plan import Plan

MAX_ITEMS_IN_FLIGHT = 1024  # item threads alive at once (each is a Python thread blocked on its next read)


class SegmentError(RuntimeError):
    """What the segment path cannot run (the item then runs in the interpreter)."""


@dataclass
class SegmentStream:
    """One stream's state after its last segment ran, and the ops recorded since."""

    text: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    role_start: int = -1
    ops: list[tuple[Any, Any]] = field(default_factory=list)  # (IR op, source location)

    def child(self) -> "SegmentStream":
        return SegmentStream(self.text, dict(self.vars), dict(self.meta), list(self.messages), self.role_start)

    def seed(self) -> dict[str, Any]:
        return {"text": self.text, "vars": self.vars, "meta": self.meta, "messages": self.messages,
                "role_start": self.role_start}


@dataclass
class SegmentItem:
    """One batch item: its arguments, every stream it made, and how its run ended."""

    index: int
    args: dict[str, Any]
    rounds: "Rounds"
    streams: list[SegmentStream] = field(default_factory=list)
    result: Any = None
    error: Optional[BaseException] = None
    waiting: bool = False

    @property
    def main(self) -> SegmentStream:
        return self.streams[0]

    # the attributes jit's finished-state builder reads (as for an ItemRun)
    @property
    def text(self) -> str:
        return self.main.text

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self.main.vars)

    @property
    def meta_info(self) -> dict[str, Any]:
        return dict(self.main.meta)

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.main.messages)

    def flush(self) -> None:
        """Run what every stream of this item recorded (batched with the other items); raise its failure."""
        if any(st.ops for st in self.streams):
            self.rounds.submit(self)
        if self.error is not None:
            raise SegmentError(f"a segment failed: {self.error}")


class SegmentState(StateBase):
    """`s` on the segment path: appends are recorded, reads run what was recorded and return real values."""

    def __init__(self, item: SegmentItem, stream: SegmentStream) -> None:
        self.item, self.stream = item, stream
        self.ret_value: Any = None

    def _append(self, expr: SglExpr, loc: Any) -> None:
        for op, op_loc in zip(expr.ops, expr.locs):
            if isinstance(op, (Image, Video)):  # the interpreter owns their prompt tokens
                raise SegmentError(f"{type(op).__name__.lower()} inputs are interpreted")
            self.stream.ops.append((op, op_loc or loc))

    # -- reads: each is a boundary
    def __getitem__(self, name: str) -> Any:
        if name not in self.stream.vars or any(defines(op) == name for op, _ in self.stream.ops):
            self.item.flush()  # as the interpreter's read waits only for the ops that (re)define the name
        if name not in self.stream.vars:
            raise SegmentError(f"variable {name!r} is read but no gen/select before it defines it")
        return self.stream.vars[name]

    get_var = __getitem__

    def __setitem__(self, name: str, value: Any) -> None:
        self.item.flush()  # ordered after what was appended before it
        self.stream.vars[name] = value

    set_var = __setitem__

    def __contains__(self, name: str) -> bool:
        self.item.flush()
        return name in self.stream.vars

    def get_meta_info(self, name: str) -> Any:
        self[name]
        return self.stream.meta.get(name)

    def text(self) -> str:
        self.item.flush()
        return self.stream.text

    def messages(self) -> list[dict[str, str]]:
        self.item.flush()
        return list(self.stream.messages)

    def variables(self) -> dict[str, Any]:
        self.item.flush()
        return dict(self.stream.vars)

    def sync(self) -> "SegmentState":
        self.item.flush()
        return self

    def error(self) -> None:
        return None

    # -- structure
    def fork(self, size: int = 1) -> "SegmentGroup":
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"fork size must be a positive int, got {size!r}")
        self.item.flush()  # the branches start from the parent's real state, as in the interpreter
        children = [self.stream.child() for _ in range(size)]
        self.item.streams.extend(children)
        return SegmentGroup([SegmentState(self.item, c) for c in children], self)

    def copy(self) -> "SegmentState":
        return self.fork(1)[0]


class SegmentGroup(StateGroup):
    """`s.fork(n)` on the segment path; `join` gathers like the interpreter's (its rules, not a copy of
    its code: the branches' new or changed variables become lists, or their new text is appended)."""

    def __init__(self, states: list[SegmentState], parent: SegmentState) -> None:
        super().__init__(states, parent)
        self.fork_text_len = len(parent.stream.text)
        self.fork_vars = dict(parent.stream.vars)

    def join(self, mode: str = "gather_variable") -> None:
        if mode not in JOIN_MODES:
            raise ValueError(f"join mode must be 'gather_variable' or 'concate_and_append', got {mode!r}")
        self.parent.item.flush()
        if mode == "gather_variable":
            names = {k for s in self.states for k, v in s.stream.vars.items()
                     if k not in self.fork_vars or self.fork_vars[k] is not v}
            for k in sorted(names):
                self.parent.stream.vars[k] = [s.stream.vars.get(k) for s in self.states]
        else:
            self.parent += "".join(s.stream.text[self.fork_text_len:] for s in self.states)


# ---------------------------------------------------------------- shapes and their plans

def segment_shape(ops: list[tuple[Any, Any]]) -> tuple[tuple, list[tuple[Any, Any]], dict[str, str]]:
    """(key, ops with each run of text lifted to an argument t0, t1..., those arguments' values)."""
    shaped: list[tuple[Any, Any]] = []
    texts: dict[str, str] = {}
    for op, loc in ops:
        if isinstance(op, Text):
            if shaped and isinstance(shaped[-1][0], Arg) and shaped[-1][0].name in texts:
                texts[shaped[-1][0].name] += op.value  # adjacent text is one argument
                continue
            name = f"t{len(texts)}"
            texts[name] = op.value
            op = Arg(name)
        shaped.append((op, loc))
    return tuple(op for op, _ in shaped), shaped, texts


def compile_segment(name: str, shaped: list[tuple[Any, Any]], params: list[str]) -> Plan:
    ir = IRFunction(name, tuple(params))
    cur = ir.cursor()
    for op, loc in shaped:
        cur.append(op, loc)
    return plan_for_ir(canonicalize(ir.check()).check())


class PlanCache:
    """Compiled segment plans per function and shape (a failure is cached too: it is the shape's)."""

    def __init__(self) -> None:
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def plan(self, fn: Any, key: tuple, shaped: list[tuple[Any, Any]], params: list[str]) -> Plan:
        with self._lock:
            per_fn = self._plans.setdefault(fn, {})
            if key not in per_fn:
                try:
                    per_fn[key] = compile_segment(f"{fn.name}#segment{len(per_fn)}", shaped, params)
                except Exception as e:
                    per_fn[key] = SegmentError(f"a segment does not compile: {type(e).__name__}: {e}")
            found = per_fn[key]
        if isinstance(found, Exception):
            raise found
        return found


PLANS = PlanCache()


# ---------------------------------------------------------------- the rounds

class Rounds:
    """Runs the items' threads and, whenever all are blocked on a read or done, their segments."""

    def __init__(self, fn: Any, backend: Any, sampling: dict[str, Any], options: dict[str, Any]) -> None:
        self.fn, self.backend, self.sampling, self.options = fn, backend, sampling, options
        self.cond = threading.Condition()
        self.running = 0  # item threads neither blocked on a read nor finished
        self.blocked: list[SegmentItem] = []
        self.rounds = 0  # segment rounds run (each: one batched plan run per shape)

    # -- item side
    def submit(self, item: SegmentItem) -> None:
        with self.cond:
            item.waiting = True
            self.blocked.append(item)
            self.running -= 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: not item.waiting)

    def _body(self, item: SegmentItem) -> None:
        state = SegmentState(item, item.main)
        try:
            item.result = self.fn.func(state, **item.args)
            item.flush()  # what the body appended after its last read
        except BaseException as e:  # noqa: BLE001  (reported per item; the interpreter runs it again)
            item.error = item.error or e
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    # -- coordinator side
    def run(self, all_args: list[dict[str, Any]]) -> list[SegmentItem]:
        items = [SegmentItem(i, a, self, [SegmentStream()]) for i, a in enumerate(all_args)]
        for lo in range(0, len(items), MAX_ITEMS_IN_FLIGHT):
            self._run_window(items[lo:lo + MAX_ITEMS_IN_FLIGHT])
        return items

    def _run_window(self, items: list[SegmentItem]) -> None:
        threads = [threading.Thread(target=self._body, args=(it,), name=f"sgl-segment-{it.index}", daemon=True)
                   for it in items]
        with self.cond:
            self.running += len(threads)
        for t in threads:
            t.start()
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.running == 0)
                batch, self.blocked = self.blocked, []
            if not batch:
                break
            try:
                self._run_round(batch)
            except BaseException as e:  # noqa: BLE001  (a bug here must not leave threads blocked forever)
                for it in batch:
                    it.error = it.error or e
            with self.cond:
                for it in batch:
                    it.waiting = False
                self.running += len(batch)
                self.cond.notify_all()
        for t in threads:
            t.join()

    def _run_round(self, batch: list[SegmentItem]) -> None:
        """Every pending stream of every blocked item: grouped by shape, one batched plan run per group."""
        self.rounds += 1
        groups: dict[tuple, list[tuple[SegmentItem, SegmentStream, dict[str, str]]]] = {}
        shapes: dict[tuple, list[tuple[Any, Any]]] = {}
        for item in batch:
            for st in item.streams:
                if st.ops:
                    key, shaped, texts = segment_shape(st.ops)
                    shapes.setdefault(key, shaped)
                    groups.setdefault(key, []).append((item, st, texts))
        jobs = list(groups.items())
        if len(jobs) == 1:
            self._run_group(shapes[jobs[0][0]], *jobs[0])
            return
        with concurrent.futures.ThreadPoolExecutor(len(jobs), thread_name_prefix="sgl-segment-group") as pool:
            list(pool.map(lambda job: self._run_group(shapes[job[0]], *job), jobs))

    def _run_group(self, shaped: list[tuple[Any, Any]], key: tuple,
                   rows: list[tuple[SegmentItem, SegmentStream, dict[str, str]]]) -> None:
        try:
            plan = PLANS.plan(self.fn, key, shaped, sorted(rows[0][2], key=lambda n: int(n[1:])))
            ex = PlanExecutor(plan, self.backend, default_sampling=self.sampling, default_options=self.options)
            runs = ex.execute(None, [texts for _, _, texts in rows], seeds=[st.seed() for _, st, _ in rows],
                              hoist_prefix=False)
        except BaseException as e:  # noqa: BLE001
            for item, _, _ in rows:
                item.error = item.error or e
            return
        for (item, st, _), run in zip(rows, runs):
            st.ops.clear()
            if run.error is not None:
                item.error = item.error or run.error
                continue
            st.text, st.vars, st.meta = run.text, run.variables, run.meta_info
            st.messages, st.role_start = run.messages, run.main.role_start


def run_segments(fn: Any, backend: Any, all_args: list[dict[str, Any]], sampling: dict[str, Any],
                 options: dict[str, Any]) -> tuple[list[SegmentItem], int]:
    """Run every item on the segment path; (items, rounds). An item with `error` set must be interpreted."""
    rounds = Rounds(fn, backend, sampling, options)
    return rounds.run(all_args), rounds.rounds


__all__ = ["SegmentError", "SegmentState", "SegmentGroup", "SegmentItem", "segment_shape", "run_segments",
           "MAX_ITEMS_IN_FLIGHT"]
