"""Every SGLang README example (examples/*.py) on the real default model, through the in-process
Engine backend and through HTTP (RuntimeEndpoint to our server on the same engine). Assertions are
structural: variables present, regexes matched, choices respected, forks joined in order, messages
well formed. Generation lengths are cut down (module MAX_TOKENS) to keep CI time low."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import sglang as sgl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import batching_streaming  # noqa: E402
import image_qa  # noqa: E402
import quick_start  # noqa: E402
import regex_json  # noqa: E402
import roles  # noqa: E402
import tip_suggestion  # noqa: E402
import tool_use  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(default_engine):
    return default_engine  # the session's shared Engine (tests/conftest.py); left idle after each test


@pytest.fixture(scope="module")
def http_url(engine):
    from sglang.runtime.server.launch import BackgroundServer

    server = BackgroundServer(engine)
    yield server.url
    server.stop()


@pytest.fixture(params=["engine", "http"])
def backend(request, engine, monkeypatch):
    for mod, n in ((quick_start, 6), (tool_use, 4), (tip_suggestion, 6), (regex_json, 160),
                   (batching_streaming, 8), (roles, 6)):
        monkeypatch.setattr(mod, "MAX_TOKENS", n)
    if request.param == "engine":
        sgl.set_default_backend(engine)  # a bare Engine is wrapped into the in-process backend
        assert isinstance(sgl.get_default_backend(), sgl.EngineBackend)
    else:
        sgl.set_default_backend(sgl.RuntimeEndpoint(request.getfixturevalue("http_url")))
    return sgl.get_default_backend()


def test_multi_turn_question(backend):
    state = quick_start.multi_turn_question.run(question_1="What is the capital of the United States?",
                                                question_2="List two local attractions.", temperature=0)
    msgs = state.messages()
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "What is the capital of the United States?"
    assert msgs[2]["content"] == state["answer_1"] and msgs[4]["content"] == state["answer_2"]
    assert state["answer_1"].strip() and state["answer_2"].strip()
    assert state.text().startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    meta = state.get_meta_info("answer_1")
    assert meta["completion_tokens"] <= 6 and meta["prompt_tokens"] > 10


def test_tool_use_select(backend):
    state = tool_use.tool_use.run(question="What is 3 * 19 + 7?", temperature=0)
    assert state["tool"] in ("calculator", "search engine")
    meta = state.get_meta_info("tool")
    assert len(meta["scores"]) == 2 and meta["choices"] == ["calculator", "search engine"]
    assert state["tool"] == meta["choices"][max(range(2), key=lambda i: meta["scores"][i])]
    follow = "expression" if state["tool"] == "calculator" else "word"
    assert follow in state.variables()
    assert f"I need to use a {state['tool']}. " in state.text()


def test_tip_suggestion_fork(backend):
    state = tip_suggestion.tip_suggestion.run(temperature=0)
    text = state.text()
    tip1 = text.index("Tip 1:")
    tip2 = text.index("Tip 2:")
    assert tip1 < tip2 < text.index("In summary")
    assert "summary" in state.variables()


def test_regex_ip(backend):
    answer = regex_json.regular_expression_gen.run()["answer"]
    assert re.fullmatch(regex_json.IP_REGEX, answer), answer


def test_json_regex(backend):
    state = regex_json.character_gen.run(name="Hermione Granger", temperature=0)
    out = state["json_output"]
    assert re.fullmatch(regex_json.character_regex, out), out
    assert json.loads(out)["house"] in ("Gryffindor", "Slytherin", "Ravenclaw", "Hufflepuff")


def test_run_batch_with_progress_bar(backend):
    states = batching_streaming.text_qa.run_batch(batching_streaming.QUESTIONS, progress_bar=True, temperature=0)
    assert len(states) == 3
    for q, s in zip(batching_streaming.QUESTIONS, states):
        assert s.text().startswith("Q: " + q["question"] + "\nA:")
        assert "\n" not in s["answer"]  # stop="\n" trims
    single = batching_streaming.text_qa.run(question=batching_streaming.QUESTIONS[1]["question"], temperature=0)
    assert states[1]["answer"] == single["answer"]  # batching does not change greedy results


def test_streaming(backend):
    state = batching_streaming.text_qa.run(question="What is the capital of France?", temperature=0, stream=True)
    pieces = list(state.text_iter())
    assert "".join(pieces) == state.text()
    assert len(pieces) >= 3  # the prompt pieces, then the answer token by token
    answer = list(batching_streaming.text_qa.run(question="What is the capital of France?", temperature=0,
                                                 stream=True).text_iter("answer"))
    assert "".join(answer) == state["answer"]


def test_roles_begin_end(backend):
    state = roles.chat_example.run(temperature=0)
    msgs = state.messages()
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[1]["content"] == "Question: What is the capital of France?"
    assert msgs[2]["content"] == "Answer: " + state["answer"]


def test_openai_backend_against_our_v1_server(http_url, engine, monkeypatch):
    monkeypatch.setattr(quick_start, "MAX_TOKENS", 6)
    served = sgl.RuntimeEndpoint(http_url).get_model_info()["served_model_name"]
    be = sgl.OpenAI(served, base_url=http_url + "/v1")
    state = quick_start.multi_turn_question.run(question_1="What is the capital of France?", question_2="Why?",
                                                temperature=0, backend=be)
    assert [m["role"] for m in state.messages()] == ["system", "user", "assistant", "user", "assistant"]
    assert state["answer_1"].strip()
    direct = sgl.EngineBackend(engine)
    local = quick_start.multi_turn_question.run(question_1="What is the capital of France?", question_2="Why?",
                                                temperature=0, backend=direct)
    assert state["answer_1"] == local["answer_1"]  # /v1/chat renders the same chatml prompt


def test_image_qa_on_text_only_model_is_a_clear_error(backend):
    with pytest.raises((sgl.ProgramError, ValueError), match="text-only"):
        image_qa.image_qa.run(image_file="example_image.png", question="What is this?")


def test_engine_and_http_backends_send_identical_native_requests(engine, http_url):
    from sglang.lang.backends.engine_backend import EngineBackend
    from sglang.lang.backends.runtime_endpoint import RuntimeEndpoint

    def recording(cls):
        class Recording(cls):
            def _call(self, payload):
                self.sent.append(payload)
                return super()._call(payload)

        return Recording

    local = recording(EngineBackend)(engine)
    remote = recording(RuntimeEndpoint)(http_url)
    local.sent, remote.sent = [], []

    @sgl.function
    def prog(s):
        s += sgl.user("Say yes or no.")
        s += sgl.assistant(sgl.gen("a", max_tokens=3) + " So: " + sgl.select("c", choices=["yes", "no"]))

    a = prog.run(temperature=0, backend=local)
    b = prog.run(temperature=0, backend=remote)
    assert local.sent == remote.sent and len(local.sent) == 3  # gen, prefix prefill, one batch of choices
    assert a.text() == b.text() and a["c"] == b["c"]


def test_select_scores_equal_full_sequence_logprobs(engine):
    """The windowed, prefix-cached select scores equal logprobs of the whole uncached sequence."""
    prompt, choices = "To answer 3 * 19 I need to use a ", ["calculator", "search engine"]

    @sgl.function
    def pick(s):
        s += prompt + sgl.select("tool", choices=choices)

    meta = pick.run(backend=sgl.EngineBackend(engine)).get_meta_info("tool")
    prompt_ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
    for i, choice in enumerate(choices):
        engine.flush_cache()
        out = engine.generate(text=prompt + choice, sampling_params={"max_new_tokens": 0},
                              return_logprob=True, logprob_start_len=0)
        entries = out["meta_info"]["input_token_logprobs"]
        k = 0
        while k < len(prompt_ids) and entries[k][1] == prompt_ids[k]:
            k += 1
        expected = [e[0] for e in entries[k:]]
        assert meta["normalized_prompt_logprobs"][i] == pytest.approx(sum(expected) / len(expected), abs=1e-3)
