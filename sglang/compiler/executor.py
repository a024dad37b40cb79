"""Plan executor: runs a compiled plan for one or many argument sets over a native backend.

Each stream (a batch item's main state, or a fork branch) is a generator walking its region of the
plan; it yields the backend requests it needs (gen, prefill, choice scoring) and waits on other
streams (join, reading a branch's variable). The scheduler advances every runnable stream until it
blocks and sends the requests that became ready together as ONE batched native call through the
dispatcher (compiler/dispatch.py), without waiting for calls still in flight: a stream resumes as soon
as its own response is back, so there is no wave barrier and the branches of all forks of all batch
items are in flight together. Requests marked `solo` (selects the select-lowering pass did not batch)
go out one call each. Data-dependent control flow (branch conditions, loops over generated values,
fork counts) is decided at run time from the stream's variables. A stream may read the branches of a
fork started inside one of its own forks' branches (tree of thought): it waits until that branch has
started the nested fork and the nested branch has finished.

Warm-up prefills (the batch's shared constant prefix, a fork's parent) go out only when the cost model
(compiler/cost.py) says they save computed tokens.

Speculation (passes/speculation.py): a step with `speculate` sends the gens that may follow it before its
decision resolves (each choice's continuation with a select's scoring; each arm's first gen when a branch
waits on a fork's variable), from tasks of their own; the gen that then runs uses the answer whose request
is exactly its own. Speculative requests go out as calls of their own (in the same wave), so one that fails
fails no real request; it is dropped and the gen sends its own.

The frontend rules are the interpreter's, not copies: a select runs `lang.backends.choices.score_choices`
(its request lists join the batch), a gen variable holds the generated text whatever its dtype
(`lang/gen_rules.py`), a role block's text becomes a message, and a join gathers the branches' variables
into lists, so a traced program gives the same values and types on both paths.

The backend is any `lang.backends.base.NativeBackend` (in-process Engine or HTTP): we only use its
`_call(payload)` transport, its chat template and its image check.
"""
from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Iterator

from sglang.lang.backends.base import VIDEO_TOKEN
from sglang.lang.backends.choices import PREFILL, score_choices
from sglang.lang.gen_rules import LOGPROB_OPTIONS
from sglang.lang.ir.expr import eval_expr, expr_from_json, expr_to_str, names_in
from sglang.lang.ir.types import coerce_return
from sglang.lang.sgl.errors import SglRuntimeError, pos_of_loc
from sglang.compiler.args import bind_args  # noqa: F401  (part of this module's API)
from sglang.compiler.cost import token_counter, warmup_pays
from sglang.compiler.dispatch import MAX_CALL_BATCH, Dispatcher, ExecStats, Request  # noqa: F401  (API)
from sglang.compiler.limits import ProgramLimits, WorkMeter
from sglang.compiler.plan import FunctionPlan, Plan, Step


@dataclass
class _Wait:
    ready: Callable[[], bool]


@dataclass
class _Spawn:
    tasks: list[Iterator[Any]]


@dataclass
class _Stream:
    text: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[Any]] = field(default_factory=dict)  # every value of a variable, in order
    meta: dict[str, Any] = field(default_factory=dict)
    images: list[Any] = field(default_factory=list)
    videos: list[list[Any]] = field(default_factory=list)  # [path, num_frames]
    forks: dict[int, list["_Stream"]] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    role_start: int = -1  # where the open role's content begins in `text`; -1: no role open
    cached: int = 0  # length of the text prefix the engine holds in its cache (a response covered it)
    done: bool = False
    # speculation: request key -> the response of a gen sent early (None while in flight); never copied to children
    prefetched: dict[str, Any] = field(default_factory=dict)

    def child(self) -> "_Stream":
        return _Stream(self.text, dict(self.vars), {}, {}, list(self.images), list(self.videos), {},
                       list(self.messages), self.role_start, self.cached)

    def media(self) -> dict[str, Any]:
        """The native request's image_data / video_data for the images and videos appended so far."""
        out: dict[str, Any] = {}
        if self.images:
            out["image_data"] = self.images if len(self.images) > 1 else self.images[0]
        if self.videos:
            out["video_data"] = [list(v) for v in self.videos]
        return out


@dataclass
class ItemRun:
    """One batch item after the run: its final main stream, return value and error (None if it ran)."""

    index: int
    args: dict[str, Any]
    main: _Stream
    result: Any = None
    error: BaseException | None = None
    meter: WorkMeter = field(default_factory=WorkMeter)  # work done so far, against the run's limits
    on_event: Callable[[int, dict[str, Any]], None] | None = None  # each variable as it is set
    stream_tokens: bool = False  # gens go out as streamed calls; on_event gets each chunk ("delta")
    closed: bool = False  # answered (or cancelled): its streams still running are dropped
    rids: set[str] = field(default_factory=set)  # engine requests in flight (a batching executor sets them)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count_tokens(self, responses: list[Any]) -> None:
        for r in responses:
            m = (r.get("meta_info") or {}) if isinstance(r, dict) else {}
            self.prompt_tokens += int(m.get("prompt_tokens", 0) or 0)
            self.completion_tokens += int(m.get("completion_tokens", 0) or 0)
    forks: dict[int, list[_Stream]] = field(default_factory=dict)  # every fork step run, by any stream

    @property
    def text(self) -> str:
        return self.main.text

    @property
    def variables(self) -> dict[str, Any]:
        """Every variable's last value (a join's gathered lists included), as the interpreter keeps them."""
        return dict(self.main.vars)

    @property
    def meta_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.main.meta.items() if isinstance(k, str)}

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.main.messages)


def _in_process(backend: Any) -> bool:
    """Whether the backend's engine shares this process (and so its constraint-table cache)."""
    try:
        from sglang.lang.backends.engine_backend import EngineBackend
    except ImportError:
        return False
    return isinstance(backend, EngineBackend)


def _text_of(value: Any) -> str:
    return "" if value is None else str(value)


def _iter_values(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(value))
    if isinstance(value, dict):
        return list(value)
    try:
        return list(value)
    except TypeError:
        raise SglRuntimeError(f"cannot loop over a {type(value).__name__} ({value!r})") from None


def _seeded(seed: dict[str, Any] | None) -> _Stream:
    """A main stream, empty or continuing a seed's state (the engine already holds its text)."""
    if seed is None:
        return _Stream()
    text = seed.get("text", "")
    return _Stream(text, dict(seed.get("vars", {})), meta=dict(seed.get("meta", {})),
                   messages=list(seed.get("messages", [])), role_start=seed.get("role_start", -1), cached=len(text))


class PlanExecutor:
    """Runs one function of a plan. `run_batch` is the batched entry point; `run` a single item;
    `execute` the same run with each item's state (for the frontend's compiled path)."""

    def __init__(self, plan: Plan, backend: Any, *, default_sampling: dict[str, Any] | None = None,
                 default_options: dict[str, Any] | None = None, limits: ProgramLimits | None = None) -> None:
        self.plan = plan
        self.backend = backend
        self.limits = limits  # None: unlimited (sglang run); program endpoints bound every run
        self.default_sampling = dict(default_sampling or {})
        self.default_options = {k: v for k, v in (default_options or {}).items() if k in LOGPROB_OPTIONS}
        self.stats = ExecStats()
        self._template = None
        self._count_tokens = token_counter(backend)
        self._batch_shared = 0  # length of the text every item of the running batch starts with
        self._speculative: dict[int, tuple[_Stream, str]] = {}  # id(prefetch task) -> (its stream, request key)
        self.speculated = 0  # requests sent early, and how many a gen then used
        self.speculation_hits = 0
        self.tables_loaded = 0
        if plan.constraints and _in_process(backend) and not getattr(plan, "_tables_loaded", False):
            from sglang.compiler.passes.constrained_precompile import load_tables

            self.tables_loaded = load_tables(plan.constraints)  # the engine then skips compiling these
            plan._tables_loaded = True  # once per loaded plan, not per request (program endpoints)

    # ---------------- public
    def run(self, function: str | None = None, args: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self.run_batch(function, [args or {}], **kw)[0]

    def run_batch(self, function: str | None, batch: list[dict[str, Any]], *, progress: bool = False,
                  on_event: Callable[[int, dict[str, Any]], None] | None = None,
                  hoist_prefix: bool = True) -> list[dict[str, Any]]:
        """Run every item; one JSON-able result dict per item (`sglang run`, program endpoints)."""
        fplan = self.plan.function(function)
        items = self.execute(fplan.name, batch, progress=progress, on_event=on_event, hoist_prefix=hoist_prefix)
        return [self._output(it, fplan) for it in items]

    def execute(self, function: str | None, batch: list[dict[str, Any]], *, progress: bool = False,
                on_event: Callable[[int, dict[str, Any]], None] | None = None,
                hoist_prefix: bool = True, seeds: list[dict[str, Any]] | None = None) -> list[ItemRun]:
        """Run every item; `seeds` (one per item) start each main stream where an earlier run left it
        (partial compilation, compiler/segments.py): keys text, vars, meta, messages, role_start."""
        fplan = self.plan.function(function)
        items = [self.new_item(i, bind_args(fplan, a), on_event, main=_seeded(seeds[i] if seeds else None))
                 for i, a in enumerate(batch)]
        self._fplan = fplan
        bar = None
        if progress and len(items) > 1:
            from tqdm import tqdm

            bar = tqdm(total=len(items), desc=fplan.name, unit="item", leave=False)
        dispatcher = Dispatcher(self.backend, self.stats)
        try:
            prefix = self._hoisted_prefix(fplan) if fplan.hoisted_prefix_steps and len(items) > 1 else ""
            self._batch_shared = len(prefix)  # computed once per batch: by the warm-up, or in-batch
            if hoist_prefix and warmup_pays(prefix, len(items), self._count_tokens):
                dispatcher.call([{"text": prefix, "sampling_params": dict(PREFILL)}])  # shared by every item
            self._schedule([(self._main_task(it, fplan), it) for it in items], dispatcher, bar)
        finally:
            dispatcher.close()
            if bar is not None:
                bar.close()
        return items

    def new_item(self, index: int, args: dict[str, Any], on_event: Callable[[int, dict[str, Any]], None] | None = None,
                 stream_tokens: bool = False, meter: WorkMeter | None = None, main: _Stream | None = None) -> ItemRun:
        """One run's state (its arguments already bound), metered against this executor's limits (`meter`:
        one shared by the items of a request, so its limits bound the request as a whole); `main`: a seeded
        stream to continue (partial compilation), else an empty one."""
        return ItemRun(index, args, main or _Stream(), meter=meter or WorkMeter(self.limits), on_event=on_event,
                       stream_tokens=stream_tokens)

    # ---------------- scheduling
    def _schedule(self, tasks: list[tuple[Iterator[Any], ItemRun]], dispatcher: Dispatcher, bar: Any) -> None:
        """Advance runnable streams; send what they need the moment they block; resume each stream when
        its own response is back (see the module docstring)."""
        ready = collections.deque((t, it, None) for t, it in tasks)
        waiting: list[tuple[Iterator[Any], ItemRun, _Wait]] = []
        mains = {id(t) for t, _ in tasks}
        while True:
            blocked = self._advance(ready, waiting, mains, bar)
            if blocked:
                dispatcher.submit([(b, b[2] if isinstance(b[2], list) else [b[2]]) for b in blocked])
            if not dispatcher.busy:
                break
            for (task, item, req), responses in dispatcher.wait():
                spec = self._speculative.pop(id(task), None)
                if spec is not None and isinstance(responses, BaseException):
                    spec[0].prefetched.pop(spec[1], None)  # a lost guess: the gen sends its own request
                    task.close()
                    continue
                self._resume(task, item, req, responses, ready)
        for task, item, _ in waiting:  # nothing can make progress: report instead of hanging
            item.error = item.error or SglRuntimeError("a stream waits for a branch that never finishes")
            task.close()

    def _advance(self, ready: collections.deque, waiting: list, mains: Container[int], bar: Any) -> list:
        """Run every ready stream until it blocks; returns [(task, item, request or list of requests)]."""
        blocked: list[tuple[Iterator[Any], ItemRun, Any]] = []
        while True:
            still = []
            for w in waiting:  # a stream that finished may release a waiter
                (ready.append((w[0], w[1], True)) if w[2].ready() else still.append(w))
            waiting[:] = still
            if not ready:
                return blocked
            task, item, value = ready.popleft()
            try:
                out = task.send(value) if value is not None else next(task)
                while isinstance(out, _Spawn):
                    ready.extend((t, item, None) for t in out.tasks)
                    out = next(task)
            except StopIteration:
                if id(task) in mains:
                    self._item_ended(item, bar)
                continue
            except Exception as e:  # one item's failure does not stop the batch
                item.error = item.error or e
                item.main.done = True
                if id(task) in mains or not item.closed:
                    self._item_ended(item, bar if id(task) in mains else None)
                continue
            (waiting if isinstance(out, _Wait) else blocked).append((task, item, out))

    def _item_ended(self, item: ItemRun, bar: Any) -> None:
        """An item's main stream returned, or one of its streams failed (the item's answer is known)."""
        if bar is not None:
            bar.update(1)

    def _resume(self, task: Iterator[Any], item: ItemRun, req: Any, responses: Any, ready: collections.deque) -> None:
        """Hand a stream its responses (one, or a list for a list of requests), or close it on an error."""
        if isinstance(responses, BaseException):
            item.error = item.error or responses
            item.main.done = True
            task.close()
            if not item.closed:
                self._item_ended(item, None)
            return
        item.count_tokens(responses)
        if item.closed:  # answered or cancelled meanwhile: nobody reads what this stream would do
            task.close()
            return
        ready.append((task, item, responses if isinstance(req, list) else responses[0]))

    # ---------------- streams
    def _check_media(self) -> None:
        """A backend without images (a text-only model) refuses them where the program appends one."""
        try:
            self.backend.check_images()
        except Exception as exc:
            raise SglRuntimeError(str(exc)) from None

    def template(self) -> Any:
        if self._template is None:
            self._template = self.backend.chat_template()
        return self._template

    def _hoisted_prefix(self, fplan: FunctionPlan) -> str:
        text = ""
        for sid in fplan.entry[:fplan.hoisted_prefix_steps]:
            s = fplan.step(sid)
            if s.kind == "text":
                text += s.args["value"]
            elif s.kind == "role_begin":
                text += self.template().role_begin(s.args["role"])
            elif s.kind == "role_end":
                text += self.template().role_end(s.args["role"])
            else:
                break
        return text

    def _main_task(self, item: ItemRun, fplan: FunctionPlan) -> Iterator[Any]:
        yield from self._region(item, item.main, fplan.entry, {}, path=())
        item.main.done = True

    def _env(self, item: ItemRun, stream: _Stream, local: dict[str, Any]) -> dict[str, Any]:
        env = dict(item.args)
        env.update(stream.vars)
        env.update(local)
        return env

    def _eval(self, item: ItemRun, stream: _Stream, local: dict[str, Any], ej: Any, lenient: bool = False) -> Iterator[Any]:
        expr = expr_from_json(ej)
        branches = {}
        for f, b in {(n.fork, n.branch or 0) for n in names_in(expr) if n.fork is not None}:
            branches[f, b] = yield from self._finished_branch(item, stream, f, b)
        env = self._env(item, stream, local)
        if lenient:  # return values: a variable generated only on some paths reads as none
            for n in self._fplan.generated:
                env.setdefault(n, None)

        def lookup(f: int, b: int, name: str) -> Any:
            return branches[f, b].vars.get(name) if lenient else branches[f, b].vars[name]

        try:
            return eval_expr(expr, env, lookup)
        except (NameError, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
            raise SglRuntimeError(f"cannot evaluate `{expr_to_str(expr)}`: {e}") from None

    @staticmethod
    def _finished_branch(item: ItemRun, stream: _Stream, fork: int, branch: int) -> Iterator[Any]:
        """Branch `branch` of fork step `fork` once it finished (reading its variables waits for that). The
        fork ran on this stream, or inside a branch of one of its forks (a nested fork: tree of thought),
        which may not have reached it yet."""
        children = stream.forks.get(fork)
        if children is None:
            if fork not in item.forks:
                yield _Wait(lambda: fork in item.forks)
            children = item.forks[fork]
        if not 0 <= branch < len(children):
            raise SglRuntimeError(f"fork has {len(children)} branch(es); branch {branch} does not exist")
        child = children[branch]
        if not child.done:
            yield _Wait(lambda: child.done)
        return child

    def _set_var(self, item: ItemRun, stream: _Stream, name: str, value: Any, meta: Any, path: tuple) -> None:
        stream.vars[name] = value
        stream.history.setdefault(name, []).append(value)
        if meta is not None:
            stream.meta[name] = meta
        if item.on_event is not None:
            item.on_event(item.index, {"variable": name, "value": value, "stream": list(path)})

    @staticmethod
    def _append(item: ItemRun, stream: _Stream, piece: str) -> None:
        """Grow a stream's text, within the run's limits (checked before the memory is spent)."""
        if piece:
            item.meter.add_text(len(stream.text), len(piece))
            stream.text += piece

    def _region(self, item: ItemRun, stream: _Stream, ids: list[int], local: dict[str, Any], path: tuple) -> Iterator[Any]:
        fplan = self._fplan
        for sid in ids:
            step = fplan.step(sid)
            try:
                yield from self._step(item, stream, step, local, path)
            except SglRuntimeError as e:
                if e.pos is not None:  # raised by a nested step: it already names its own place
                    raise
                raise e.at(pos_of_loc(step.loc)) from None  # keeps its type (a ProgramLimitError names its limit)

    def _step(self, item: ItemRun, stream: _Stream, step: Step, local: dict[str, Any], path: tuple) -> Iterator[Any]:
        k, a = step.kind, step.args
        if k == "text":
            self._append(item, stream, a["value"])
        elif k == "arg":
            self._append(item, stream, _text_of(item.args.get(a["name"])))
        elif k == "var":
            if "fork" in a:
                child = yield from self._finished_branch(item, stream, a["fork"], a["branch"])
                self._append(item, stream, _text_of(child.vars.get(a["name"])))
            else:
                value = local[a["name"]] if a["name"] in local else stream.vars.get(a["name"], item.args.get(a["name"]))
                self._append(item, stream, _text_of(value))
        elif k == "interp":
            self._append(item, stream, _text_of((yield from self._eval(item, stream, local, a["expr"]))))
        elif k == "role_begin":
            self._append(item, stream, self.template().role_begin(a["role"]))
            stream.role_start = len(stream.text)
        elif k == "role_end":  # the role's content becomes a message, as in the interpreter
            content = stream.text[stream.role_start:] if stream.role_start >= 0 else ""
            self._append(item, stream, self.template().role_end(a["role"]))
            stream.messages.append({"role": a["role"], "content": content})
            stream.role_start = -1
        elif k == "image":
            self._check_media()
            stream.images.append((yield from self._eval(item, stream, local, a["src"])))
            self._append(item, stream, self.template().image_token)  # the runtime expands it to the image's tokens
        elif k == "video":
            self._check_media()
            stream.videos.append([(yield from self._eval(item, stream, local, a["src"])), a["num_frames"]])
            self._append(item, stream, VIDEO_TOKEN)
        elif k == "gen":
            yield from self._gen(item, stream, step, path)
        elif k == "select":
            yield from self._select(item, stream, step, local, path)
        elif k == "branch":
            if a.get("speculate"):  # the condition waits on a fork: send each arm's first gen meanwhile
                yield _Spawn([self._prefetch(item, stream, stream.text, ids) for ids in a["speculate"] if ids])
            for arm, cond in enumerate(a["conds"]):
                if cond is None or (yield from self._eval(item, stream, local, cond)):
                    yield from self._region(item, stream, step.arms[arm], local, path)
                    break
        elif k == "loop":
            yield from self._loop(item, stream, step, local, path)
        elif k == "fork":
            yield from self._fork(item, stream, step, local, path)
        elif k == "join":
            children = stream.forks.get(a["fork"], [])
            if not all(c.done for c in children):
                yield _Wait(lambda: all(c.done for c in children))
            if a["mode"] == "concate_and_append":
                start = stream.meta[("fork_start", a["fork"])]  # children began with the parent's text so far
                self._append(item, stream, "".join(c.text[start:] for c in children))
            else:  # gather_variable: each variable a branch defined becomes the list of every branch's value
                for name in sorted({n for c in children for n in c.history}):
                    stream.vars[name] = [c.vars.get(name) for c in children]
        elif k == "return":
            if a.get("value") is not None:
                value = yield from self._eval(item, stream, local, a["value"], lenient=True)
                try:  # a declared `-> int` returns the number a dtype=int gen spelled (lang/ir/types.py)
                    item.result = coerce_return(value, self._fplan.returns.get("type"))
                except ValueError as e:
                    raise SglRuntimeError(str(e)) from None
        else:
            raise SglRuntimeError(f"unknown plan step kind {k!r}")

    def _gen_payload(self, stream: _Stream, text: str, step: Step) -> dict[str, Any]:
        a = step.args
        sp = dict(self.default_sampling)
        sp.update(a.get("sampling_params", {}))
        payload: dict[str, Any] = {"text": text, "sampling_params": sp}
        payload.update(self.default_options)  # run-level logprob options; the gen's own win
        for key in LOGPROB_OPTIONS:
            if key in a:
                payload[key] = a[key]
        payload.update(stream.media())
        return payload

    def _prefetch(self, item: ItemRun, stream: _Stream, text: str, ids: list[int]) -> Iterator[Any]:
        """A task sending the gen `ids[-1]` early, its prompt `text` + the constant steps before it."""
        for sid in ids[:-1]:
            s = self._fplan.step(sid)
            text += s.args["value"] if s.kind == "text" else self.template().role_begin(s.args["role"]) \
                if s.kind == "role_begin" else self.template().role_end(s.args["role"])
        payload = self._gen_payload(stream, text, self._fplan.step(ids[-1]))
        key = json.dumps(payload, sort_keys=True, default=str)
        if key in stream.prefetched:
            return
        stream.prefetched[key] = None
        self.speculated += 1
        me = self._prefetch_body(stream, key, payload)
        self._speculative[id(me)] = (stream, key)
        yield _Spawn([me])

    @staticmethod
    def _prefetch_body(stream: _Stream, key: str, payload: dict[str, Any]) -> Iterator[Any]:
        stream.prefetched[key] = yield Request(payload, solo=True)  # its own call: a lost guess fails nothing else

    def _gen(self, item: ItemRun, stream: _Stream, step: Step, path: tuple) -> Iterator[Any]:
        a = step.args
        item.meter.add_gens(1)
        payload = self._gen_payload(stream, stream.text, step)
        key = json.dumps(payload, sort_keys=True, default=str) if stream.prefetched else None
        if key in stream.prefetched and stream.prefetched[key] is None:  # sent early, not back yet
            yield _Wait(lambda: stream.prefetched.get(key) is not None or key not in stream.prefetched)
        resp = stream.prefetched.pop(key, None) if key is not None else None
        if resp is not None:
            self.speculation_hits += 1
        else:
            on_chunk = self._chunk_events(item, a["name"], path) if item.stream_tokens and item.on_event else None
            resp = yield Request(payload, on_chunk=on_chunk)
        text = resp.get("text", "")
        self._append(item, stream, text)
        stream.cached = len(stream.text)  # the engine keeps the prompt and what it generated
        # the generated text, whatever the dtype: SGLang's gen_int gives "42" (lang/gen_rules.py)
        self._set_var(item, stream, a["name"], text, resp.get("meta_info"), path)

    def _select(self, item: ItemRun, stream: _Stream, step: Step, local: dict[str, Any], path: tuple) -> Iterator[Any]:
        a = step.args
        choices = a.get("choices")
        if choices is None:
            choices = [str(c) for c in (yield from self._eval(item, stream, local, a["choices_expr"]))]
        solo = not a.get("batched")  # a select the select-lowering pass did not batch goes out alone
        if a.get("speculate"):  # each choice's continuation goes out with the scoring
            yield _Spawn([self._prefetch(item, stream, stream.text + c, a["speculate"]) for c in choices])
        try:
            scoring = score_choices(stream.text, choices, a["method"], a.get("temperature", 0.0))
            reqs = next(scoring)
            item.meter.add_gens(len(reqs))
            while True:  # the interpreter's backend drives the same protocol with run_scoring
                item.meter.add_gens(len(reqs))
                reqs = scoring.send((yield [Request({**r, **stream.media()}, solo=solo) for r in reqs]))
        except StopIteration as stop:
            index, meta = stop.value
        except ValueError as e:  # bad run-time choices (empty, not strings)
            raise SglRuntimeError(f"select {a['name']!r}: {e}") from None
        self._append(item, stream, choices[index])
        stream.cached = len(stream.text)  # the scoring protocol prefilled the prompt with every choice
        self._set_var(item, stream, a["name"], choices[index], meta, path)

    def _loop(self, item: ItemRun, stream: _Stream, step: Step, local: dict[str, Any], path: tuple) -> Iterator[Any]:
        a = step.args
        if a.get("iterable") is not None:
            value = yield from self._eval(item, stream, local, a["iterable"])
            if isinstance(value, int) and not isinstance(value, bool):
                item.meter.check_iters(value)  # before range(value) is listed
            values = _iter_values(value)
            item.meter.check_iters(len(values))
            for v in values:
                yield from self._region(item, stream, step.arms[0], dict(local, **{a["var"]: v}), path)
            return
        limit = a.get("max_iters") or 100
        item.meter.check_iters(limit)
        for _ in range(limit):
            if not (yield from self._eval(item, stream, local, a["cond"])):
                return
            yield from self._region(item, stream, step.arms[0], local, path)

    def _fork(self, item: ItemRun, stream: _Stream, step: Step, local: dict[str, Any], path: tuple) -> Iterator[Any]:
        a = step.args
        n = a["n"] if isinstance(a["n"], int) else (yield from self._eval(item, stream, local, a["n"]))
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise SglRuntimeError(f"fork count must be an int >= 1, got {n!r}")
        item.meter.add_streams(n)
        warm = stream.text + a.get("warm_suffix", "")
        if a.get("batched") and warmup_pays(warm[max(stream.cached, self._batch_shared):], n, self._count_tokens):
            # one prefill of the parent (plus the text every branch starts with) before the branches,
            # when they would otherwise each compute it (compiler/cost.py)
            item.meter.add_gens(1)
            yield Request({"text": warm, "sampling_params": dict(PREFILL)})
            stream.cached = len(stream.text)
        children = [stream.child() for _ in range(n)]
        stream.forks[step.id] = item.forks[step.id] = children
        stream.meta[("fork_start", step.id)] = len(stream.text)
        tasks = []
        for b, child in enumerate(children):
            body = step.arms[0] if a.get("shared_body") else step.arms[b]
            inner = dict(local, **({a["index_var"]: b} if a.get("index_var") else {}))
            tasks.append(self._branch_task(item, child, body, inner, path + (step.id, b)))
        yield _Spawn(tasks)

    @staticmethod
    def _chunk_events(item: ItemRun, name: str, path: tuple) -> Callable[[dict[str, Any]], None]:
        """A streamed gen's chunk callback: each new piece of text as a {"variable", "delta"} event."""
        sent = [0]

        def on_chunk(out: dict[str, Any]) -> None:
            text = out.get("text", "")
            if len(text) > sent[0] and item.on_event is not None and not item.closed:
                item.on_event(item.index, {"variable": name, "delta": text[sent[0]:], "stream": list(path)})
                sent[0] = len(text)

        return on_chunk

    def _branch_task(self, item: ItemRun, stream: _Stream, ids: list[int], local: dict[str, Any], path: tuple) -> Iterator[Any]:
        try:
            yield from self._region(item, stream, ids, local, path)
        finally:
            stream.done = True

    # ---------------- results
    def output(self, item: ItemRun) -> dict[str, Any]:
        """The JSON-able result of one finished item (as run_batch returns them, with its text)."""
        return self._output(item, self.plan.function(self._fplan.name))

    def _output(self, item: ItemRun, fplan: FunctionPlan) -> dict[str, Any]:
        if item.error is not None:  # a program's error reads as file:line:col, its source line and a caret
            msg = str(item.error) if isinstance(item.error, SglRuntimeError) and item.error.pos is not None else \
                item.error.message if hasattr(item.error, "message") else f"{type(item.error).__name__}: {item.error}"
            return {"index": item.index, "error": msg}
        variables = {k: (v if len(v) > 1 else v[0]) for k, v in item.main.history.items()}
        for k, v in item.main.vars.items():
            variables.setdefault(k, v)
        out: dict[str, Any] = {"index": item.index, "return": shape_return(fplan, item.result),
                               "variables": variables, "text": item.main.text}
        asked = {s.args["name"] for s in fplan.steps if s.kind == "gen" and s.args.get("return_logprob")}
        meta = {k: v for k, v in item.main.meta.items() if isinstance(k, str) and (k in asked or "scores" in v)}
        if meta:  # logprobs a gen asked for, and every select's choice scores
            out["meta_info"] = meta
        return out


def shape_return(fplan: FunctionPlan, value: Any) -> Any:
    kind = fplan.returns.get("kind", "none")
    if kind == "dict":
        return dict(zip(fplan.returns.get("keys", []), value or []))
    if kind == "tuple":
        return list(value or [])
    return value
