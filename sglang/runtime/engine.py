"""Engine: the in-process runtime (docs/ARCHITECTURE.md, "Engine").

    with sglang.Engine(model_path="default") as engine:
        out = engine.generate("The capital of France is", {"max_new_tokens": 16, "temperature": 0})

The model is resolved once at start-up (runtime/resolved_model.py). By default the model runner and
scheduler live in this process and the scheduler loop runs in its own thread (`engine.scheduler` is a
`ThreadScheduler`, `engine.model_runner` the real runner). With `scheduler_process=True` they live in a
spawned child process (`engine.scheduler` is a `ProcessScheduler`, runtime/scheduler_process.py);
`sglang launch-server` uses that mode. Both are `SchedulerHandle`s (runtime/scheduler_handle.py): the
constructor picks one and nothing else asks which it has. Either way callers (any number of threads,
or an asyncio loop) tokenize and validate in their own thread, hand requests to the scheduler's inbox,
and wait on a per-request state that the outputs of each scheduler step fill, as one batch.
A bad request raises ValueError before anything is allocated; the engine keeps serving the others.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import logging
import threading
from typing import Any, AsyncIterator, Callable, Iterator, Optional, Union

import torch

from sglang.runtime.detokenizer import ClientText, StopChecker
from sglang.runtime.io_struct import GenerateReqInput, ReqItem
from sglang.runtime.multimodal.preprocess import MultimodalPreprocessor, MultimodalPrompt
from sglang.runtime.resolved_model import resolve_model
from sglang.runtime.scheduler.req import TokenizedRequest
from sglang.runtime.scheduler_handle import OutputBatch, SchedulerHandle, ThreadScheduler
from sglang.runtime.scheduler_process import ProcessScheduler
from sglang.runtime.server_args import ServerArgs
from sglang.runtime.tokenizer import encode_texts, get_tokenizer
from sglang.runtime.tp_worker import prepare_tp

logger = logging.getLogger(__name__)

CALL_TIMEOUT_S = 600.0


class _ReqState:
    """Outputs of one request as the scheduler thread produces them; waitable from threads and asyncio."""

    def __init__(self, item: ReqItem, loop: Optional[asyncio.AbstractEventLoop],
                 text: Optional[ClientText] = None) -> None:
        self.item = item
        self.text = text  # makes the text of outputs that carry ids (detokenizer.ClientText)
        self.cond = threading.Condition()
        self.outs: collections.deque[dict] = collections.deque()
        self.finished = False
        self.loop = loop
        self.event = asyncio.Event() if loop is not None else None

    def push(self, out: dict, finished: bool) -> None:
        """Store an output and wake a thread waiter; an asyncio waiter is woken by `wake_loops`, once
        per event loop per batch of outputs (each call_soon_threadsafe writes the loop's self-pipe)."""
        with self.cond:
            self.outs.append(out)
            self.finished = self.finished or finished
            self.cond.notify_all()

    def take(self) -> list[dict]:
        """The outputs so far, their text made here, in the consumer's thread (off the scheduler's)."""
        with self.cond:
            outs = list(self.outs)
            self.outs.clear()
        return outs if self.text is None else [self.text.fill(o) for o in outs]

    def wait_sync(self, timeout: Optional[float] = None) -> list[dict]:
        with self.cond:
            self.cond.wait_for(lambda: bool(self.outs), timeout)
        return self.take()

    async def wait_async(self, alive: Callable[[], bool], died: Callable[[], Exception]) -> list[dict]:
        while True:
            outs = self.take()
            if outs:
                return outs
            try:
                await asyncio.wait_for(self.event.wait(), 1.0)
            except asyncio.TimeoutError:
                if not alive():
                    raise died() from None
                continue
            self.event.clear()


def wake_loops(states: list[_ReqState]) -> None:
    """One call_soon_threadsafe per event loop for all the asyncio waiters among `states`."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for st in states:
        if st.loop is not None:
            by_loop.setdefault(st.loop, []).append(st.event)
    for loop, events in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, events)
        except RuntimeError:  # the caller's loop is gone; nobody is waiting any more
            pass


def _set_all(events: list[asyncio.Event]) -> None:
    for ev in events:
        ev.set()


def _check_text(text: str, field: str, max_chars: int, context_len: int) -> None:
    """ValueErrors for text no tokenizer should see: a lone surrogate, or far too long for the context."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{field}: lone surrogate \\u{ord(text[exc.start]):04x} at position {exc.start}; "
                         "send valid Unicode") from None
    if len(text) > max_chars:
        raise ValueError(f"{field}: the prompt has {len(text)} characters, more than the context length of "
                         f"{context_len} tokens can hold")


def _check_stop_regex(patterns: tuple[str, ...]) -> None:
    """Compile the stop regexes with the stop checker the scheduler will use, so a bad one is a 400 now."""
    if patterns:
        try:
            StopChecker(stop_regex=patterns)
        except Exception as exc:  # re.error is not a ValueError
            raise ValueError(f"sampling_params.stop_regex: invalid regular expression: {exc}") from None


class Engine:
    def __init__(self, model_path: Optional[str] = None, **kwargs: Any) -> None:
        if model_path is not None:
            kwargs["model_path"] = model_path
        self.server_args = ServerArgs.from_kwargs(**kwargs)
        self._lock = threading.Lock()
        self._states: dict[str, _ReqState] = {}
        self._groups: dict[str, list[str]] = {}  # caller rid -> internal rids (n samples)
        self._closed = False
        self.process_mode = bool(self.server_args.scheduler_process)
        # resolved here, once (a GGUF is converted once, not by every process that needs the model)
        model = resolve_model(self.server_args)
        self._tp_workers = None  # tp_size > 1: ranks 1.. (rank 0 runs with the scheduler)
        if self.server_args.tp_size > 1:
            self.server_args, self._tp_workers = prepare_tp(self.server_args, model)
        handle_type = ProcessScheduler if self.process_mode else ThreadScheduler
        self.scheduler: Any = None
        try:
            # a scheduler process boots while this process loads its tokenizer
            self.scheduler = handle_type(self.server_args, model, self._on_outputs)
            self.tokenizer = get_tokenizer(self.server_args.tokenizer_path or model.path)
            info = self.scheduler.wait_ready(self.tokenizer)
        except BaseException:
            if self.scheduler is not None:
                self.scheduler.stop()
                self.scheduler.join(timeout=30)
            self._join_tp_workers(timeout=0)
            raise
        # kept past shutdown (when `scheduler` becomes _Closed): a waiter still asks whether it lives
        self._handle: SchedulerHandle = self.scheduler
        self.model_runner = self.scheduler.runner  # None when the model lives in the scheduler process
        self._constraints = self.scheduler.constraints
        self.vocab_size, self.context_len = int(info["vocab_size"]), int(info["context_len"])
        self.pool_size = int(info["pool_size"])
        self._longest_token: Optional[int] = None  # see max_prompt_chars
        # vision-language models: images are decoded and cut into crops here, in a worker pool (never on
        # the scheduler's step); None for a text-only model, whose image_data is a clear 400
        self.multimodal: Optional[MultimodalPreprocessor] = None
        if model.config.vision is not None:
            self.multimodal = MultimodalPreprocessor(model.path, model.config.vision, self.vocab_size)

    @property
    def is_multimodal(self) -> bool:
        return self.multimodal is not None

    def _alive(self) -> bool:
        """Whether outputs can still arrive (the scheduler thread, or the scheduler process's receiver)."""
        return self._handle.is_alive()

    def _died(self) -> RuntimeError:
        return RuntimeError(f"the scheduler {self._handle.kind} died")

    # -- requests -----------------------------------------------------------------------------------
    def generate(
        self,
        text: Union[str, list[str], None] = None,
        sampling_params: Union[dict, list, None] = None,
        input_ids: Union[list[int], list[list[int]], None] = None,
        return_logprob: Union[bool, list[bool]] = False,
        logprob_start_len: Union[int, list[int], None] = None,
        top_logprobs_num: Union[int, list[int], None] = None,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        rid: Union[str, list[str], None] = None,
        image_data: Any = None,
        video_data: Any = None,
    ) -> Union[dict, list[dict], Iterator[dict]]:
        obj = GenerateReqInput(text, input_ids, sampling_params, return_logprob, logprob_start_len,
                               top_logprobs_num, return_text_in_logprobs, stream, rid, image_data, video_data)
        items, tokenized = self._prepare(obj)
        if stream:
            return self._stream_sync(items, tokenized)
        states = self._submit(items, tokenized, loop=None)
        try:
            results = [self._final_sync(s) for s in states]
        except BaseException:
            self._abort_states(states)
            raise
        return results[0] if obj.single_output() else results

    def async_generate(
        self,
        text: Union[str, list[str], None] = None,
        sampling_params: Union[dict, list, None] = None,
        input_ids: Union[list[int], list[list[int]], None] = None,
        return_logprob: Union[bool, list[bool]] = False,
        logprob_start_len: Union[int, list[int], None] = None,
        top_logprobs_num: Union[int, list[int], None] = None,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        rid: Union[str, list[str], None] = None,
        image_data: Any = None,
        video_data: Any = None,
        *,
        coalesce: bool = False,
    ):
        """Validates now (ValueError raised here); returns a coroutine, or an async iterator when stream.

        coalesce (stream only): when the consumer falls behind and several outputs are pending, yield
        only the latest; outputs are cumulative (full text and meta_info), so nothing is lost but
        intermediate snapshots (what an HTTP server wants when its event loop is the bottleneck)."""
        obj = GenerateReqInput(text, input_ids, sampling_params, return_logprob, logprob_start_len,
                               top_logprobs_num, return_text_in_logprobs, stream, rid, image_data, video_data)
        items, tokenized = self._prepare(obj)
        if stream:
            return self._stream_async(items, tokenized, coalesce)
        return self._final_async(items, tokenized, obj.single_output())

    def abort(self, rid: str) -> None:
        """Abort a request (all its samples) by the rid the caller gave; unknown/finished rids are ignored."""
        with self._lock:
            internal = list(self._groups.get(rid, ()))
        for r in internal:
            self.scheduler.abort(r)

    # -- validation and submission ----------------------------------------------------------------
    def _prepare(self, obj: GenerateReqInput) -> tuple[list[ReqItem], list[TokenizedRequest]]:
        if self._closed:
            raise RuntimeError("the engine is shut down")
        items = obj.normalize()
        if obj.stream and len(items) != 1:
            raise ValueError("stream=True needs a single prompt with n=1 (send several requests instead)")
        prompt_cache: dict[int, tuple[list[int], Optional[MultimodalPrompt]]] = {}
        encoded = self._encode_batch(items)
        tokenized = []
        for it in items:
            where = f"request {it.index}: " if obj.is_batch else ""
            if it.index not in prompt_cache:  # n samples of a prompt share its ids and images
                prompt_cache[it.index] = self._prompt(it, where, encoded.get(it.index))
            ids, mm = prompt_cache[it.index]
            sp = it.sampling_params
            try:
                sp.verify(self.vocab_size, self.context_len, len(ids))
                self._check_fits_pool(len(ids), sp.max_new_tokens)
                _check_stop_regex(sp.stop_regex)
                if self._constraints is not None:
                    self._constraints.prepare(sp)
                elif sp.constraint is not None:
                    raise ValueError(f"sampling_params.{sp.constraint[0]}: constrained decoding is not available")
            except ValueError as e:
                raise ValueError(f"{where}{e}") from None
            if it.logprob_start_len > len(ids):
                raise ValueError(f"{where}logprob_start_len={it.logprob_start_len} is past the prompt's {len(ids)} tokens")
            tokenized.append(TokenizedRequest(
                rid=it.rid, input_ids=ids, sampling_params=sp, input_text=it.text,
                return_logprob=it.return_logprob, logprob_start_len=it.logprob_start_len,
                top_logprobs_num=it.top_logprobs_num, return_text_in_logprobs=it.return_text_in_logprobs,
                stream=it.stream, mm_items=mm.items if mm else None, key_ids=mm.key_ids if mm else None,
            ))
        return items, tokenized

    def _check_fits_pool(self, prompt_len: int, max_new_tokens: int) -> None:
        """A request that cannot fit the KV pool even alone would be admitted and aborted mid-way."""
        if prompt_len + max_new_tokens > self.pool_size:
            raise ValueError(f"sampling_params.max_new_tokens={max_new_tokens} plus the prompt's {prompt_len} "
                             f"tokens needs more than the KV cache's {self.pool_size} tokens (max_total_tokens)")

    def max_prompt_chars(self) -> int:
        """Characters above which a text surely has more tokens than the context (a token covers at most
        its longest vocabulary string, taken twice for normalizers), so it is refused before tokenizing."""
        if self._longest_token is None:
            vocab = self.tokenizer.get_vocab() if hasattr(self.tokenizer, "get_vocab") else {}
            self._longest_token = max((len(t) for t in vocab), default=64)
        return 2 * self._longest_token * self.context_len

    def _encode_batch(self, items: list[ReqItem]) -> dict[int, list[int]]:
        """Token ids of a batch's valid text prompts by prompt index, encoded in one batched tokenizer
        call (`encode_texts`); a text that fails `_check_text` is left to `_prompt_ids`, which reports
        it in request order."""
        texts: dict[int, str] = {}
        for it in items:
            if it.input_ids is not None or it.text is None or it.index in texts:
                continue
            try:
                _check_text(it.text, "text", self.max_prompt_chars(), self.context_len)
            except ValueError:
                continue
            texts[it.index] = it.text
        if len(texts) < 2:
            return {}
        return dict(zip(texts, encode_texts(self.tokenizer, list(texts.values()))))

    def _prompt(self, it: ReqItem, where: str, encoded: Optional[list[int]] = None
                ) -> tuple[list[int], Optional[MultimodalPrompt]]:
        """The prompt's token ids (`encoded`: already tokenized), its images/videos expanded in them (then
        checked against the limits)."""
        ids = self._prompt_ids(it, where, encoded)
        if it.image_data is None and it.video_data is None:
            return ids, None
        field = "image_data" if it.image_data is not None else "video_data"
        if self.multimodal is None:
            raise ValueError(f"{where}{field}: the model is text-only (images and videos need a vision-language "
                             "model such as LLaVA)")
        try:
            mm = self.multimodal.prepare(ids, it.image_data, it.video_data)
        except ValueError as e:
            raise ValueError(f"{where}{field}: {e}") from None
        self._check_prompt_len(mm.input_ids, where, field)
        return mm.input_ids, mm

    def _prompt_ids(self, it: ReqItem, where: str, encoded: Optional[list[int]] = None) -> list[int]:
        if it.input_ids is not None:
            ids = it.input_ids
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"{where}input_ids contains {bad[0]}, outside the vocabulary [0, {self.vocab_size})")
            field = "input_ids"
        elif encoded is not None:
            field, ids = "text", encoded
        else:
            field = "text"
            _check_text(it.text, f"{where}{field}", self.max_prompt_chars(), self.context_len)
            ids = list(self.tokenizer.encode(it.text))
        if not ids:
            raise ValueError(f"{where}{field}: the prompt is empty")
        self._check_prompt_len(ids, where, field)
        return ids

    def _check_prompt_len(self, ids: list[int], where: str, field: str) -> None:
        if len(ids) >= self.context_len:
            raise ValueError(f"{where}{field}: the prompt has {len(ids)} tokens, the context length is {self.context_len}")
        if len(ids) + 1 > self.pool_size:
            raise ValueError(f"{where}{field}: the prompt has {len(ids)} tokens but the KV cache holds only "
                             f"{self.pool_size} (max_total_tokens)")

    def _submit(self, items: list[ReqItem], tokenized: list[TokenizedRequest],
                loop: Optional[asyncio.AbstractEventLoop]) -> list[_ReqState]:
        states = [_ReqState(it, loop, ClientText(self.tokenizer, t.sampling_params, t.input_ids))
                  for it, t in zip(items, tokenized)]
        with self._lock:
            for it in items:
                if it.rid in self._states:
                    raise ValueError(f"rid {it.group!r} is already in use by a running request")
            for st in states:
                self._states[st.item.rid] = st
                self._groups.setdefault(st.item.group, []).append(st.item.rid)
        for t in tokenized:
            self.scheduler.submit(t)
        return states

    def _on_outputs(self, batch: OutputBatch) -> None:
        """Scheduler thread (or the scheduler process's receiver thread): deliver one step's outputs
        to the waiting callers."""
        targets = []
        with self._lock:
            for rid, out, finished in batch:
                st = self._states.get(rid)
                if st is None:
                    continue
                if finished:
                    del self._states[rid]
                    group = self._groups.get(st.item.group)
                    if group is not None:
                        group.remove(rid)
                        if not group:
                            del self._groups[st.item.group]
                targets.append((st, out, finished))
        for st, out, finished in targets:
            st.push(out, finished)
        wake_loops([st for st, _, _ in targets])

    def _abort_states(self, states: list[_ReqState]) -> None:
        for s in states:
            if not s.finished:
                self.scheduler.abort(s.item.rid)

    # -- waiting --------------------------------------------------------------------------------------
    @staticmethod
    def _is_final(out: dict) -> bool:
        return out["meta_info"]["finish_reason"] is not None

    def _final_sync(self, st: _ReqState) -> dict:
        while True:
            for out in st.wait_sync(timeout=1.0):
                if self._is_final(out):
                    return out
            if not self._alive() and not st.finished:
                raise self._died()

    def _stream_sync(self, items: list[ReqItem], tokenized: list[TokenizedRequest]) -> Iterator[dict]:
        (st,) = self._submit(items, tokenized, loop=None)

        def gen() -> Iterator[dict]:
            done = False
            try:
                while not done:
                    for out in st.wait_sync(timeout=1.0):
                        done = self._is_final(out)
                        yield out
                    if not done and not self._alive():
                        raise self._died()
            finally:
                if not done:  # the consumer stopped early
                    self.scheduler.abort(st.item.rid)

        return gen()

    async def _final_async(self, items: list[ReqItem], tokenized: list[TokenizedRequest], single: bool):
        states = self._submit(items, tokenized, loop=asyncio.get_running_loop())
        results: list[Optional[dict]] = [None] * len(states)
        try:
            for i, st in enumerate(states):
                while results[i] is None:
                    for out in await st.wait_async(self._alive, self._died):
                        if self._is_final(out):
                            results[i] = out
        except BaseException:  # cancelled (client went away): stop the work
            self._abort_states(states)
            raise
        return results[0] if single else results

    async def _stream_async(self, items: list[ReqItem], tokenized: list[TokenizedRequest],
                            coalesce: bool = False) -> AsyncIterator[dict]:
        (st,) = self._submit(items, tokenized, loop=asyncio.get_running_loop())
        done = False
        try:
            while not done:
                outs = await st.wait_async(self._alive, self._died)
                for out in outs[-1:] if coalesce else outs:  # cumulative: the last carries everything
                    done = self._is_final(out)
                    yield out
        finally:
            if not done:
                self.scheduler.abort(st.item.rid)

    # -- maintenance ------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        """Scheduler.<method>(*args) in the scheduler's thread (a name, so it also crosses processes)."""
        if self._closed:
            raise RuntimeError("the engine is shut down")
        return self.scheduler.call(method, *args).result(timeout=CALL_TIMEOUT_S)

    def flush_cache(self) -> bool:
        """Drop the prefix cache; only when idle (returns False otherwise)."""
        return self._call("flush_cache")

    def stats(self) -> dict[str, Any]:
        st = self._call("stats")
        prompt = st["prefill_tokens"] + st["cached_tokens"]
        st["cache_hit_rate"] = st["cached_tokens"] / prompt if prompt else 0.0
        return st

    def check_invariant(self) -> None:
        """AssertionError unless, idle, free + evictable == pool size and nothing is locked or leaked."""
        self._call("check_invariant")

    def _join_tp_workers(self, timeout: float = 30.0) -> None:
        if self._tp_workers is not None:
            self._tp_workers.join(timeout)
            self._tp_workers = None

    def get_server_args(self) -> ServerArgs:
        return self.server_args

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.scheduler.stop()
        # the scheduler fails what is in flight and exits (a process is killed if it does not); a thread
        # scheduler also releases its model, KV pool and graphs
        self.scheduler.join(timeout=60)
        self.scheduler = _Closed()
        self.model_runner = None
        if self.multimodal is not None:
            self.multimodal.shutdown()
        self._join_tp_workers()
        # free the released memory now, so that another Engine in this process gets it
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class _Closed:
    """Stands in for the scheduler after shutdown: aborts are no-ops, anything else is an error."""

    def abort(self, rid: str) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the engine is shut down")
