"""Runtime start-up: the two SchedulerHandles (thread, process) behave the same through one interface, the
Engine resolves the model once, and runtime/process.py stops a child that ignores SIGTERM.

Heavy imports stay inside the tests: a spawned child imports this module by name.
"""
from __future__ import annotations

import signal
import threading

import pytest

GREEDY = {"temperature": 0, "max_new_tokens": 6, "ignore_eos": True}
ARGS = dict(load_format="dummy", dtype="float32", device="cpu", max_total_tokens=2048)


def _run_handle(handle_type, tiny_llama_path: str) -> tuple[dict, dict, bool]:
    """Drive one handle through the SchedulerHandle interface only: two greedy requests, then stats."""
    from sglang.runtime.resolved_model import resolve_model
    from sglang.runtime.sampling.sampling_params import SamplingParams
    from sglang.runtime.scheduler.req import TokenizedRequest
    from sglang.runtime.server_args import ServerArgs
    from sglang.runtime.tokenizer import get_tokenizer

    args = ServerArgs(model_path=tiny_llama_path, **ARGS)
    model = resolve_model(args)
    finals: dict[str, dict] = {}
    done = threading.Event()

    def on_outputs(batch: list) -> None:
        for rid, out, finished in batch:
            if finished:
                finals[rid] = out
        if len(finals) == 2:
            done.set()

    handle = handle_type(args, model, on_outputs)
    try:
        tokenizer = get_tokenizer(model.path)
        info = handle.wait_ready(tokenizer)
        for rid, text in (("a", "The capital of France is"), ("b", "def fib(n):")):
            handle.submit(TokenizedRequest(rid=rid, input_ids=tokenizer.encode(text),
                                           sampling_params=SamplingParams.from_dict(GREEDY)))
        assert done.wait(120), "no final outputs"
        stats = handle.call("stats").result(timeout=60)
        assert handle.is_alive()
    finally:
        handle.stop()
        handle.join(timeout=60)
    assert not handle.is_alive() and handle.runner is None  # join released the model (thread) / child
    return finals, {k: info[k] for k in ("vocab_size", "context_len", "pool_size")}, stats["running"] == 0


def test_thread_and_process_handles_give_the_same_outputs(tiny_llama_path):
    from sglang.runtime.scheduler_handle import ThreadScheduler
    from sglang.runtime.scheduler_process import ProcessScheduler

    thread = _run_handle(ThreadScheduler, tiny_llama_path)
    proc = _run_handle(ProcessScheduler, tiny_llama_path)
    assert thread == proc
    finals, _, idle = thread
    assert idle and sorted(finals) == ["a", "b"]
    assert all(o["meta_info"]["completion_tokens"] == GREEDY["max_new_tokens"] for o in finals.values())


def test_engine_resolves_the_model_once_and_picks_the_thread_handle(tiny_llama_path, monkeypatch):
    from sglang.runtime import model_config
    from sglang.runtime.engine import Engine
    from sglang.runtime.scheduler_handle import ThreadScheduler

    calls = []
    original = model_config.ModelConfig.from_path.__func__

    def counting(cls, path, context_length=None):
        calls.append(path)
        return original(cls, path, context_length)

    monkeypatch.setattr(model_config.ModelConfig, "from_path", classmethod(counting))
    with Engine(model_path=tiny_llama_path, **ARGS) as engine:
        assert isinstance(engine.scheduler, ThreadScheduler)
        assert engine.model_runner is engine.scheduler.runner is not None
        assert engine.generate("Hello", GREEDY)["meta_info"]["completion_tokens"] == GREEDY["max_new_tokens"]
    assert calls == [tiny_llama_path]


def test_resolve_model_errors_name_the_path(tmp_path):
    from sglang.runtime.resolved_model import resolve_model
    from sglang.runtime.server_args import ServerArgs

    with pytest.raises(ValueError, match="does not exist"):
        resolve_model(ServerArgs(model_path=str(tmp_path / "missing")))


def _ignore_sigterm_then_sleep(conn) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send("ready")
    conn.recv()  # blocks until killed: the parent never sends (no clock involved)


def test_stop_process_kills_a_child_that_ignores_terminate():
    from sglang.runtime.process import SPAWN, spawn, stop_process

    parent, child = SPAWN.Pipe()
    proc = spawn(_ignore_sigterm_then_sleep, (child,), name="sglang-test-stubborn")
    try:
        assert parent.poll(120) and parent.recv() == "ready"  # SIGTERM is ignored from here on
        stop_process(proc, 0.1)
        assert not proc.is_alive() and proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
