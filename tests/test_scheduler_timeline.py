"""The forward timeline (scheduler/timeline.py) and its summary (benchmarks/timeline_summary.py): off by
default, one record per forward whose counts agree with the scheduler's counters, bounded memory, runs cut
at flush_cache, and the tiny dummy-weight engine writing one through SGLANG_TIMELINE."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from scheduler_toy_runner import ToyRunner
from test_scheduler_toy import Harness, shared_prefix_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import timeline_summary  # noqa: E402

from sglang.runtime.scheduler import timeline as timeline_mod  # noqa: E402
from sglang.runtime.scheduler.timeline import TimelineRunner  # noqa: E402


def steps_of(path: str) -> list[dict]:
    return [r for r in map(json.loads, open(path)) if r["kind"] == "step"]


def burst(h: Harness, groups: int, per_group: int, prefix: int, out: int = 4, tag: str = "") -> int:
    n = 0
    for g in range(groups):
        for p in shared_prefix_prompts(per_group, prefix, seed=g):
            h.submit(f"{tag}g{g}r{n}", p, out)
            n += 1
    h.run()
    return n


def test_off_by_default_and_the_runner_is_the_models_own(monkeypatch):
    monkeypatch.delenv(timeline_mod.ENV, raising=False)
    h = Harness()
    assert h.sched.timeline is None
    assert h.sched.prefill.runner is h.runner and h.sched.decode.runner is h.runner
    assert h.sched.flush_timeline() is None


def test_records_agree_with_the_counters_and_the_summary(tmp_path):
    h = Harness(chunked_prefill_size=128, enable_mixed_chunk=True)
    path = h.sched.set_timeline(str(tmp_path / "tl.jsonl"))
    n = burst(h, groups=3, per_group=5, prefix=150)
    h.sched.flush_timeline()
    steps = steps_of(path)
    c = h.sched.counters
    modes = [s["mode"] for s in steps]
    assert modes.count("decode") == c["forward_decode"] > 0
    assert modes.count("extend") + modes.count("mixed") == c["forward_extend"]
    assert modes.count("mixed") == c["forward_mixed"] > 0
    assert len(h.runner.batches) == len(steps)  # one record per forward
    assert [s["rows"] for s in steps] == [b[1] for b in h.runner.batches]
    ext = [s for s in steps if s["mode"] != "decode"]
    assert sum(s["extend_tokens"] - s.get("mixed_rows", 0) for s in ext) == c["prefill_tokens"]
    assert sum(s["prefix_tokens"] for s in ext) >= c["cached_tokens"] > 0  # chunks continue on their own prefix
    for key in ("arrived", "admitted", "first_tokens"):
        assert sum(s.get(key, 0) for s in steps) == n, key
    assert all(s["t0"] <= s["t_fwd"] <= s["t1"] and s["device_ms"] is None and s["graph"] is False for s in steps)
    assert steps[-1]["running"] == steps[-1]["waiting"] == 0

    run = timeline_summary.summarize_file(path)["runs"]
    assert len(run) == 1
    r = run[0]
    assert sum(m["steps"] for m in r["modes"].values()) == r["steps"] == len(steps)
    assert r["modes"]["decode"]["steps"] == c["forward_decode"]
    assert r["modes"]["decode"]["tokens"] == sum(s["rows"] for s in steps if s["mode"] == "decode")
    a = r["admission"]
    assert a["requests_arrived"] == a["requests_admitted"] == a["first_tokens"] == n
    last_first = max(i for i, s in enumerate(steps) if s.get("first_tokens"))
    assert a["extend_rounds_until_last_first_token"] == sum(s["mode"] != "decode" for s in steps[: last_first + 1])
    assert a["last_first_token_s"] == pytest.approx(steps[last_first]["t1"] - steps[0]["t0"])
    assert a["arrival_p50_s"] == a["first_arrival_s"] == 0.0  # all queued before the first step
    half = next(i for i in range(len(steps)) if 2 * sum(s.get("first_tokens", 0) for s in steps[: i + 1]) >= n)
    assert a["first_token_p50_s"] == pytest.approx(steps[half]["t1"] - steps[0]["t0"])
    assert a["first_token_p50_s"] < a["last_first_token_s"]
    assert sum(b["steps"] for b in r["decode_by_batch_size"].values()) == c["forward_decode"]
    span = steps[-1]["t1"] - steps[0]["t0"]
    assert r["span_s"] == pytest.approx(span)
    busy = sum(m["wall_s"] for m in r["modes"].values())
    assert r["between_steps_s"] == pytest.approx(span - busy) and r["gaps"]["total_s"] == pytest.approx(span - busy)
    text = timeline_summary.format_run(0, r)
    assert f"{n} admitted" in text and "decode by batch size" in text


def test_flush_cache_marks_cut_the_file_into_runs(tmp_path):
    h = Harness()
    path = h.sched.set_timeline(str(tmp_path / "tl.jsonl"))
    burst(h, groups=2, per_group=3, prefix=40)
    assert h.sched.flush_cache()
    burst(h, groups=1, per_group=4, prefix=40, tag="b")
    h.sched.flush_timeline()
    meta, runs = timeline_summary.load(path)
    assert meta["kind"] == "meta" and meta["pool_tokens"] == 4096
    assert [sum(s.get("admitted", 0) for s in r) for r in runs] == [6, 4]


def test_memory_stays_bounded_and_steps_are_written_during_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(timeline_mod, "FLUSH_EVERY", 4)
    h = Harness()
    path = h.sched.set_timeline(str(tmp_path / "tl.jsonl"))
    seen = []

    def on_step(_):
        seen.append((len(h.sched.timeline._records), len(steps_of(path))))

    for i in range(6):
        h.submit(f"r{i}", [3 + i, 4, 5], 12)
    h.run(on_step=on_step)
    assert max(k for k, _ in seen) < 4  # written out at each 4th step (CPU: nothing to wait for)
    assert seen[-1][1] >= len(h.runner.batches) - 3
    h.sched.flush_timeline()
    assert len(steps_of(path)) == len(h.runner.batches)


def test_env_var_fills_in_the_pid_and_a_second_scheduler_writes_apart(tmp_path, monkeypatch):
    monkeypatch.setenv(timeline_mod.ENV, str(tmp_path / "tl-{pid}.jsonl"))
    a, b = Harness(), Harness()
    want = str(tmp_path / f"tl-{os.getpid()}.jsonl")
    assert a.sched.timeline.path == want and b.sched.timeline.path == want + ".1"
    assert isinstance(a.sched.prefill.runner, TimelineRunner)
    a.submit("x", [5, 6], 3)
    a.run()
    a.sched.flush_timeline()
    assert len(steps_of(want)) == 3 and steps_of(want + ".1") == []
    assert a.sched.set_timeline(None) is None and a.sched.prefill.runner is a.runner


def test_a_cuda_graph_replay_is_recorded_as_such(tmp_path):
    class Graphs:  # the runner's own test decides: here, decode batches of up to 2 rows
        def can_run(self, batch):
            return batch.mode.is_decode() and batch.batch_size <= 2

    h = Harness()
    h.runner.cuda_graph_runner = Graphs()
    path = h.sched.set_timeline(str(tmp_path / "tl.jsonl"))
    for i, n in enumerate((2, 4, 6)):  # the running batch shrinks from 3 rows to 1
        h.submit(f"r{i}", [7 + i, 8], n)
    h.run()
    h.sched.flush_timeline()
    graph = {(s["mode"], s["rows"], s["graph"]) for s in steps_of(path)}
    assert ("decode", 3, False) in graph and ("decode", 2, True) in graph and ("decode", 1, True) in graph
    assert not any(g for m, _, g in graph if m != "decode")


def test_the_tiny_dummy_engine_writes_a_timeline_through_the_environment(tiny_llama_path, tmp_path, monkeypatch):
    import sglang

    monkeypatch.setenv(timeline_mod.ENV, str(tmp_path / "engine-{pid}.jsonl"))
    prompts = [p for g in range(3) for p in shared_prefix_prompts(4, 80, seed=g)]
    with sglang.Engine(model_path=tiny_llama_path, load_format="dummy", dtype="float32",
                       max_total_tokens=20000, chunked_prefill_size=96) as engine:
        engine.generate(input_ids=prompts, sampling_params={"max_new_tokens": 5, "temperature": 0, "ignore_eos": True})
        path = engine.scheduler.call("flush_timeline").result()
        engine_backend = engine.scheduler.call(lambda sched: sched.runner.attn_backend).result()
        stats = engine.stats()
    meta, runs = timeline_summary.load(path)
    assert meta["chunked_prefill_size"] == 96 and len(runs) == 1
    steps = runs[0]
    assert sum(s["mode"] == "decode" for s in steps) == stats["forward_decode"]
    assert sum(s["mode"] != "decode" for s in steps) == stats["forward_extend"]
    assert sum(s["extend_tokens"] for s in steps if s["mode"] == "extend") == stats["prefill_tokens"]
    assert max(s["extend_tokens"] for s in steps if s["mode"] == "extend") <= 96
    assert {s.get("attn") for s in steps if s["mode"] == "extend"} == {type(engine_backend).__name__}
    assert all("attn" not in s for s in steps if s["mode"] == "decode")
    r = timeline_summary.summarize_run(steps)
    assert r["admission"]["first_tokens"] == r["admission"]["requests_admitted"] == len(prompts)
    assert r["modes"]["decode"]["tokens"] == 4 * len(prompts)  # 5 tokens each, the first from the extend


def test_summary_cli_prints_every_run_and_writes_json(tmp_path, capsys):
    h = Harness()
    path = h.sched.set_timeline(str(tmp_path / "tl.jsonl"))
    burst(h, groups=1, per_group=3, prefix=40)
    h.sched.flush_cache()
    burst(h, groups=1, per_group=2, prefix=40, tag="b")
    h.sched.flush_timeline()
    out = timeline_summary.main([path, "--json", str(tmp_path / "s.json")])
    text = capsys.readouterr().out
    assert "run 0:" in text and "run 1:" in text
    assert json.loads((tmp_path / "s.json").read_text())["runs"][1]["admission"]["requests_admitted"] == 2
    assert out["runs"][0]["admission"]["requests_admitted"] == 3


def test_serving_arms_labels_each_dataset_run_of_a_timeline(tmp_path):
    import serving_arms

    h = Harness()
    path = h.sched.set_timeline(str(tmp_path / "timeline_full-{pid}.jsonl"))
    burst(h, groups=1, per_group=1, prefix=10, tag="warm")  # a start-up warm-up before the first flush
    for tag, per_group in (("a", 3), ("b", 5)):
        assert h.sched.flush_cache()
        burst(h, groups=1, per_group=per_group, prefix=40, tag=tag)
    h.sched.flush_timeline()
    _, steps = timeline_summary.load(path)
    client_start = steps[2][0]["t0"] - 2.0  # the client of the last run started sending 2 s before its first step
    out = serving_arms.summarize_timelines(str(tmp_path / "timeline_full-{pid}.jsonl"), ["random", "shared_prefix"],
                                           quiet_s=0.01, origins={"shared_prefix": client_start})
    runs = out[os.path.basename(path)]["runs"]
    assert list(runs) == ["startup", "random", "shared_prefix"]
    assert [r["admission"]["requests_admitted"] for r in runs.values()] == [1, 3, 5]
    last = runs["shared_prefix"]
    assert last["origin"] == "client start" and last["first_step_s"] == pytest.approx(2.0)
    assert last["admission"]["first_arrival_s"] == pytest.approx(2.0)
    assert runs["random"]["first_step_s"] == 0.0 and runs["random"]["admission"]["first_arrival_s"] == 0.0


def test_retracted_requests_count_one_admission_and_one_first_token_each(tmp_path):
    h = Harness(ToyRunner(pool_size=120))
    path = h.sched.set_timeline(str(tmp_path / "tl.jsonl"))
    for i, p in enumerate(shared_prefix_prompts(12, 20, seed=1)):
        h.submit(f"r{i}", p, max_new_tokens=40)
    h.run()
    h.sched.flush_timeline()
    assert h.sched.counters["retractions"] > 0
    steps = steps_of(path)
    assert sum(s["rows"] for s in steps if s["mode"] == "extend") > 12  # re-prefills after the retractions
    assert sum(s.get("admitted", 0) for s in steps) == sum(s.get("first_tokens", 0) for s in steps) == 12
