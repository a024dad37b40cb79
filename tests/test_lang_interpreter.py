"""Eager interpreter against a scripted native backend: request dicts, roles, fork/join, streaming,
run_batch, errors naming program/variable/line, and select scoring against hand-computed logprobs."""
from __future__ import annotations

import math

import pytest
from lang_fakes import ScriptedBackend

import sglang as sgl
from sglang.lang.backends.choices import after_common
from sglang.lang.backends.choices import decide


@pytest.fixture
def backend():
    be = ScriptedBackend()
    sgl.set_default_backend(be)
    yield be
    sgl.set_default_backend(ScriptedBackend())


def test_gen_sends_native_request_with_merged_sampling_params(backend):
    @sgl.function
    def prog(s, q):
        s += "Q: " + q + "\nA:" + sgl.gen("a", max_tokens=5, stop=["\n"], temperature=0.5)
        s += sgl.gen_int("n", max_tokens=3)

    state = prog.run(q="hi", top_p=0.9, temperature=0.1, return_logprob=True, top_logprobs_num=2)
    first, second = backend.requests
    assert first == {"text": "Q: hi\nA:", "sampling_params": {"max_new_tokens": 5, "top_p": 0.9, "temperature": 0.5,
                                                            "stop": ["\n"]},
                     "return_logprob": True, "top_logprobs_num": 2}
    assert second["sampling_params"] == {"max_new_tokens": 3, "top_p": 0.9, "temperature": 0.1,
                                         "regex": r"[-+]?[0-9]+"}
    assert state["a"] == "<8>"[:5]
    assert state.text() == "Q: hi\nA:<8><11"
    assert state.get_meta_info("a")["prompt_tokens"] == len("Q: hi\nA:")


def test_roles_build_text_and_messages_with_the_chat_template(backend):
    @sgl.function
    def chat(s, q):
        s += sgl.system("sys")
        s += sgl.user(q)
        s += sgl.assistant(sgl.gen("a", max_tokens=4))
        with s.user():
            s += "more"
        s += sgl.assistant_begin() + sgl.gen("b", max_tokens=4) + sgl.assistant_end()

    state = chat.run(q="hello")
    assert state.messages() == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"},
                                {"role": "assistant", "content": state["a"]}, {"role": "user", "content": "more"},
                                {"role": "assistant", "content": state["b"]}]
    assert state.text().startswith("SYSTEM:sys\nUSER:hello\nASSISTANT:")  # the scripted backend's default template


def test_fork_runs_branches_from_a_copy_and_joins_in_order(backend):
    @sgl.function
    def tips(s):
        s += "Tips:"
        forks = s.fork(3)
        for i, f in enumerate(forks):
            f += f" tip {i}:" + sgl.gen("t", max_tokens=6)
        forks.join()
        s += "|".join(forks[i]["t"] for i in range(3))
        return s["t"]

    state = tips.run(compiled=False)  # the interpreter's fork (the default path runs this as segments)
    branch_texts = [f"Tips: tip {i}:" for i in range(3)]
    expected = [f"<{len(t)}>" for t in branch_texts]
    assert state.ret_value == expected  # gather_variable join: one value per branch, in order
    assert state.text() == "Tips:" + "|".join(expected)
    assert {"text": "Tips:", "sampling_params": {"max_new_tokens": 0, "temperature": 0.0}} in backend.requests


def test_fork_of_an_empty_state_sends_no_empty_prefill(backend):
    @sgl.function
    def prog(s):
        forks = s.fork(2)
        forks += sgl.gen("g", max_tokens=3)
        forks.join()

    assert prog.run()["g"] == ["<0>", "<0>"]
    assert all(r["text"] for r in backend.requests if r["sampling_params"].get("max_new_tokens") == 0)


def test_join_concate_and_append(backend):
    @sgl.function
    def prog(s):
        s += "P"
        forks = s.fork(2)
        forks += "x" + sgl.gen("g", max_tokens=3)
        forks.join("concate_and_append")

    assert prog.run().text() == "P" + "x<2>" * 2


def test_streaming_text_iter_yields_pieces_in_order(backend):
    @sgl.function
    def prog(s):
        s += "ab" + sgl.gen("x", max_tokens=4) + "cd"

    state = prog.run(stream=True)
    pieces = list(state.text_iter())
    assert "".join(pieces) == "ab<2>cd" and len(pieces) >= 4
    assert "".join(prog.run(stream=True).text_iter("x")) == "<2>"

    async def collect():
        return [p async for p in prog.run(stream=True).text_async_iter()]

    import asyncio

    assert "".join(asyncio.run(collect())) == "ab<2>cd"
    assert any(r.get("stream") for r in backend.requests)


def test_run_batch_keeps_order_and_uses_threads(backend):
    @sgl.function
    def prog(s, word):
        s += word + sgl.gen("g", max_tokens=8)

    words = ["a" * i for i in range(1, 9)]
    states = prog.run_batch([{"word": w} for w in words], progress_bar=True, num_threads=4, temperature=0)
    assert [s["g"] for s in states] == [f"<{len(w)}>" for w in words]
    assert all(r["sampling_params"]["temperature"] == 0 for r in backend.requests)


def test_bind_and_calling_another_program(backend):
    @sgl.function
    def inner(s, x):
        s += "[" + x + "]"

    @sgl.function
    def outer(s, a, b):
        s += a
        inner(s, b)

    assert outer.bind(b="B").run(a="A").text() == "A[B]"


def test_errors_name_program_variable_and_line(backend):
    @sgl.function
    def reads_missing(s):
        s += "x" + sgl.gen("a", max_tokens=2)
        return s["nope"]

    with pytest.raises(sgl.ProgramError) as info:
        reads_missing.run()
    msg = str(info.value)
    assert "'reads_missing'" in msg and "'nope'" in msg and "test_lang_interpreter.py:" in msg and "(defined: a)" in msg

    with pytest.raises(TypeError, match=r"unexpected argument\(s\) 'qq'.*parameters: q"):
        sgl.function(lambda s, q: None).run(qq=1)

    def broken(prompt, sp):
        raise ConnectionError("server went away")

    @sgl.function
    def uses_backend(s):
        s += "hi" + sgl.gen("answer")

    with pytest.raises(sgl.ProgramError) as info:
        uses_backend.run(backend=ScriptedBackend(reply=broken))
    msg = str(info.value)
    assert "'uses_backend'" in msg and "gen 'answer'" in msg and "server went away" in msg
    assert f"test_lang_interpreter.py:{uses_backend.func.__code__.co_firstlineno + 2}" in msg  # decorator, def, body


def test_bad_api_arguments_are_clear():
    with pytest.raises(ValueError, match="choices must be a non-empty list"):
        sgl.select("x", choices=[])
    with pytest.raises(ValueError, match="choices_method"):
        sgl.select("x", choices=["a"], choices_method="vote")
    with pytest.raises(ValueError, match="dtype"):
        sgl.gen("x", dtype=list)
    with pytest.raises(ValueError, match="at most one of regex"):
        sgl.gen("x", regex="a", dtype=int)
    with pytest.raises(TypeError, match="only str and sgl expressions"):
        "a" + sgl.gen("x") + 3


def test_image_on_text_only_engine_backend_is_a_clear_error():
    from sglang.lang.backends.engine_backend import EngineBackend

    class FakeEngine:
        def get_server_args(self):
            return {"model_path": "text-model"}

        def generate(self, **kw):
            raise AssertionError("must not be called")

    @sgl.function
    def image_qa(s, path):
        s += sgl.user(sgl.image(path) + "What is this?")
        s += sgl.assistant(sgl.gen("answer"))

    with pytest.raises(sgl.ProgramError, match="'text-model' is text-only.*vision"):
        image_qa.run(path="cat.png", backend=EngineBackend(FakeEngine()))


# ---------------------------------------------------------------- select scoring
PROMPT = "Question:"
# logprob of each choice character given the text before it (hand-made table; prompt tokens -0.5)
TABLE = {"a": -1.0, "b": -0.2, "c": -3.0, "x": -2.0, "y": -0.1}


def _lp(before: str, tok: int) -> float:
    if before.startswith(PROMPT):
        return TABLE[chr(tok)]
    if PROMPT.startswith(before):
        return -0.5  # inside the prompt
    return -1.0  # unconditional scoring (only "n:" before the choice): every token costs -1.0


@pytest.mark.parametrize("method,expected,scores", [
    # ab: mean(-1.0, -0.2) = -0.6; c: -3.0; xy: mean(-2.0, -0.1) = -1.05
    ("token_length_normalized", "ab", [-0.6, -3.0, -1.05]),
    # first tokens: a -1.0, c -3.0, x -2.0 -> ab
    ("greedy_token_selection", "ab", [-1.0, -3.0, -2.0]),
    # cond mean minus uncond mean (uncond: every token -1.0 after the 2-token context "n:"):
    # ab: -0.6 + 1.0 = 0.4; c: -3.0 + 1.0 = -2.0; xy: -1.05 + 1.0 = -0.05
    ("unconditional_likelihood_normalized", "ab", [0.4, -2.0, -0.05]),
])
def test_select_methods_against_hand_computed_logprobs(method, expected, scores):
    be = ScriptedBackend(logprob=_lp)

    @sgl.function
    def pick(s):
        s += PROMPT + sgl.select("c", choices=["ab", "c", "xy"], choices_method=method)

    state = pick.run(backend=be)
    assert state["c"] == expected
    meta = state.get_meta_info("c")
    assert meta["scores"] == pytest.approx(scores)
    assert meta["normalized_prompt_logprobs"] == pytest.approx([-0.6, -3.0, -1.05])
    batch = [r for r in be.requests if isinstance(r.get("text"), list)]
    assert len(batch) == 1 and batch[0]["text"] == [PROMPT + "ab", PROMPT + "c", PROMPT + "xy"]  # no bare prompt
    assert batch[0]["logprob_start_len"] == len(PROMPT) - 2 and batch[0]["sampling_params"]["max_new_tokens"] == 0
    if method == "unconditional_likelihood_normalized":
        uncond = be.requests[-1]
        assert uncond["input_ids"] == [[ord(ch) for ch in "n:" + c] for c in ("ab", "c", "xy")]
    assert be.requests[0] == {"text": PROMPT, "sampling_params": {"max_new_tokens": 0, "temperature": 0.0}}


def test_greedy_breaks_ties_on_later_tokens_and_pads_short_choices_with_their_mean():
    assert decide("greedy_token_selection", [[-1.0, -5.0], [-1.0, -0.5], [-2.0]]).index == 1
    # "a" (mean -1.0) vs "ab" (-1.0 then -3.0): the prefix choice continues at -1.0 and wins
    assert decide("greedy_token_selection", [[-1.0], [-1.0, -3.0]]).index == 0
    assert decide("token_length_normalized", [[-1.0], [-1.0]]).index == 0  # ties: first choice
    d = decide("greedy_token_selection", [[], [-1.0]])
    assert d.index == 1 and d.scores[0] == -math.inf


def test_choice_tokens_start_after_the_ids_shared_with_the_prefix():
    base = [5, 6, 7]
    # the choice merged the prefix's last token (7 -> 9): scoring restarts at that token
    assert after_common([[None, 5, None], [-1.0, 6, None], [-2.0, 9, None], [-3.0, 4, None]], base) == \
        [[-2.0, 9, None], [-3.0, 4, None]]
    assert after_common([[None, 5, None], [-1.0, 6, None], [-2.0, 7, None], [-3.0, 4, None]], base) == \
        [[-3.0, 4, None]]


def test_many_concurrent_programs_with_forks_finish_and_leave_no_threads(backend):
    import threading
    import time

    @sgl.function
    def prog(s, i):
        s += f"p{i}:"
        forks = s.fork(2)
        for j, f in enumerate(forks):
            f += f"b{j}" + sgl.gen("g", max_tokens=4)
        s += forks[0]["g"] + forks[1]["g"] + sgl.gen("end", max_tokens=4)

    before = threading.active_count()
    states = prog.run_batch([{"i": i} for i in range(150)], num_threads=32)
    assert all(st.error() is None for st in states)
    assert states[7].text() == "p7:<5><5><9>"  # branch gens saw "p7:b0"/"p7:b1"; the end gen "p7:<5><5>"
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # idle workers exit on their own
    assert threading.active_count() <= before
