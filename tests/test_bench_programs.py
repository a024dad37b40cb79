"""benchmarks/bench_programs.py, the program benchmark: the harness end to end at a tiny size on CPU (our
arms only; the SGLang 0.2.10 arm needs its own install and runs in benchmarks), and its pure parts.

The end-to-end run is a child process with a time limit, so a hung arm fails the test instead of the suite.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_programs  # noqa: E402
import programs  # noqa: E402

slow = pytest.mark.slow  # the end-to-end run loads the real default model

TRACEABLE = ("llm_judge", "skeleton_of_thought", "tiny_calls", "json_regex", "tree_of_thought")  # nested forks too
ITEMS = 2


def test_program_modules_import_only_sglang_and_the_standard_library():
    """The same text must run on the real sglang==0.2.10: nothing of our package beyond `import sglang`."""
    for name in programs.CLASSES:
        tree = ast.parse((BENCH / "programs" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert [a.name for a in node.names] == ["sglang"], (name, ast.dump(node))
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 1 and node.module is None, (name, ast.dump(node))  # `from . import tokens`


def test_rows_are_deterministic_and_sized():
    for name in programs.CLASSES:
        mod = programs.load(name)
        assert mod.rows(5) == mod.rows(5) and len(mod.rows(5)) == 5 and len(mod.rows(0)) == 0
        assert len({json.dumps(r, sort_keys=True) for r in mod.rows(8)}) == 8, name  # distinct items
    with pytest.raises(ValueError, match="unknown program class"):
        programs.load("nope")


def test_same_outputs_counts_only_items_equal_in_both_runs():
    ref = [{"value": "a", "text": "xa"}, {"value": "b", "text": "xb"}, {"error": "boom"}]
    other = [{"value": "a", "text": "ya"}, {"value": "c", "text": "xb"}, {"error": "boom"}]
    assert bench_programs.same_outputs(ref, other) == 1
    assert bench_programs.same_outputs(ref, other, "text") == 1
    assert bench_programs.same_outputs(ref, ref) == 2  # failed items never count as equal


def test_summarize_takes_the_median_wall_and_compare_the_ratio():
    runs = [{"wall": w, "calls": 3, "prefill": 10, "cached": 5, "errors": 0, "outputs": [{"value": 1}]}
            for w in (4.0, 1.0, 2.0)]
    cells = {"ref": bench_programs.summarize(runs),
             "fast": bench_programs.summarize([dict(runs[0], wall=0.5)]),
             "broken": bench_programs.summarize([{"error": "TraceError: x"}])}
    bench_programs.compare(cells, "ref")
    assert cells["ref"]["wall"] == 2.0 and cells["ref"]["walls"] == [4.0, 1.0, 2.0]
    assert cells["fast"]["speedup"] == 4.0 and cells["fast"]["same"] == 1
    assert cells["broken"] == {"error": "TraceError: x", "trace": None}


def test_request_prompts_reads_single_and_batched_texts_and_token_ids():
    rp = bench_programs.request_prompts
    assert rp(json.dumps({"text": "a", "sampling_params": {}}).encode()) == ["a"]
    warm = {"max_new_tokens": 0}  # a cache warm-up: left out, unless it is scored
    assert rp(json.dumps({"text": "a", "sampling_params": warm}).encode()) == []
    assert rp(json.dumps({"text": ["a", "b"], "sampling_params": [warm, {}]}).encode()) == ["b"]
    assert rp(json.dumps({"text": ["a", "b"], "sampling_params": warm, "return_logprob": [True, False]}).encode()) == ["a"]
    assert rp(json.dumps({"text": ["a", "b"]}).encode()) == ["a", "b"]
    assert rp(json.dumps({"input_ids": [1, 2]}).encode()) == [(1, 2)]
    assert rp(json.dumps({"input_ids": [[1], [2, 3]]}).encode()) == [(1,), (2, 3)]
    assert rp(b"not json") == [] and rp(b"[1]") == []


def test_same_prompts_counts_the_reference_runs_distinct_prompts_sent_by_the_other():
    assert bench_programs.same_prompts(["a", "a", "b", "c"], ["a", "c", "c", "d"]) == 2
    assert bench_programs.same_prompts(["a"], []) == 0


def test_prompt_log_records_the_generate_body_and_hands_it_on_unchanged():
    import asyncio

    seen = []

    async def app(scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        seen.append((scope["path"], body, await receive()))  # a later receive reaches the server's own

    log = bench_programs.PromptLog(app)
    raw = json.dumps({"text": ["p1", "p2"], "sampling_params": {}}).encode()

    def feeder(parts):
        msgs = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
        msgs.append({"type": "http.disconnect"})

        async def receive():
            return msgs.pop(0)
        return receive

    asyncio.run(log({"type": "http", "path": "/generate", "method": "POST"}, feeder([raw[:5], raw[5:]]), None))
    asyncio.run(log({"type": "http", "path": "/health", "method": "GET"}, feeder([b""]), None))
    assert log.prompts == ["p1", "p2"]  # /health is not logged
    assert seen[0] == ("/generate", raw, {"type": "http.disconnect"}) and seen[1][0] == "/health"


def test_template_parity_maps_sglangs_pick_to_our_template_with_the_same_roles():
    """What SGLang 0.2.10's frontend picks by model path (its role strings) -> our named template that renders
    the same prompts; a template we cannot render the same (a default system prompt we lack, LLAMA2 style)
    has none."""
    from sglang.runtime.chat_template import NAMED

    def theirs(name, style="PLAIN", system=None):
        return {"name": name, "style": style, "default_system_prompt": system,
                "roles": {r: list(NAMED[name].roles[r]) for r in ("system", "user", "assistant")}}

    assert bench_programs.equal_named_template(theirs("default")) == "default"
    assert bench_programs.equal_named_template(theirs("llama-3")) == "llama-3"
    assert bench_programs.equal_named_template(theirs("chatml", system="You are a helpful assistant.")) is None
    assert bench_programs.equal_named_template(theirs("llama-2", style="LLAMA2")) is None
    args = bench_programs.parse_args([])
    assert bench_programs.template_parity("model", ["sglang"], "default", args) is None
    assert bench_programs.template_parity(None, ["interp"], "default", args) is None  # no SGLang arm: the model's
    assert bench_programs.template_parity("chatml", ["sglang"], "default", args) == "chatml"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, default_model_path):
    out = tmp_path_factory.mktemp("bench") / "report.json"
    cmd = [sys.executable, str(BENCH / "bench_programs.py"), "--model-path", default_model_path, "--items", str(ITEMS),
           "--scale", "0.05", "--repeat", "1", "--arms", "interp", "default", "compiled", "inproc",
           "--classes", *TRACEABLE, "react_agent", "--json", str(out), "--keep-outputs"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


@slow
def test_tiny_run_reports_every_class_and_arm(tiny_report):
    report, table = tiny_report
    assert report["reference"] == "interp" and [b["items"] for b in report["runs"]] == [ITEMS]
    cells = report["runs"][0]["classes"]
    assert set(cells) == {*TRACEABLE, "react_agent"}
    for cls, by_arm in cells.items():
        assert set(by_arm) == {"interp", "default", "compiled", "inproc"}
        for arm in ("interp", "default"):  # the interpreter runs everything, generated control flow included
            c = by_arm[arm]
            assert c["errors"] == 0 and len(c["outputs"]) == ITEMS, (cls, arm, c)
            assert c["calls"] >= (ITEMS if arm == "interp" else 1) and c["prefill"] > 0, (cls, arm, c)
            assert c["same"] == ITEMS and c["same_text"] == ITEMS, (cls, arm)  # default == interp today and after
            assert c["same_prompts"] == c["ref_prompts"] > 0, (cls, arm)  # the interpreter's gen/scoring prompts
        for arm in by_arm:
            assert f"| {cls} | {arm} |" in table


@slow
def test_tiny_run_compiled_arms_match_the_interpreter_with_no_more_calls(tiny_report):
    """Greedy outputs of the compiled plan equal the interpreter's, and compiling never adds /generate calls."""
    cells = tiny_report[0]["runs"][0]["classes"]
    for cls in TRACEABLE:
        interp = cells[cls]["interp"]
        for arm in ("compiled", "inproc"):
            c = cells[cls][arm]
            assert c["errors"] == 0 and c["same"] == ITEMS, (cls, arm, c)
            assert c["calls"] <= interp["calls"], (cls, arm, c["calls"], interp["calls"])


@slow
def test_tiny_run_an_untraceable_program_is_reported_not_fatal(tiny_report):
    """react_agent branches on a generated action: the compiled arms (one whole plan) either run it or say why
    they cannot (the default arm runs it as compiled segments)."""
    for arm in ("compiled", "inproc"):
        c = tiny_report[0]["runs"][0]["classes"]["react_agent"][arm]
        assert ("error" in c and "wall" not in c) or (c["errors"] == 0 and c["same"] == ITEMS), c


@slow
def test_tiny_run_default_arm_batches_nested_forks_and_generated_control_flow(tiny_report):
    """tree_of_thought compiles to one plan, react_agent to segments: both batch items' calls together."""
    cells = tiny_report[0]["runs"][0]["classes"]
    for cls in ("tree_of_thought", "react_agent"):
        assert cells[cls]["default"]["calls"] < cells[cls]["interp"]["calls"], (cls, cells[cls])
